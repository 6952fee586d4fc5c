"""The production stack as files: `docker-compose.yml`, the `Dockerfile` and what they name.

No Docker engine runs here, so these tests check what can be checked without one: the compose
file parses, every image is pinned or built from the Dockerfile, every host path it mounts and
every configuration file a command names exists in the repository, the commands the Driftline
containers run exist in the real `driftline` CLI, the configuration they mount loads, and
Prometheus scrapes the services compose defines. `docker compose config` and a round trip
through the stack's Kafka image run only where the tools answer; they skip, saying why, where
not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
import uuid
from pathlib import Path, PurePosixPath

import pytest
import yaml
from click.testing import CliRunner

from monitor.cli import main as driftline_cli
from monitor.contracts.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
KAFKA_IMAGE = "apache/kafka:3.9.0"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def _driftline_services(services: dict[str, dict]) -> dict[str, dict]:
    """Services that run the image built from the Dockerfile."""
    return {name: service for name, service in services.items() if "build" in service}


def _bind_mounts(service: dict) -> list[tuple[Path, PurePosixPath]]:
    """(host path in the repository, container path) of each bind mount (short syntax `./x:/y[:ro]`)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts.append(((ROOT / source).resolve(), PurePosixPath(target)))
    return mounts


def _host_path(service: dict, container_path: str) -> Path | None:
    """The repository file a container path comes from, through the service's bind mounts."""
    path = PurePosixPath(container_path)
    for host, target in _bind_mounts(service):
        if path == target:
            return host
        if target in path.parents:
            return host / path.relative_to(target)
    return None


def _config_paths(service: dict) -> list[str]:
    """Configuration files a service's command names: `--config X`, `--config.file=X`."""
    command = service.get("command", [])
    paths = []
    for i, arg in enumerate(command):
        if arg in ("--config", "--config.file") and i + 1 < len(command):
            paths.append(command[i + 1])
        elif arg.startswith(("--config=", "--config.file=")):
            paths.append(arg.split("=", 1)[1])
    return paths


def test_compose_file_has_the_stack_of_the_design(services):
    assert {"kafka", "topics", "worker", "playbooks", "prometheus", "alertmanager", "grafana"} <= services.keys()
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["kafka"]["image"] == KAFKA_IMAGE
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "healthcheck" in services["kafka"]


def test_every_image_is_pinned_or_built_from_the_dockerfile(services):
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
            continue
        image = service["image"]
        repository, _, tag = image.partition(":")
        assert "@sha256:" in image or re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: image {image!r} is not pinned"


def test_every_mounted_host_path_exists(services):
    mounts = [(name, host) for name, service in services.items() for host, _ in _bind_mounts(service)]
    assert len(mounts) >= 6
    for name, host in mounts:
        assert host.exists(), f"{name} mounts {host}, which is not in the repository"
        assert ROOT in host.parents, f"{name} mounts {host}, outside the repository"


def test_every_config_path_a_command_names_is_mounted_from_the_repository(services):
    named = 0
    for name, service in services.items():
        for path in _config_paths(service):
            host = _host_path(service, path)
            assert host is not None, f"{name}: {path} is not under any bind mount"
            assert host.is_file(), f"{name}: {path} comes from {host}, which does not exist"
            named += 1
    assert named == 5  # topics, worker, playbooks, prometheus, alertmanager


def test_dependencies_name_existing_services(services):
    for name, service in services.items():
        depends_on = service.get("depends_on", [])
        for dependency in depends_on if isinstance(depends_on, list) else depends_on.keys():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_dockerfile_pins_its_base_runs_unprivileged_and_enters_the_cli():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", b) for b in bases)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    [entrypoint] = [line for line in lines if line.startswith("ENTRYPOINT ")]
    assert yaml.safe_load(entrypoint.removeprefix("ENTRYPOINT ")) == ["driftline"]
    # The image installs this package, so `driftline` is the CLI of monitor/cli.py.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["driftline"] == "monitor.cli:main"
    copied = [line.split()[1] for line in lines if line.startswith("COPY ") and "--from" not in line]
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "tests"} <= ignored


