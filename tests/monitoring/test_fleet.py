"""The whole monitoring core on simulated traffic: planted problems found, controls quiet, state
resumable without loss."""

from __future__ import annotations

from collections import Counter

import msgpack
import numpy as np
import orjson
import pytest

from monitor.contracts.batch import columns_of
from monitor.contracts.config import MonitorConfig
from monitor.contracts.validation import decode_any
from monitor.monitoring.fleet import FleetMonitor, ModelMonitor
from monitor.simulation import simulate

CONFIG = MonitorConfig.model_validate({"reference": {"warmup_events": 3000}})


@pytest.fixture(scope="module")
def simulated_events():
    return [decode_any(orjson.dumps(e)) for e in simulate(n_predictions=60_000, seed=7)]


def run(fleet: FleetMonitor, events, start: int = 0, batch: int = 1024):
    alerts = []
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        alerts += fleet.observe(*columns_of(chunk, range(start + i, start + i + len(chunk))))
    return alerts


@pytest.fixture(scope="module")
def simulated_alerts(simulated_events):
    fleet = FleetMonitor(CONFIG)
    return run(fleet, simulated_events) + fleet.flush()


def test_planted_problems_raise_the_right_alerts(simulated_alerts):
    fired = {(r.alert.kind.value, r.alert.model_id, r.alert.feature) for r in simulated_alerts}
    assert ("feature_drift", "fraud-scorer", "amount") in fired
    assert ("data_quality", "fraud-scorer", "device") in fired
    assert ("performance_degradation", "churn-model", None) in fired
    assert ("canary_regression", "pricing-model", None) in fired


def test_controls_stay_quiet(simulated_alerts):
    """Nothing drifts in these: every alert on them would be a false alarm."""
    quiet = {("fraud-scorer", "age"), ("fraud-scorer", "country"), ("churn-model", "tenure_months"),
             ("churn-model", "monthly_spend"), ("churn-model", "plan"), ("pricing-model", "basket_size"),
             ("pricing-model", "discount")}  # fmt: skip
    noisy = [r.alert for r in simulated_alerts if (r.alert.model_id, r.alert.feature) in quiet]
    assert noisy == []
    assert not any(r.alert.kind.value == "performance_degradation" and r.alert.model_id != "churn-model"
                   for r in simulated_alerts)  # fmt: skip


def test_alerts_fire_after_the_change_not_before(simulated_alerts, simulated_events):
    by_kind = {}
    for r in simulated_alerts:
        by_kind.setdefault((r.alert.kind.value, r.alert.model_id), r)
    drift = by_kind[("feature_drift", "fraud-scorer")]
    first_drifted = next(i for i, e in enumerate(simulated_events) if getattr(e, "prediction_id", "").startswith(
        "fraud-scorer-") and int(e.prediction_id.rsplit("-", 1)[1]) >= 36_000)  # fmt: skip
    assert first_drifted <= drift.offset < first_drifted + 3000
    assert drift.alert.evidence.score >= drift.alert.evidence.threshold


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_state_round_trip_mid_stream_resumes_exactly(simulated_events, codec):
    """Snapshot the fleet halfway, restore it into a new one, and both give the same alerts."""
    half = len(simulated_events) // 2
    original = FleetMonitor(CONFIG)
    run(original, simulated_events[:half])
    state = original.to_state()
    encoded = orjson.dumps(state) if codec == "json" else msgpack.packb(state)
    decoded = orjson.loads(encoded) if codec == "json" else msgpack.unpackb(encoded, strict_map_key=False)
    restored = FleetMonitor.from_state(CONFIG, decoded)

    def tail(fleet):
        raised = run(fleet, simulated_events[half:], start=half) + fleet.flush()
        return [(r.offset, r.alert.kind.value, r.alert.model_id, r.alert.feature, r.alert.status.value,
                 round(r.alert.evidence.score, 9)) for r in raised]  # fmt: skip

    expected = tail(original)
    assert tail(restored) == expected
    assert {kind for _, kind, *_ in expected} >= {"feature_drift", "performance_degradation", "canary_regression"}
    for model_id, monitor in original.models.items():
        assert restored.models[model_id].drift.events == monitor.drift.events


