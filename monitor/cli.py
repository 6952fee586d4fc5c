"""The `driftline` command. Each subcommand parses its options and calls the library; no
monitoring logic lives here.

An expected failure (a missing or unreadable input, a folder that cannot be made, an unreadable
configuration, no broker answering) ends the command with one line, `Error: <what>: <why>`, and
a non-zero exit status; a traceback means a bug."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import click

from monitor.contracts.config import ConfigError, FeatureType, load_config

DEFAULT_SCHEMAS_DIR = Path("schemas")


def _one_line(text: str) -> str:
    """A message that may span lines (YAML parser errors do), as one line."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _config(path: Path | None):
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(_one_line(str(exc))) from None


def _privacy(config, *, references: bool = True):
    """The configuration's privacy policy (`pii` markings and their key), checked before a command
    reads or writes anything: a missing key or a reference holding raw values stops it in one
    line. `references=False` for `driftline reference`, which rebuilds one."""
    from monitor.contracts.privacy import PrivacyPolicy

    try:
        return PrivacyPolicy.from_config(config, references=references)
    except ConfigError as exc:
        raise click.ClickException(_one_line(str(exc))) from None


class _InputFile(click.Path):
    """An existing, readable file. A bad one fails in one line (`Error: Invalid value for '--input':
    File 'x.csv' does not exist.`), not with click's usage screen: it is the input that is
    wrong, not the command line."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, readable=True, path_type=Path)

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            raise click.ClickException(exc.format_message()) from None


def _output(path: Path) -> Path:
    """`path`, once its folder exists (made with its parents when missing)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(
            f"cannot create the folder {str(path.parent)!r} for {path}: {exc.strerror}"
        ) from None
    return path


BATCH_GC_THRESHOLD = 50_000
"""First-generation threshold of Python's cyclic garbage collector in `replay` and `worker`."""


def _collect_garbage_for_batches() -> None:
    """Decoding and columns allocate about 30 short-lived objects per event, almost none of them
    in reference cycles; with Python's default threshold (700) a first-generation collection runs
    every ~25 events. At 50,000 they are rare: replay spends 11-12% less CPU per event
    (side by side in one run, bench figures in the commit)."""
    gc.set_threshold(BATCH_GC_THRESHOLD, *gc.get_threshold()[1:])


def _ensure_topics(kafka, wait_seconds: float) -> dict[str, int]:
    """Create the topics, retrying an unreachable broker until `wait_seconds` have passed (each
    attempt waits at most 10 s); then fail in one line naming the servers."""
    import time

    from kafka.errors import KafkaError

    from monitor.kafka.topics import TopicError, ensure_topics

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return ensure_topics(kafka)
        except TopicError as exc:
            raise click.ClickException(str(exc)) from None
        except KafkaError as exc:  # broker not reachable yet: retry until the deadline
            if time.monotonic() >= deadline:
                raise click.ClickException(
                    f"kafka {kafka.bootstrap_servers}: no broker answered ({_one_line(str(exc))})"
                ) from None
            time.sleep(2.0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="driftline")
def main() -> None:
    """Driftline: streaming drift and outcome monitoring for models in production."""


