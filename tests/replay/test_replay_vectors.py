"""`driftline replay` over events carrying an embedding: a declared `vector` feature is watched
by the embedding signal, its drift alert names the components that moved."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson

DIMENSION = 64
CONFIG = f"""
detectors: {{numeric: [], categorical: [], prediction: [], multivariate: []}}
reference: {{warmup_events: 1000}}
window: {{size_events: 500}}
models:
  - model_id: m
    features:
      emb: {{type: vector, dimension: {DIMENSION}}}
"""


def test_replay_finds_a_planted_shift_in_an_embedding_and_names_the_component(tmp_path: Path):
    rng = np.random.default_rng(11)
    loadings = rng.standard_normal((DIMENSION, 8)) * np.linspace(1.0, 0.3, 8)
    top = loadings[:, 0] / np.linalg.norm(loadings[:, 0])
    rows = rng.standard_normal((4000, 8)) @ loadings.T + 0.2 * rng.standard_normal((4000, DIMENSION))
    rows[3000:] += 0.4 * np.linalg.norm(loadings[:, 0]) * top  # from line 3000: 0.4 sd along the strongest direction
    lines = [
        orjson.dumps(
            {
                "model_id": "m",
                "prediction_id": f"p{i}",
                "timestamp": f"2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                "features": {"emb": row.tolist(), "x": float(i % 7)},
                "prediction": 0.5,
            }
        )
        for i, row in enumerate(rows)
    ]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "c.yaml").write_text(CONFIG)
    alerts_path = tmp_path / "alerts.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "replay", "--config", str(tmp_path / "c.yaml"),
         "--input", str(tmp_path / "events.jsonl"), "--alerts-out", str(alerts_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    assert [(a["kind"], a["feature"], a["status"]) for a in alerts] == [("feature_drift", "emb", "firing")]
    # windows of 500 after the 1,000 warm-up events: the first shifted one closes at line 3499
    assert alerts[0]["detected_at_offset"] == 3499
    evidence = alerts[0]["evidence"]
    assert evidence["detector"] == "embedding_shift" and evidence["score"] > evidence["threshold"]
    component, share, mean_shift, _ = evidence["details"]["components_moved"][0]
    assert component == 1 and share > 0.2 and 0.3 < mean_shift < 0.5
    assert alerts[0]["summary"].startswith("m: embedding 'emb' moved along")
    assert alerts[0]["runbook_url"].endswith("/feature_drift.md")