def test_model_state_is_bounded_and_json_safe(simulated_events):
    fleet = FleetMonitor(CONFIG)
    run(fleet, simulated_events[:40_000])
    for monitor in fleet.models.values():
        encoded = orjson.dumps(monitor.to_state())  # raises on numpy scalars
        assert len(encoded) < 2_000_000
        # JSON-safe means the state survives its JSON form: what a restored monitor saves again
        # is what it was restored from.
        assert (
            orjson.dumps(ModelMonitor(monitor.evaluator.model_id, CONFIG, orjson.loads(encoded)).to_state()) == encoded
        )


def test_data_quality_mutes_drift_on_the_same_feature():
    """A feature starts arriving partly as strings (the cause), then its values shift (what the
    broken upstream also does): data quality fires, and drift on that feature stays muted."""
    rng = np.random.default_rng(3)
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 2000}, "window": {"size_events": 500}})
    events = []
    for i in range(8000):
        value = "n/a" if i >= 5000 and i % 4 == 0 else float(rng.normal(3.0 if i >= 6000 else 0.0, 1.0))
        raw = {"model_id": "m", "prediction_id": f"p{i}", "timestamp": f"2024-01-01T{i // 3600:02d}:"
               f"{i // 60 % 60:02d}:{i % 60:02d}Z", "features": {"x": value, "y": float(rng.normal())},
               "prediction": 0.5}  # fmt: skip
        events.append(decode_any(orjson.dumps(raw)))
    fleet = FleetMonitor(config)
    alerts = [r.alert for r in run(fleet, events, batch=250)]
    kinds = Counter((a.kind.value, a.feature) for a in alerts)
    assert kinds[("data_quality", "x")] >= 1
    first_quality = next(a for a in alerts if a.kind.value == "data_quality")
    assert first_quality.evidence.detector == "data_quality.type_mismatch_rate"
    drift_after = [a for a in alerts if a.kind.value == "feature_drift" and a.feature == "x"
                   and a.starts_at >= first_quality.starts_at]  # fmt: skip
    assert drift_after == []
    assert fleet.models["m"].lifecycle.muted["feature_drift"] > 0


def test_window_test_evidence_shows_reference_and_current_distributions():
    rng = np.random.default_rng(5)
    config = MonitorConfig.model_validate(
        {"reference": {"warmup_events": 2000}, "window": {"size_events": 500},
         "detectors": {"numeric": ["ks"], "prediction": [], "multivariate": []}}
    )  # fmt: skip
    events = [
        decode_any(orjson.dumps({"model_id": "m", "prediction_id": f"p{i}", "prediction": 0.5,
                                 "timestamp": f"2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                                 "features": {"x": float(rng.normal(1.0 if i >= 3000 else 0.0, 1.0))}}))
        for i in range(4000)
    ]  # fmt: skip
    alerts = [r.alert for r in run(FleetMonitor(config), events, batch=250)]
    drift = next(a for a in alerts if a.kind.value == "feature_drift")
    details = drift.evidence.details
    assert drift.evidence.detector == "ks" and drift.evidence.score > drift.evidence.threshold
    assert abs(details["reference_mean"]) < 0.1 and abs(details["current_mean"] - 1.0) < 0.2
    assert details["current_count"] == 500 and details["reference_count"] == 2000


@pytest.mark.parametrize("batch", [1, 37, 1024, 5000])
def test_evaluation_windows_hold_exactly_their_events_whatever_the_batch_size(batch):
    """Windows of 500 events with every label delivered: each closed evaluation window holds 500
    predictions, all labelled, however the stream is cut into batches. The first holds the 1,000
    warm-up events: no drift window closes during the warm-up, so the evaluation closes its own
    after two windows' worth of outcomes."""
    rng = np.random.default_rng(5)
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 1000}, "window": {"size_events": 500}})
    events = []
    for i in range(6000):
        p = float(rng.random())
        time = f"2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        events.append({"model_id": "m", "prediction_id": f"p{i}", "timestamp": time + "Z",
                       "features": {"x": float(rng.normal())}, "prediction": int(p > 0.5),
                       "probabilities": {"0": 1 - p, "1": p}})  # fmt: skip
        events.append({"prediction_id": f"p{i}", "label": int(rng.random() < p), "timestamp": time + ".5Z"})
    fleet = FleetMonitor(config)
    run(fleet, [decode_any(orjson.dumps(e)) for e in events], batch=batch)
    windows = fleet.models["m"].evaluator.window_metrics()
    assert [w["predictions"] for w in windows] == [1000] + [500] * 10
    assert {w["label_coverage"] for w in windows} == {1.0}