@main.command()
@click.option("--out-dir", type=click.Path(path_type=Path), default=DEFAULT_SCHEMAS_DIR, show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if the files differ from the models instead of writing.")
def schemas(out_dir: Path, check: bool) -> None:
    """Write the JSON Schemas of every event and of the configuration."""
    from monitor.contracts.schemas import stale_schemas, write_schemas

    if check:
        stale = stale_schemas(out_dir)
        if stale:
            click.echo(f"stale schemas in {out_dir}: {', '.join(stale)}; run `driftline schemas`", err=True)
            sys.exit(1)
        click.echo(f"schemas in {out_dir} are up to date")
        return
    for path in write_schemas(out_dir):
        click.echo(f"wrote {path}")


@main.command()
@click.option(
    "--input",
    "input_path",
    required=True,
    type=_InputFile(),
    help="Training data: .csv, .parquet or .jsonl.",
)
@click.option("--model-id", required=True)
@click.option("--features", help="Comma-separated feature names (default: every column).")
@click.option("--prediction-column", default="prediction", show_default=True)
@click.option(
    "--config",
    "config_path",
    type=_InputFile(),
    help="Monitor config: declared feature types and caps.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Profile JSON; its folder is made."
)
def reference(
    input_path: Path,
    model_id: str,
    features: str | None,
    prediction_column: str,
    config_path: Path | None,
    out: Path,
) -> None:
    """Build a reference profile from training data."""
    from rich.progress import Progress

    from monitor.core.reference import ReferenceBuilder
    from monitor.core.training_data import read_rows

    config = _config(config_path)
    privacy = _privacy(config, references=False)
    model = config.model(model_id)
    builder = ReferenceBuilder(
        model_id,
        {name: spec.type for name, spec in model.features.items()},
        max_categories=config.caps.max_categories,
        max_features=config.caps.max_features_per_model,
        sample_size=config.reference.sample_size,
        source=str(input_path),
    )
    names = [n.strip() for n in features.split(",")] if features else None
    try:
        with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task("reading rows", total=None)
            for i, (row, prediction) in enumerate(read_rows(input_path, names, prediction_column)):
                builder.add(privacy.features(model_id, row) if privacy.active else row, prediction)
                if i % 10_000 == 0:
                    progress.update(task, completed=i)
        profile = builder.build()
    except (ValueError, OSError) as exc:  # unreadable content: name the file if the reader did not
        message = _one_line(str(exc))
        raise click.ClickException(message if str(input_path) in message else f"{input_path}: {message}") from None
    try:
        profile.save(_output(out))
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None
    types = profile.feature_types()
    numeric = sum(t == FeatureType.numeric for t in types.values())
    click.echo(
        f"reference {profile.version} for {model_id}: {profile.n_rows} rows, {len(types)} features "
        f"({numeric} numeric, {len(types) - numeric} categorical) -> {out}"
    )
    from monitor.monitoring.drift import reference_rows_needed

    needed, detectors = reference_rows_needed(config, model, profile.feature_types(include_prediction=True))
    used = min(profile.n_rows, config.reference.sample_size)
    if used < needed:
        budget = config.alerting
        raise_sample = needed > config.reference.sample_size
        click.echo(
            f"warning: {used} reference rows are too few for the false-alarm budget"
            f" ({budget.false_alarms_per_model_per_day:g} a day over {budget.events_per_model_per_day:,.0f} events,"
            f" {detectors} detectors): about {needed:,} rows would do"
            + (f", and reference.sample_size as many (now {config.reference.sample_size})" if raise_sample else ""),
            err=True,
        )
    if builder.dropped_features:
        click.echo(f"not profiled (over caps.max_features_per_model): {sorted(builder.dropped_features)}", err=True)


@main.command()
@click.option("--config", "config_path", type=_InputFile())
@click.option(
    "--input",
    "inputs",
    required=True,
    multiple=True,
    type=_InputFile(),
    help="JSONL events in timestamp order; repeat to merge several files.",
)
@click.option("--alerts-out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dead-letters-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Invalid lines with their reason [default: ALERTS_OUT with .dead-letters.jsonl].",
)
@click.option(
    "--report",
    "report_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Per model and window: events, labelled, realised and estimated (CBPE) metrics, drift scores; "
    "JSONL, or CSV for a .csv name.",
)
def replay(
    config_path: Path | None,
    inputs: tuple[Path, ...],
    alerts_out: Path,
    dead_letters_out: Path | None,
    report_out: Path | None,
) -> None:
    """Run the monitor over JSONL files; alerts to JSONL."""
    from monitor.replay import replay as run_replay

    config = _config(config_path)
    _privacy(config)
    dead_letters_out = _output(dead_letters_out or alerts_out.with_suffix(".dead-letters.jsonl"))
    _collect_garbage_for_batches()
    try:
        summary = run_replay(
            config,
            list(inputs),
            _output(alerts_out),
            dead_letters_out,
            progress=sys.stderr.isatty(),
            report_out=_output(report_out) if report_out else None,
        )
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or 'replay'}: {exc.strerror or exc}") from None
    invalid = sum(summary.invalid.values())
    click.echo(
        f"replayed {summary.lines} lines in {summary.seconds:.2f} s ({summary.lines_per_second():,.0f}/s): "
        f"{summary.predictions} predictions, {summary.outcomes} outcomes, {invalid} invalid"
        + (f" ({', '.join(f'{k}: {v}' for k, v in summary.invalid.items())}) -> {dead_letters_out}" if invalid else "")
        + f"; {sum(summary.alerts.values())} alerts"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(summary.alerts.items()))})" if summary.alerts else "")
        + f" -> {alerts_out}"
        + (f"; {summary.report_rows} windows -> {report_out}" if report_out else ""),
        err=True,
    )


@main.command()
@click.option(
    "--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"), show_default=True
)
@click.option("--predictions", default=30_000, show_default=True, help="Simulated predictions (3 models).")
@click.option("--max-seconds", default=300.0, show_default=True, help="Stop after this long whatever happens.")
def demo(out_dir: Path, predictions: int, max_seconds: float) -> None:
    """Embedded broker, a worker and the playbook runner (dry run) over a simulated service with planted drift,
    degradation and a regressing canary; alerts and playbook decisions as they come."""
    from rich.console import Console

    from monitor.demo import run_demo

    sys.exit(run_demo(out_dir, predictions, Console(), max_seconds=max_seconds))


