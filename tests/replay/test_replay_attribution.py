"""`driftline replay` over JSONL files with attributions: the planted change in what drives the
predictions is found at the right line and named, and a `pii: drop` feature's attribution never
reaches an alert."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

FEATURES = ("amount", "age", "country_risk", "hour")
BEFORE = np.array([2.0, 1.0, 0.5, 0.2])
AFTER = np.array([0.5, 1.0, 2.0, 0.2])
"""The weights of 'amount' and 'country_risk' swap at `CHANGE`: the inputs and the scores'
distribution stay the same, what drives each score does not."""
CHANGE = 6000


def lines(n: int, every_other_without: bool = False) -> list[bytes]:
    """A linear model on standard normal inputs, with its exact SHAP values (weight x input)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, len(FEATURES)))
    out = []
    for i in range(n):
        shap = x[i] * (BEFORE if i < CHANGE else AFTER)
        event = {
            "model_id": "fraud",
            "prediction_id": f"p{i}",
            "timestamp": datetime.fromtimestamp(1.7e9 + i, UTC).isoformat().replace("+00:00", "Z"),
            "features": dict(zip(FEATURES, x[i].tolist(), strict=True)),
            "prediction": float(shap.sum()),
        }
        if not (every_other_without and i % 2):
            event["attributions"] = dict(zip(FEATURES, shap.tolist(), strict=True))
        out.append(orjson.dumps(event))
    return out


def replay(tmp_path: Path, events: list[bytes], model: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"models: [{model}]\nreference: {{warmup_events: 2000}}\nwindow: {{size_events: 500, min_events: 100}}\n"
    )
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(events) + b"\n")
    alerts = tmp_path / "alerts.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "replay", "--config", str(config), "--input",
         str(tmp_path / "events.jsonl"), "--alerts-out", str(alerts)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result, [json.loads(line) for line in alerts.read_text().splitlines()]


def test_replay_finds_the_planted_change_in_what_drives_the_predictions(tmp_path):
    _, alerts = replay(tmp_path, lines(9000), "{model_id: fraud, attribution: {top_features: 3}}")
    found = [a for a in alerts if a["kind"] == "attribution_drift" and a["status"] == "firing"]
    assert found, [a["kind"] for a in alerts]
    first = found[0]
    # the first window after the change closes at the event 500 later
    assert CHANGE <= first["detected_at_offset"] <= CHANGE + 1000
    assert {row[0] for row in first["evidence"]["details"]["changed"][:2]} == {"amount", "country_risk"}
    assert "what drives its predictions changed: 'amount'" in first["summary"]
    assert not [a for a in alerts if a["kind"] in ("feature_drift", "prediction_drift")]


def test_replay_without_the_section_runs_no_attribution_check(tmp_path):
    _, alerts = replay(tmp_path, lines(9000, every_other_without=True), "{model_id: fraud}")
    assert not [a for a in alerts if a["kind"] == "attribution_drift"]


def test_a_dropped_features_attribution_is_never_kept(tmp_path):
    model = "{model_id: fraud, attribution: {}, features: {amount: {pii: drop}}}"
    _, alerts = replay(tmp_path, lines(9000), model)
    found = [a for a in alerts if a["kind"] == "attribution_drift"]
    assert found and all("amount" not in json.dumps(a) for a in alerts)
    assert found[0]["evidence"]["details"]["changed"][0][0] == "country_risk"
