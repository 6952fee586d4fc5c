"""bench/long_controls.py: the declared budget is the product's arithmetic, and the streams are
valid events of the stated shape."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import long_controls  # noqa: E402

from monitor.contracts.config import MonitorConfig  # noqa: E402
from monitor.contracts.events import PredictionEvent  # noqa: E402
from monitor.monitoring.drift import detector_run_length  # noqa: E402

BASE = yaml.safe_load((ROOT / "bench" / "drift-bench.yaml").read_text())


@pytest.mark.parametrize(("kind", "detectors", "feature_detectors"), [("numeric", 43, 40), ("categorical", 62, 60)])
def test_budget_declares_the_expected_count_with_the_products_run_length(kind, detectors, feature_detectors):
    budget = long_controls.product_budget(BASE, kind, features=20, models=10, events=10_000_000, expected=100)
    config = MonitorConfig.model_validate(budget["config"])
    assert (budget["detectors"], budget["feature_detectors"]) == (detectors, feature_detectors)
    assert budget["detector_run_length"] == detector_run_length(config, detectors)
    assert budget["monitored"] == 10_000_000 - 10 * config.reference.warmup_events
    assert budget["declared_feature"] == pytest.approx(100, rel=1e-3)  # the rate is kept to 4 digits
    assert config.alerting.run_length_events == pytest.approx(budget["run_length_events"])


@pytest.mark.parametrize("family", list(long_controls.FAMILIES))
def test_stream_is_valid_events_round_robin(family):
    stream = long_controls.Stream(family, models=3, features=4, events=3_001, seed=1)
    lines = b"".join(stream.chunks()).splitlines()
    assert len(lines) == 3_001
    events = [PredictionEvent.model_validate_json(line) for line in lines[:30]]
    assert [e.model_id for e in events[:4]] == [f"control-{family}-0{m}" for m in (0, 1, 2, 0)]
    assert len(events[0].features) == 4
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)


def test_ar1_series_runs_along_each_models_own_events():
    long_controls.CHUNK_ROWS, saved = 500, long_controls.CHUNK_ROWS  # several chunks: the state carries over
    try:
        stream = long_controls.Stream("ar1", models=2, features=1, events=40_000, seed=3)
        rows = [orjson.loads(line) for line in b"".join(stream.chunks()).splitlines()]
    finally:
        long_controls.CHUNK_ROWS = saved
    x = np.array([r["features"]["x0"] for r in rows if r["model_id"].endswith("-00")])
    assert np.corrcoef(x[:-1], x[1:])[0, 1] == pytest.approx(long_controls.PHI, abs=0.03)
    assert x.std() == pytest.approx(1.0, abs=0.05)