@main.command()
@click.option(
    "--config",
    "config_path",
    type=_InputFile(),
    help="YAML configuration; DRIFTLINE_* environment variables win.",
)
@click.option("--loglevel", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.option("--wait", "wait_seconds", default=60.0, show_default=True, help="Seconds to retry an unreachable broker.")
def worker(config_path: Path | None, loglevel: str, wait_seconds: float) -> None:
    """A streaming worker (faust): predictions -> drift monitors -> alerts; run N of them to scale out."""
    from monitor.stream.worker import run_worker

    config = _config(config_path)
    _privacy(config)
    _ensure_topics(config.kafka, wait_seconds)  # the worker makes them too: this is where a missing broker shows
    _collect_garbage_for_batches()
    run_worker(config, loglevel=loglevel)


@main.command()
@click.option(
    "--port", type=click.IntRange(0, 65535), default=19092, show_default=True, help="Loopback port; 0 picks a free one."
)
def broker(port: int) -> None:
    """Start the embedded Kafka-compatible broker on loopback (development and tests); Ctrl-C stops it."""
    from monitor.kafka.broker import run_broker

    sys.exit(run_broker(port or None))


@main.command()
@click.option(
    "--config",
    "config_path",
    type=_InputFile(),
    help="YAML configuration; DRIFTLINE_* environment variables win.",
)
@click.option("--wait", "wait_seconds", default=60.0, show_default=True, help="Seconds to retry an unreachable broker.")
def topics(config_path: Path | None, wait_seconds: float) -> None:
    """Create Driftline's topics (idempotent) and print their partition counts; for deployments."""
    partitions = _ensure_topics(_config(config_path).kafka, wait_seconds)
    for name, count in partitions.items():
        click.echo(f"{name}: {count} partitions")


@main.command()
@click.option(
    "--config",
    "config_path",
    type=_InputFile(),
    help="YAML configuration with a `playbooks` section; DRIFTLINE_* environment variables win.",
)
@click.option("--dry-run", is_flag=True, help="Kill switch: every rule runs dry, whatever the config says.")
@click.option("--loglevel", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
def playbooks(config_path: Path | None, dry_run: bool, loglevel: str) -> None:
    """Consume alerts, run the configured actions behind guardrails, write an audit trail."""
    import logging

    from monitor.playbooks.runner import decision_line, run_playbooks

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _config(config_path)
    if dry_run:
        config = config.model_copy(update={"playbooks": config.playbooks.model_copy(update={"dry_run": True})})
    live = [rule.name for rule in config.playbooks.rules if rule.enabled and not rule.dry_run]
    click.echo(
        f"playbooks: {len(config.playbooks.rules)} rules ({', '.join(live) or 'none'} live"
        f"{', all forced dry-run' if config.playbooks.dry_run else ''}); audit -> {config.playbooks.audit_file}",
        err=True,
    )
    summary = run_playbooks(config, on_decision=lambda decision: click.echo(decision_line(decision)))
    click.echo(
        f"playbooks: {summary.alerts} alerts, {summary.approvals} approvals in {summary.seconds:.0f} s: "
        + (", ".join(f"{k} {v}" for k, v in sorted(summary.outcomes.items())) or "no decisions"),
        err=True,
    )


@main.command()
@click.argument("alert_id")
@click.option(
    "--alerts",
    "alerts_path",
    type=_InputFile(),
    help="Alerts JSONL (`driftline replay --alerts-out`).",
)
@click.option(
    "--config",
    "config_path",
    type=_InputFile(),
    help="YAML configuration: read the alerts topic of its `kafka` section.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="[default: alert-ALERT_ID.html]")
def explain(alert_id: str, alerts_path: Path | None, config_path: Path | None, out: Path | None) -> None:
    """An HTML page with one alert's evidence (ALERT_ID: an alert id, or a prefix of it or its fingerprint)."""
    import re

    from kafka.errors import KafkaError

    from monitor.observability.explain import ExplainError
    from monitor.observability.explain import explain as write_page

    if (alerts_path is None) == (config_path is None):
        raise click.UsageError("give either --alerts FILE.jsonl or --config FILE (to read the alerts topic)")
    out = out or Path(f"alert-{re.sub(r'[^A-Za-z0-9_.-]+', '_', alert_id)[:80]}.html")
    kafka = _config(config_path).kafka if config_path is not None else None
    try:
        chosen, records, skipped = write_page(alert_id, _output(out), alerts_path=alerts_path, kafka=kafka)
    except ExplainError as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaError as exc:
        raise click.ClickException(
            f"kafka {kafka.bootstrap_servers}: cannot read the alerts topic ({_one_line(str(exc))})"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    alert = chosen.alert
    click.echo(
        f"{alert.kind.value} {alert.status.value} {alert.alert_id} ({records} records"
        + (f", {skipped} records skipped: not alerts" if skipped else "")
        + f") -> {out}"
    )


if __name__ == "__main__":
    main()
