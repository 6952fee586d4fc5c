"""The drift monitor takes a batch's values out of its events once (`BatchColumns`): numeric
features whose values are all numbers as rows of one matrix, the rest per segment as before.
These tests hold the fast path to the per-segment one: the same alerts, evidence and state."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.contracts.batch import columns_of
from monitor.contracts.config import MonitorConfig
from monitor.contracts.validation import decode_any
from monitor.monitoring import drift
from monitor.monitoring.columns import numeric_column
from monitor.monitoring.fleet import FleetMonitor
from monitor.simulation import simulate

RANDOMISED = re.compile(r"^(reference|current)_(p\d\d|median)$|^wasserstein$|^sketch$|^created_at$")
"""What differs between two runs of the same path: the KLL sketches (their compactions are
randomised), what is read from them (quantiles, medians, the quantile Wasserstein distance of
`change`), and the reference's creation time."""


def _without_sketches(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: _without_sketches(v) for k, v in state.items() if not RANDOMISED.match(str(k))}
    if isinstance(state, list):
        return [_without_sketches(v) for v in state]
    if isinstance(state, str):
        return re.sub(r"median \S+ -> \S+", "median", state)
    return state


def _replay(config: MonitorConfig, events: list, batch: int) -> tuple[list[str], dict[str, Any]]:
    fleet = FleetMonitor(config)
    alerts = []
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        alerts += fleet.observe(*columns_of(chunk, range(i, i + len(chunk))))
    alerts += fleet.flush()
    texts = [f"{r.offset} {orjson.dumps(_without_sketches(r.alert.model_dump(mode='json'))).decode()}" for r in alerts]
    return texts, _without_sketches(orjson.loads(orjson.dumps(fleet.to_state(), option=orjson.OPT_SERIALIZE_NUMPY)))


def _both_paths(monkeypatch, config, events, batch=1024):
    fast = _replay(config, events, batch)
    monkeypatch.setattr(drift, "BatchColumns", lambda monitor, batch: None)
    slow = _replay(config, events, batch)
    return fast, slow


def _hostile_events(n: int, seed: int) -> list:
    """Numeric and categorical features with drift, nulls, bools, ints, texts in numeric
    columns, missing and unknown features, now and then, so both paths meet every case."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    events = []
    for i in range(n):
        shift = 1.5 if i > n * 0.6 else 0.0
        features: dict[str, Any] = {f"x{j}": round(float(rng.normal(shift if j == 0 else 0.0)), 4) for j in range(4)}
        features["count"] = int(rng.poisson(3))
        features["flag"] = float(rng.random() < 0.5)  # 0.0 and 1.0: candidates for bools
        features["c0"] = str(rng.choice(list("abcd"), p=[0.4, 0.3, 0.2, 0.1] if i < n * 0.7 else [0.1, 0.2, 0.3, 0.4]))
        features["c1"] = str(rng.choice(list("xyz")))
        block = (i // 700) % 6  # stretches with one kind of trouble, stretches without
        if block == 1 and rng.random() < 0.05:
            features["x1"] = None
        if block == 2 and rng.random() < 0.02:
            features["flag"] = bool(rng.random() < 0.5)
        if block == 3 and rng.random() < 0.01:
            features["x2"] = "n/a"
        if block == 4 and rng.random() < 0.01:
            del features["c1"]
        if block == 5 and rng.random() < 0.01:
            features["surprise"] = 1.0
        if rng.random() < 0.003:
            features["c0"] = None
        at = start + timedelta(seconds=i - (30 if rng.random() < 0.01 else 0))
        events.append(
            {
                "model_id": "m",
                "prediction_id": f"p{i}",
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "features": features,
                "prediction": round(float(rng.random()), 4) if rng.random() > 0.001 else True,
            }
        )
    return [decode_any(orjson.dumps(e)) for e in events]


@pytest.mark.parametrize(
    "window",
    [{"size_events": 500, "min_events": 100}, {"size_seconds": 300, "allowed_lateness_seconds": 10, "min_events": 50}],
)
def test_fast_columns_give_the_same_alerts_and_state(monkeypatch, window):
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 2000}, "window": window})
    events = _hostile_events(12_000, seed=3)
    (fast_alerts, fast_state), (slow_alerts, slow_state) = _both_paths(monkeypatch, config, events, batch=700)
    assert any("feature_drift" in a for a in fast_alerts)  # some detector did alarm
    assert fast_alerts == slow_alerts
    assert fast_state == slow_state


def test_fast_columns_on_the_simulated_fleet(monkeypatch):
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 3000}})
    events = [decode_any(orjson.dumps(e)) for e in simulate(n_predictions=20_000, seed=7)]
    (fast_alerts, fast_state), (slow_alerts, slow_state) = _both_paths(monkeypatch, config, events)
    assert fast_alerts == slow_alerts
    assert fast_state == slow_state


@pytest.mark.parametrize(
    "values",
    [
        [1.5, 2.0, -3.25],
        [1, 2, 3],
        [1.0, 2, 0, 1],
        [0.0, 1.0, True],
        [1.0, None, 2.0],
        [1.0, "2.0"],
        [False, True],
        [2**62 + 1, 0.5],
    ],
)
def test_numbers_are_taken_only_when_numeric_column_takes_them_all(values):
    fast = drift._numbers(values)
    column = numeric_column(values)
    if fast is None:
        return
    assert column.nulls == column.mismatches == 0
    assert fast.tobytes() == column.values.tobytes()
