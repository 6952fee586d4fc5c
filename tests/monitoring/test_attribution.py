"""Attribution drift: a change in what drives the predictions, with the inputs unchanged, is found
and named; a stationary model stays quiet; events without attributions are counted; the state
resumes exactly; the contract refuses bad attributions naming the field."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.contracts.alert import AlertKind, AlertStatus
from monitor.contracts.batch import PredictionBatch, decode_batch
from monitor.contracts.config import MonitorConfig
from monitor.contracts.limits import EventLimits
from monitor.contracts.validation import InvalidEvent, decode_prediction
from monitor.monitoring.attribution import InfluenceShiftTest
from monitor.monitoring.drift import count_detectors, detector_run_length
from monitor.monitoring.fleet import ModelMonitor

FEATURES = ("amount", "age", "country_risk", "hour")
BEFORE = np.array([2.0, 1.0, 0.5, 0.2])
AFTER = np.array([0.5, 1.0, 2.0, 0.2])
"""The weights of 'amount' and 'country_risk' swapped: the inputs and the predictions' distribution
are the same before and after (same weights, permuted, on features alike), only what drives each
prediction changed."""

CONFIG = MonitorConfig.model_validate(
    {
        "models": [{"model_id": "fraud", "attribution": {"top_features": 3}}],
        "reference": {"warmup_events": 2000},
        "window": {"size_events": 500, "min_events": 100},
    }
)


def events(start: int, stop: int, weights: np.ndarray, seed: int, attributed: float = 1.0) -> PredictionBatch:
    """A linear model on standard normal inputs; its exact SHAP values are weight x input. A
    share `attributed` of the events carries attributions."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((stop - start, len(FEATURES)))
    shap = x * weights
    carried = rng.random(stop - start) < attributed
    raws = []
    for k, i in enumerate(range(start, stop)):
        event: dict[str, Any] = {
            "model_id": "fraud",
            "prediction_id": f"p{i}",
            "timestamp": datetime.fromtimestamp(1.7e9 + i, UTC).isoformat().replace("+00:00", "Z"),
            "features": dict(zip(FEATURES, x[k].tolist(), strict=True)),
            "prediction": float(shap[k].sum()),
        }
        if carried[k]:
            event["attributions"] = dict(zip(FEATURES, shap[k].tolist(), strict=True))
        raws.append(orjson.dumps(event))
    decoded = decode_batch(raws, np.arange(start, stop), kind="prediction")
    assert not decoded.rejected
    return decoded.predictions


def run(monitor: ModelMonitor, batches: list[PredictionBatch]) -> list[Any]:
    return [raised.alert for batch in batches for raised in monitor.observe(batch, [], [])]


def test_a_planted_change_in_what_drives_the_predictions_is_found_and_named():
    monitor = ModelMonitor("fraud", CONFIG)
    stationary = [events(i, i + 500, BEFORE, seed=i) for i in range(0, 6000, 500)]
    assert [a for a in run(monitor, stationary) if a.kind is AlertKind.attribution_drift] == []
    changed = [events(i, i + 500, AFTER, seed=i) for i in range(6000, 8000, 500)]
    alerts = [a for a in run(monitor, changed) if a.status is AlertStatus.firing]
    kinds = {a.kind for a in alerts}
    assert AlertKind.attribution_drift in kinds
    # The inputs and the predictions' distribution did not move: only this signal can see it.
    assert not kinds & {AlertKind.feature_drift, AlertKind.prediction_drift}
    alert = next(a for a in alerts if a.kind is AlertKind.attribution_drift)
    assert alert.feature is None and alert.evidence.detector == "influence_shift"
    assert alert.evidence.score > alert.evidence.threshold
    assert alert.evidence.current_size == 500 and alert.evidence.reference_size == 2000
    changed_rows = alert.evidence.details["changed"]
    assert {row[0] for row in changed_rows[:2]} == {"amount", "country_risk"}
    amount = next(row for row in changed_rows if row[0] == "amount")
    # reference mean |attr| of 2 x N(0, 1) is 2 sqrt(2 / pi) = 1.6; now 0.4 (ratio 1/4)
    assert amount[1] == pytest.approx(1.6, rel=0.1) and amount[3] == pytest.approx(0.25, rel=0.2)
    assert amount[4] == pytest.approx(2 / 3.7, rel=0.1) and amount[5] == pytest.approx(0.5 / 3.7, rel=0.2)
    assert alert.summary.startswith("fraud: what drives its predictions changed: ")
    assert re.search(r"'amount' 5\d% -> 1\d% of the attribution \(mean \|attribution\| 1\.6 -> 0\.4", alert.summary)
    assert re.search(r"'country_risk' 1\d% -> 5\d% of the attribution", alert.summary)


