# The Driftline image: the `driftline` command and nothing else. Every docker-compose service that
# runs Driftline uses it with a subcommand (`worker`, `playbooks`, `topics`, ...).
#
#   docker build -t driftline:0.1.0 .
#   docker run --rm driftline:0.1.0 --help
#
# Base pinned to an exact Python/Debian release; bump it deliberately (and rebuild for security
# fixes). Builds in a first stage, so the runtime image carries no compiler or build cache.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/driftline
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN /opt/driftline/bin/pip install .

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/driftline/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed, unprivileged user; its home is the working directory (faust's data dir, the playbook
# runner's audit trail on a volume at playbooks/, created here so the volume belongs to the user).
RUN groupadd --system --gid 10001 driftline \
    && useradd --system --uid 10001 --gid driftline --home-dir /var/lib/driftline --create-home \
       --shell /usr/sbin/nologin driftline \
    && install -d -o driftline -g driftline /var/lib/driftline/playbooks
COPY --from=build /opt/driftline /opt/driftline
WORKDIR /var/lib/driftline
USER driftline:driftline
# Prometheus metrics of `driftline worker` (metrics.port).
EXPOSE 9108
ENTRYPOINT ["driftline"]
CMD ["--help"]