def test_driftline_cli_has_every_command_the_containers_run(services):
    result = CliRunner().invoke(driftline_cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = set(re.findall(r"^  (\w[\w-]*)\s", result.output.split("Commands:", 1)[1], flags=re.M))
    invoked = {service["command"][0] for service in _driftline_services(services).values()}
    assert invoked == {"topics", "worker", "playbooks"}
    missing = invoked - listed
    assert not missing, f"docker-compose.yml runs `driftline {' / '.join(sorted(missing))}`, not in {sorted(listed)}"
    for command in invoked:  # and each accepts the options compose passes
        result = CliRunner().invoke(driftline_cli, [command, "--help"])
        assert result.exit_code == 0 and "--config" in result.output, command


def test_the_mounted_driftline_config_loads_and_points_at_the_compose_kafka(services):
    hosts = {_host_path(s, p) for s in _driftline_services(services).values() for p in _config_paths(s)}
    [host] = hosts  # one configuration for every Driftline container
    config = load_config(host)
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.kafka.profile == "kafka"  # Apache Kafka: none of the embedded broker's workarounds
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://{config.kafka.bootstrap_servers}" in advertised.split(",")
    worker_ports = services["worker"]["ports"]
    assert [port.split(":")[-1] for port in worker_ports] == [str(config.metrics.port)]


def test_the_playbook_runners_audit_trail_survives_a_restart(compose, services):
    """A restarted runner reads its audit trail back so it does not act twice: the file must be
    on a volume, in a directory the image creates for its non-root user."""
    config = load_config(ROOT / "deploy/driftline.yaml").playbooks
    audit_dir = PurePosixPath(config.audit_file).parent
    volumes = {PurePosixPath(v.split(":")[1]): v.split(":")[0] for v in services["playbooks"]["volumes"]}
    assert volumes.get(audit_dir) in compose["volumes"], f"{audit_dir}: not on a named volume of the playbooks service"
    assert PurePosixPath(config.kill_switch_file).parent == audit_dir
    assert f"install -d -o driftline -g driftline {audit_dir}" in DOCKERFILE.read_text()


def test_prometheus_scrapes_and_alerts_the_compose_services(services):
    prometheus = services["prometheus"]
    config_path = _host_path(prometheus, _config_paths(prometheus)[0])
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        assert (config_path.parent / rule_file).is_file(), rule_file
    [driftline_job] = [job for job in config["scrape_configs"] if job["job_name"] == "driftline"]
    metrics_port = load_config(ROOT / "deploy/driftline.yaml").metrics.port
    for sd in driftline_job["dns_sd_configs"]:
        assert sd["port"] == metrics_port
        for name in sd["names"]:
            assert name in services, f"Prometheus resolves {name!r}, not a compose service"
            assert services[name]["command"][0] == "worker"
    jobs = config["scrape_configs"] + config["alerting"]["alertmanagers"]
    targets = [target for job in jobs for static in job.get("static_configs", []) for target in static["targets"]]
    for target in targets:
        host = target.split(":")[0]
        assert host == "localhost" or host in services, f"Prometheus target {target}: no such service"
    assert "alertmanager:9093" in targets
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_accepts_the_file():
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` (plugin) nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.broker
def test_the_stacks_kafka_image_round_trips_a_prediction():
    """The broker image of the stack, started by testcontainers in KRaft mode: Driftline's
    topics, a published prediction read back."""
    from conftest_broker import _apache_kafka_container, docker_answers

    if not docker_answers():
        pytest.skip("no Docker engine answers (set DOCKER_HOST or start dockerd) to run apache/kafka:3.9.0")
    from kafka import KafkaConsumer

    from monitor.client.publisher import DriftlinePublisher
    from monitor.contracts.config import KafkaConfig
    from monitor.contracts.validation import decode_prediction
    from monitor.kafka.settings import consumer_settings
    from monitor.kafka.topics import ensure_topics

    container = _apache_kafka_container(KAFKA_IMAGE)
    container.start(timeout=120)
    try:
        config = KafkaConfig(bootstrap_servers=container.get_bootstrap_server(), profile="kafka", partitions=2)
        assert ensure_topics(config)[config.topics.predictions] == 2
        prediction_id = uuid.uuid4().hex
        with DriftlinePublisher(config) as publisher:
            publisher.publish_prediction(
                model_id="fraud", prediction_id=prediction_id, features={"amount": 12.5}, prediction=0.9
            )
            publisher.flush(timeout=10)
        consumer = KafkaConsumer(
            config.topics.predictions,
            **consumer_settings(config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=10_000),
        )
        try:
            [record] = list(consumer)
        finally:
            consumer.close()
        event = decode_prediction(record.value)
        assert (record.key, event.prediction_id, event.features) == (b"fraud", prediction_id, {"amount": 12.5})
    finally:
        container.stop()