@pytest.mark.parametrize(("warmup", "warned"), [(200, True), (5000, False)])
def test_the_monitor_warns_when_its_reference_is_too_small_for_the_budget(caplog, warmup, warned):
    """A 200-event warm-up raised drift alerts on events of its own distribution; the monitor says
    so when it builds such a reference, naming how many rows would do."""
    rng = np.random.default_rng(2)
    config = MonitorConfig.model_validate({"reference": {"warmup_events": warmup}})
    events = [
        decode_any(
            orjson.dumps(
                {
                    "model_id": "m",
                    "prediction_id": f"p{i}",
                    "timestamp": "2024-01-01T00:00:00Z",
                    "features": {"x": float(rng.normal()), "y": float(rng.normal())},
                    "prediction": float(rng.random()),
                }
            )
        )  # fmt: skip
        for i in range(warmup)
    ]
    with caplog.at_level("WARNING", logger="monitor.monitoring.drift"):
        run(FleetMonitor(config), events)
    said = [r.getMessage() for r in caplog.records if "too small for the false-alarm budget" in r.getMessage()]
    assert bool(said) == warned
    if warned:
        assert f"reference of {warmup} rows" in said[0] and "rows would do" in said[0]


def test_caps_and_the_event_time_clock_are_the_fleets_own():
    """`caps.max_models`: events of models past the cap are counted, not monitored. And a model
    that goes quiet still closes its time window once the stream's event time passes it (the
    worker's timer rule), so its last window is reported in replay too."""
    config = MonitorConfig.model_validate(
        {
            "caps": {"max_models": 2},
            "reference": {"warmup_events": 100},
            "window": {"size_events": None, "size_seconds": 60, "min_events": 10},
        }
    )
    rng = np.random.default_rng(4)

    def event(model: str, i: int, second: int):
        fields = {"model_id": model, "prediction_id": f"{model}-{i}", "prediction": float(rng.random()),
                  "timestamp": f"2024-01-01T00:{second // 60:02d}:{second % 60:02d}Z",
                  "features": {"x": float(rng.normal())}}  # fmt: skip
        return decode_any(orjson.dumps(fields))

    fleet = FleetMonitor(config)
    # quiet: 150 events in the first 30 s (100 warm up the reference), then nothing
    quiet = [event("quiet", i, i // 5) for i in range(150)]
    busy = [event("busy", i, i // 5) for i in range(1500)]  # 300 s of a steady model
    extra = [event("third", i, 200 + i) for i in range(20)]
    run(fleet, quiet + busy + extra, batch=100)
    assert set(fleet.models) == {"quiet", "busy"}
    assert fleet.dropped["max_models"] == 20
    assert fleet.models["quiet"].windows_closed == 1  # closed by the busy model's event time
    assert orjson.loads(orjson.dumps(fleet.to_state()))["event_time"] == fleet.event_time