def test_a_stationary_model_stays_quiet_over_many_windows():
    monitor = ModelMonitor("fraud", CONFIG)
    batches = [events(i, i + 2000, BEFORE, seed=i) for i in range(0, 42_000, 2000)]
    assert [a for a in run(monitor, batches) if a.kind is AlertKind.attribution_drift] == []
    signal = monitor.signals["attribution"]
    assert signal.test is not None and len(signal.history["influence_shift"]) == 20  # type: ignore[attr-defined]


def test_the_test_takes_the_models_share_of_the_false_alarm_budget():
    monitor = ModelMonitor("fraud", CONFIG)
    run(monitor, [events(0, 2500, BEFORE, seed=0)])
    types = {name: feature.type for name, feature in monitor.drift.features.items()}
    signal = monitor.signals["attribution"]
    detectors = count_detectors(CONFIG.model("fraud"), types)
    assert detectors == count_detectors(CONFIG.model("other"), types) + 1
    test = signal.test  # type: ignore[attr-defined]
    run_length = detector_run_length(CONFIG, detectors)
    assert monitor.drift.run_length() == run_length
    # the threshold is the bootstrap quantile exceeded once per run length / window size windows
    assert 3.0 < test.threshold < 8.0
    assert run_length > 1e7


def test_events_without_attributions_are_counted_and_the_rest_still_judged():
    monitor = ModelMonitor("fraud", CONFIG)
    run(monitor, [events(i, i + 500, BEFORE, seed=i, attributed=0.5) for i in range(0, 6000, 500)])
    signal = monitor.signals["attribution"]
    assert signal.test is not None  # type: ignore[attr-defined]
    assert 2600 < signal.without_attributions < 3400  # type: ignore[attr-defined]
    alerts = run(monitor, [events(i, i + 500, AFTER, seed=i, attributed=0.5) for i in range(6000, 9000, 500)])
    found = [a for a in alerts if a.kind is AlertKind.attribution_drift]
    assert found and 150 < found[0].evidence.details["events_without_attributions"] < 350
    none_at_all = run(monitor, [events(i, i + 500, AFTER, seed=i, attributed=0.0) for i in range(9000, 12000, 500)])
    assert all(a.kind is not AlertKind.attribution_drift or a.status is AlertStatus.resolved for a in none_at_all)


def test_the_state_round_trips_and_resumes_exactly():
    batches = [events(i, i + 700, BEFORE if i < 4200 else AFTER, seed=i) for i in range(0, 7000, 700)]
    whole = ModelMonitor("fraud", CONFIG)
    expected = run(whole, batches)
    for cut in (1, 2, 5):  # in the warm-up, while the reference fills, after calibration
        first = ModelMonitor("fraud", CONFIG)
        got = run(first, batches[:cut])
        state = json.loads(json.dumps(first.to_state()))
        resumed = ModelMonitor("fraud", CONFIG, state)
        got += run(resumed, batches[cut:])
        assert [a.model_dump() for a in got] == [a.model_dump() for a in expected]
        assert resumed.to_state()["signals"] == whole.to_state()["signals"]
    assert any(a.kind is AlertKind.attribution_drift for a in expected)


def test_features_the_reference_never_named_are_reported_apart():
    monitor = ModelMonitor("fraud", CONFIG)
    run(monitor, [events(i, i + 500, BEFORE, seed=i) for i in range(0, 4000, 500)])
    batch = events(4000, 4500, BEFORE, seed=1)
    for mapping in batch.attributions:
        mapping["new_feature"] = 3 * mapping.pop("amount")  # the model now leans on a new input
    found = [
        a for a in run(monitor, [batch, events(4500, 5000, BEFORE, seed=2)]) if a.kind is AlertKind.attribution_drift
    ]
    assert found and found[0].evidence.details["unreferenced_share"] > 0.5
    assert found[0].evidence.details["changed"][0][0] == "amount"


def test_a_model_without_the_section_runs_nothing():
    monitor = ModelMonitor("other", CONFIG)
    assert monitor.signals == {}


@pytest.mark.parametrize(
    ("attributions", "message"),
    [
        ({"a": "0.5"}, "attributions.a: "),
        ({"a": True}, "attributions.a: "),
        ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, "attributions: 5 attributions, over the limit of 4 features"),
        ([0.5], "attributions: "),
        ({"": 0.5}, "attributions."),
    ],
)
def test_contract_errors_name_the_field(attributions, message):
    raw = orjson.dumps({"model_id": "m", "prediction_id": "p", "timestamp": "2024-01-01T00:00:00Z",
                        "features": {"a": 1}, "prediction": 1, "attributions": attributions})  # fmt: skip
    limits = EventLimits(max_features=4)
    with pytest.raises(InvalidEvent) as error:
        decode_prediction(raw, limits)
    assert message in str(error.value)
    decoded = decode_batch([raw], [0], limits=limits, kind="prediction")
    assert len(decoded.predictions) == 0 and str(decoded.rejected[0][1]) == str(error.value)


