"""The README's main command, `driftline demo`, as a user runs it: it ends by itself, exit 0, with
the planted problems raised as alerts on the Kafka topic and the playbook runner's dry-run
decisions beside them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from monitor.contracts.alert import Alert
from monitor.contracts.retrain import PlaybookDecision

pytestmark = pytest.mark.broker


def test_demo_shows_the_planted_problems_and_playbook_decisions(tmp_path, repo_root):
    (tmp_path / "playbooks-audit.jsonl").write_text("an earlier run's trail\n")  # each run starts clean
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "demo", "--out-dir", str(tmp_path), "--max-seconds", "420"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stopped after" not in result.stdout, result.stdout[-3000:]
    alerts = [Alert.model_validate_json(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    raised = {(a.kind.value, a.model_id, a.feature) for a in alerts if a.status == "firing"}
    assert {
        ("feature_drift", "fraud-scorer", "amount"),
        ("data_quality", "fraud-scorer", "device"),
        ("performance_degradation", "churn-model", None),
        ("canary_regression", "pricing-model", None),
    } <= raised, raised
    assert not {model for kind, model, _ in raised if kind == "feature_drift"} - {"fraud-scorer"}
    decisions = [
        PlaybookDecision.model_validate(json.loads(line))
        for line in (tmp_path / "playbooks-audit.jsonl").read_text().splitlines()
    ]
    assert {d.outcome.value for d in decisions} >= {"dry_run"}
    assert not {d.outcome.value for d in decisions} & {"acted", "failed"}  # every demo rule is a dry run
    assert "feature_drift" in result.stdout and "playbook: dry_run" in result.stdout
    # progress while it runs, and what to do next at the end
    assert "processed " in result.stdout and "events/s" in result.stdout
    assert "driftline explain " in result.stdout and "runbooks/" in result.stdout
    assert "[INFO]" in (tmp_path / "worker.log").read_text(errors="replace")  # the worker's own log, kept
