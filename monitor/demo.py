"""`driftline demo`: Driftline end to end on the embedded broker, with planted problems.

1. starts the embedded Kafka-compatible broker (memory only, a free loopback port) and creates
   the topics;
2. starts a worker (`driftline worker`, its own process, as in production) and the playbook
   runner (in this process, every rule a dry run: it says what it would do and does nothing);
3. a simulated service (`monitor.simulation`) publishes predictions of three models through the
   producer API, and their outcomes six hours of event time later: fraud-scorer's `amount`
   drifts and its `device` goes null, churn-model's accuracy falls, pricing-model's canary v2
   regresses;
4. prints each alert as it reaches the `alerts` topic, and each playbook decision;
5. ends once the worker has handled every event and the alerts topic has been quiet for a few
   seconds (or after `max_seconds`), stops everything and exits 0. Alerts, the playbooks' audit
   trail and the worker's log are left in `out_dir`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert
from monitor.contracts.config import MonitorConfig
from monitor.contracts.retrain import PlaybookDecision
from monitor.kafka.broker import EmbeddedBroker, free_port
from monitor.kafka.settings import consumer_settings
from monitor.kafka.topics import ensure_topics
from monitor.playbooks.runner import PlaybookRunner
from monitor.simulation import simulate

QUIET_SECONDS = 5.0
"""The demo ends once the worker has handled every prediction and joined every outcome, and no
alert came for this long (the worker's timer flushes the evaluators every 2 s)."""

PLAYBOOK_RULES = [
    {"name": "retrain-on-drift", "kinds": ["feature_drift", "multivariate_drift"], "action": {"type": "retrain"}},
    {"name": "review-output", "kinds": ["prediction_drift", "data_quality"], "action": {"type": "human_review"}},
    {
        "name": "rollback-on-performance",
        "kinds": ["performance_degradation"],
        "action": {
            "type": "rollback",
            "approval": "required",
            "http": {"url": "http://models.internal/v1/models/{model_id}/rollback?to={target_version}"},
        },
    },
    {
        "name": "abort-canary",
        "kinds": ["canary_regression"],
        "action": {"type": "rollback", "approval": "none",
                   "command": ["kubectl", "argo", "rollouts", "abort", "{model_id}"]},
    },
]  # fmt: skip
"""The demo's playbooks, all dry runs (the default): examples/playbooks.yaml explains each field."""


def demo_config(bootstrap_servers: str, out_dir: Path, metrics_port: int) -> MonitorConfig:
    return MonitorConfig.model_validate(
        {
            "reference": {"warmup_events": 3000},
            "kafka": {
                "bootstrap_servers": bootstrap_servers,
                "profile": "embedded",
                "consumer_group": "driftline-demo",
            },
            "metrics": {"host": "127.0.0.1", "port": metrics_port},
            "playbooks": {
                "rules": PLAYBOOK_RULES,
                "start_from": "earliest",
                "audit_file": str(out_dir / "playbooks-audit.jsonl"),
                "rate_limit": {"actions": 20, "per_seconds": 60},
            },
        }
    )


def alert_row(alert: Alert, repeat: bool) -> list[str]:
    """One table row: when (event time), what, about what, and the evidence in brief."""
    evidence = alert.evidence
    if alert.status == "resolved":
        when, status = alert.ends_at, "[green]resolved[/]"
    elif repeat:
        when, status = evidence.window_end or alert.starts_at, "[red]repeat[/]"
    else:
        when, status = alert.starts_at, "[bold red]firing[/]"
    return [
        when.strftime("%Y-%m-%d %H:%M") if when else "",
        status,
        alert.kind,
        alert.model_id,
        alert.feature or alert.slice or "",
        f"{evidence.detector} {evidence.score:.3g} >= {evidence.threshold:.3g}",
        alert.summary,
    ]


def decision_row(decision: PlaybookDecision) -> list[str]:
    return [
        decision.outcome.value,
        decision.rule or "-",
        decision.model_id or "-",
        decision.kind.value if decision.kind else "-",
        decision.reason,
    ]


def _handled(metrics_port: int) -> dict[str, float]:
    """Events the worker has handled by type (prediction, outcome), from its `/metrics`."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    handled: dict[str, float] = {}
    for kind, value in re.findall(r'^driftline_events_total\{[^}]*type="(\w+)"[^}]*\} (\S+)$', text, re.MULTILINE):
        handled[kind] = handled.get(kind, 0.0) + float(value)
    return handled


RUN_FILES = ("alerts.jsonl", "playbooks-audit.jsonl", "worker.log", "broker.log", "driftline.yaml")
"""What a run writes in its output folder: removed first, so each run starts clean (the
playbooks' audit trail of an earlier run would put its actions in cooldown)."""

PROGRESS_SECONDS = 5.0


def run_demo(out_dir: Path, n_predictions: int, console: Console, max_seconds: float = 300.0) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    events = list(simulate(n_predictions=n_predictions))
    with EmbeddedBroker(log_path=out_dir / "broker.log") as broker:
        config = demo_config(broker.bootstrap_servers, out_dir, free_port())
        ensure_topics(config.kafka)
        config_path = out_dir / "driftline.yaml"
        config_path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
        console.print(
            f"broker on {broker.bootstrap_servers}; worker metrics on http://127.0.0.1:{config.metrics.port}/metrics; "
            f"publishing {len(events)} events of 3 models (outcomes 6 h of event time after their predictions)"
        )
        worker_log = (out_dir / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "worker", "--config", str(config_path), "--loglevel", "info"],
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        decisions: list[PlaybookDecision] = []
        runner = PlaybookRunner(config, on_decision=decisions.append)
        runner_thread, stop_runner = runner.start()
        publisher = threading.Thread(target=_publish, args=(config, events), daemon=True)
        try:
            publisher.start()
            expected = {"prediction": n_predictions, "outcome": len(events) - n_predictions}
            alerts = _show_alerts(config, console, worker, decisions, expected, max_seconds, out_dir)
        finally:
            stop_runner.set()
            runner_thread.join(timeout=10)
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
            worker_log.close()
    acted = sum(d.outcome.value != "skipped" for d in decisions)
    console.print(
        f"{len(events)} events, {len(alerts)} alerts -> {out_dir / 'alerts.jsonl'}; "
        f"{len(decisions)} playbook decisions ({acted} dry-run actions) -> {config.playbooks.audit_file}"
    )
    console.print(next_steps(alerts, decisions, out_dir), soft_wrap=True)
    return 0


def next_steps(alerts: list[Alert], decisions: list[PlaybookDecision], out_dir: Path) -> str:
    """What to do with the run: open an alert's page, read its runbook, approve a rollback."""
    drift = next((a for a in alerts if a.kind.value == "feature_drift" and a.status == "firing"), None)
    chosen = drift or (alerts[0] if alerts else None)
    lines = ["next:"]
    if chosen is not None:
        lines += [
            f"  the page of the {chosen.kind.value} alert on {chosen.model_id}, its evidence drawn:",
            f"    .venv/bin/driftline explain {chosen.alert_id[:8]} --alerts {out_dir / 'alerts.jsonl'} "
            f"--out {out_dir / 'alert.html'}",
            f"  its runbook: runbooks/{chosen.kind.value}.md",
        ]
    pending = next((d for d in decisions if d.outcome.value == "awaiting_approval" and d.alert is not None), None)
    if pending is not None:
        approval = {"fingerprint": pending.alert.fingerprint, "approved_by": "you"}  # type: ignore[union-attr]
        lines += [
            f"  the rollback of {pending.alert.model_id} waits for a person: on a running system, publish"  # type: ignore[union-attr]
            f" {json.dumps(approval)} to the approvals topic (driftline-approvals); this demo's broker has stopped",
        ]
    return "\n".join(lines)


def _progress(handled: dict[str, float], expected: dict[str, int], seconds: float) -> str:
    """`processed 12,000 of 30,000 predictions, 8,000 of 30,000 outcomes (1,900 events/s)`."""
    done = sum(handled.values())
    parts = [f"{handled.get(kind, 0):,.0f} of {n:,} {kind}s" for kind, n in expected.items()]
    return f"processed {', '.join(parts)} ({done / max(seconds, 1e-9):,.0f} events/s)"


PUBLISH_CHUNK = 3000
"""Events the simulated service publishes before it waits for the worker (`_publish`)."""
CATCH_UP_SECONDS = 10.0
"""The longest it waits for the worker to handle a chunk's outcomes."""


def _publish(config: MonitorConfig, events: list[dict[str, Any]]) -> None:
    """The simulated service: every event through the producer API, in event-time order, one
    event per message, `PUBLISH_CHUNK` at a time; after each chunk it waits until the worker
    has handled the outcomes sent so far (at most `CATCH_UP_SECONDS`).

    The demo replays a day in seconds. Unpaced, the worker takes a model's predictions in a few
    large fetches while each outcome takes three hops (outcomes, join, joined) of up to half a
    second each, so pricing-model's evaluation windows could all close before its outcomes were
    joined, and its canary check, which counts the outcomes joined during the last windows,
    then never ran with them (1 run in 3 with one event per message, 2 in 4 with envelopes).
    Live, outcomes are joined long before the windows hours later close; the pacing keeps that
    order."""
    sent_outcomes = 0
    with DriftlinePublisher(config.kafka, batch_events=1) as publisher:
        for start in range(0, len(events), PUBLISH_CHUNK):
            for event in events[start : start + PUBLISH_CHUNK]:
                fields = {k: v for k, v in event.items() if k != "schema_version"}
                if "label" in event:
                    publisher.publish_outcome(**fields)
                    sent_outcomes += 1
                else:
                    publisher.publish_prediction(**fields)
            publisher.flush(timeout=60)
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while _handled(config.metrics.port).get("outcome", 0.0) < sent_outcomes and time.monotonic() < deadline:
                time.sleep(0.2)


def _show_alerts(
    config: MonitorConfig,
    console: Console,
    worker: subprocess.Popen,
    decisions: list[PlaybookDecision],
    expected: dict[str, int],
    max_seconds: float,
    out_dir: Path,
) -> list[Alert]:
    """Read the alerts topic and print alerts and decisions until the run is over."""
    alerts_table = Table("event time", "status", "kind", "model", "feature", "evidence", "summary", title="alerts")
    decisions_table = Table("decision", "rule", "model", "kind", "why", title="playbook decisions (dry run)")
    consumer = KafkaConsumer(
        config.kafka.topics.alerts,
        **consumer_settings(config.kafka, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=500),
    )
    alerts: list[Alert] = []
    seen: set[str] = set()
    shown_decisions = 0
    started = last_change = last_progress = time.monotonic()
    handled: dict[str, float] = {}
    view = Group(alerts_table, decisions_table)
    try:
        with (
            (out_dir / "alerts.jsonl").open("wb") as alerts_out,
            Live(view, console=console, auto_refresh=False) if console.is_terminal else nullcontext() as live,
        ):
            while time.monotonic() - started < max_seconds:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}: see {out_dir / 'worker.log'}")
                for record in consumer:
                    alert = Alert.model_validate_json(record.value)
                    alerts_out.write(orjson.dumps(orjson.loads(record.value)) + b"\n")
                    row = alert_row(alert, repeat=alert.alert_id in seen)
                    seen.add(alert.alert_id)
                    alerts.append(alert)
                    last_change = time.monotonic()
                    alerts_table.add_row(*row)
                    if live is None:
                        console.print(" | ".join(row), soft_wrap=True)
                for decision in decisions[shown_decisions:]:
                    decisions_table.add_row(*decision_row(decision))
                    if live is None:
                        console.print("playbook: " + " | ".join(decision_row(decision)), soft_wrap=True)
                shown_decisions = len(decisions)
                if live is not None:
                    live.refresh()
                now_handled = _handled(config.metrics.port)
                if now_handled != handled:
                    handled, last_change = now_handled, time.monotonic()
                if time.monotonic() - last_progress >= PROGRESS_SECONDS:
                    console.print(_progress(handled, expected, time.monotonic() - started), soft_wrap=True)
                    last_progress = time.monotonic()
                caught_up = all(handled.get(kind, 0) >= n for kind, n in expected.items())
                if caught_up and time.monotonic() - last_change > QUIET_SECONDS:
                    break
            else:
                console.print(
                    f"[yellow]stopped after {max_seconds:.0f} s[/] ({datetime.now(UTC):%H:%M:%S}): the worker had "
                    + ", ".join(f"{handled.get(kind, 0):.0f} of {n} {kind}s" for kind, n in expected.items())
                )
    finally:
        consumer.close()
    return alerts
