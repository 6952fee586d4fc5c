"""`driftline replay` with `slice_drift`: a change in one country of ten comes out as an alert
naming the country, on the line that raised it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson

CHANGE_AT = 14_000
CONFIG = """\
reference: {warmup_events: 2000}
window: {size_events: 1000}
models:
  - model_id: m
    slice_drift: {keys: [country], reference_events: 1000}
"""


def events(n: int, seed: int = 7) -> list[bytes]:
    """Ten countries of a tenth each; from `CHANGE_AT` on, `x` is one standard deviation higher in C3."""
    rng = np.random.default_rng(seed)
    country = rng.integers(0, 10, n)
    x = rng.normal(0, 1, n) + np.where((np.arange(n) >= CHANGE_AT) & (country == 3), 1.0, 0.0)
    stamps = np.datetime_as_string(np.datetime64("2024-01-01T00:00:00") + np.arange(n).astype("timedelta64[s]"))
    return [
        orjson.dumps({"model_id": "m", "prediction_id": f"p{i}", "timestamp": f"{stamps[i]}Z",
                      "features": {"x": float(x[i])}, "prediction": 0.5, "slices": {"country": f"C{country[i]}"}})
        for i in range(n)
    ]  # fmt: skip


def test_replay_names_the_slice_that_drifted(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(b"\n".join(events(18_000)) + b"\n")
    out = tmp_path / "alerts.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "replay", "--config", str(config), "--input", str(lines),
         "--alerts-out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(a["kind"], a["feature"], a["slice"], a["status"]) for a in alerts] == [
        ("feature_drift", "x", "country=C3", "firing")
    ]
    alert = alerts[0]
    assert CHANGE_AT <= alert["detected_at_offset"] < CHANGE_AT + 2000
    assert alert["summary"].startswith("m, slice country=C3 (")
    assert alert["evidence"]["details"]["slice"] == "country=C3"
    assert alert["runbook_url"].endswith("/feature_drift.md")