def test_influence_shift_test_state_round_trips():
    rng = np.random.default_rng(3)
    test = InfluenceShiftTest().fit(np.abs(rng.normal(size=(1000, 2))), run_length=1e6, window_size=200)
    again = InfluenceShiftTest.from_state(json.loads(json.dumps(test.to_state())))
    window = np.abs(rng.normal(size=(200, 2)))
    assert again.test(window) == test.test(window)


def test_a_dropped_features_attribution_is_removed_and_redacted_from_dead_letters():
    from monitor.contracts.privacy import REDACTED, PrivacyPolicy

    config = MonitorConfig.model_validate({"models": [{"model_id": "m", "features": {"ssn": {"pii": "drop"}}}]})
    policy = PrivacyPolicy.from_config(config, {})
    raw = orjson.dumps({"model_id": "m", "prediction_id": "p", "timestamp": "2024-01-01T00:00:00Z",
                        "features": {"ssn": "078-05-1120", "a": 1}, "prediction": 1,
                        "attributions": {"ssn": 0.7, "a": 0.1}})  # fmt: skip
    batch = decode_batch([raw], [0], privacy=policy).predictions
    assert batch.features[0] == {"a": 1} and batch.attributions[0] == {"a": 0.1}
    kept = policy.redact(raw)
    assert orjson.loads(bytes(kept))["attributions"] == {"ssn": REDACTED, "a": 0.1}
    assert "attributions.ssn" in kept.fields  # type: ignore[attr-defined]


def test_the_explain_page_and_the_metrics_show_it():
    from prometheus_client import CollectorRegistry

    from monitor.observability.explain import render_page
    from monitor.observability.metrics import DriftlineMetrics

    monitor = ModelMonitor("fraud", CONFIG)
    alerts = run(monitor, [events(i, i + 500, BEFORE if i < 4000 else AFTER, seed=i) for i in range(0, 5000, 500)])
    alert = next(a for a in alerts if a.kind is AlertKind.attribution_drift)
    page = render_page([alert])
    assert "What drives the predictions" in page and "country_risk" in page
    registry = CollectorRegistry()
    DriftlineMetrics(registry).observe_model("fraud", monitor)
    labels = {"model": "fraud", "feature": "__attributions__", "detector": "influence_shift"}
    last_window = monitor.signals["attribution"].history["influence_shift"][-1][1]  # type: ignore[attr-defined]
    assert registry.get_sample_value("driftline_drift_score", labels) == last_window > alert.evidence.threshold
    assert registry.get_sample_value("driftline_drift_threshold", labels) == alert.evidence.threshold


@pytest.mark.parametrize("tails", ["gaussian", "student_t3"])
def test_the_threshold_holds_its_false_alarm_rate_on_heavy_tailed_attributions(tails):
    """Windows of data like the reference cross the threshold at the calibrated rate, averaged
    over references (the two-sample bootstrap's promise); uncapped, |Student-t(3)| attributions
    crossed it 2.5 times as often."""
    rng = np.random.default_rng(5)
    window, windows, references, rate = 500, 150, 20, 0.01
    hits = 0
    for seed in range(references):
        scale = rng.uniform(0.1, 2.0, 6)

        def draw(n: int, scale: np.ndarray = scale) -> np.ndarray:
            x = rng.standard_normal((n, 6)) if tails == "gaussian" else rng.standard_t(3, (n, 6))
            return np.abs(x * scale)

        test = InfluenceShiftTest().fit(draw(2000), run_length=window / rate, window_size=window, seed=seed)
        sums = test.clip(draw(window * windows).reshape(windows, window, 6)).sum(axis=1)
        hits += sum(test.test_sums(s, window).drifted for s in sums)
    expected = rate * windows * references  # 30
    assert 0.5 * expected <= hits <= 1.6 * expected


def test_the_reference_stays_within_its_bound_of_rows_times_features(monkeypatch):
    from monitor.monitoring import attribution

    monkeypatch.setattr(attribution, "MAX_REFERENCE_VALUES", 3000)  # 750 rows of the 4 features
    monitor = ModelMonitor("fraud", CONFIG)
    run(monitor, [events(0, 700, BEFORE, seed=0)])
    state = monitor.to_state()["signals"]["attribution"]
    assert len(state["rows"]) == 700 and len(state["rows"][0]) == 4 and state["test"] is None
    run(monitor, [events(700, 2000, BEFORE, seed=1)])
    signal = monitor.signals["attribution"]
    assert signal.test is not None and signal.test.reference_size == 750  # type: ignore[attr-defined]
    assert monitor.to_state()["signals"]["attribution"]["rows"] == []
