"""Drift per slice: a change in one slice of ten is found and named, the same change spread thin
or everywhere raises no slice alert, the cap counts what it leaves out, and the state resumes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from monitor.alerts.lifecycle import AlertLifecycle
from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import AlertingConfig, ConfigError, FeatureType, MonitorConfig, load_config
from monitor.contracts.events import PredictionEvent
from monitor.core.finding import Finding
from monitor.monitoring import drift
from monitor.monitoring.fleet import ModelMonitor, RaisedAlert
from monitor.monitoring.slice_drift import CANDIDATES_PER_SLICE, SliceDrift

COUNTRIES = [f"C{i}" for i in range(10)]
CHANGE_AT = 14_000
"""Model warm-up and choice (2,000 events), then each slice's reference (1,000 of its events)."""


def config_for(window: dict | None = None, **slice_drift) -> MonitorConfig:
    return MonitorConfig.model_validate(
        {
            "reference": {"warmup_events": 2000},
            "window": window or {"size_events": 1000},
            "models": [
                {"model_id": "m", "slice_drift": {"keys": ["country"], "reference_events": 1000, **slice_drift}}
            ],
        }
    )


def predictions(start: int, n: int, rng: np.random.Generator, shift=None, countries=COUNTRIES, weights=None):
    """`n` events from position `start`, one a second; `shift(country codes, rng)` adds to `x`."""
    country = rng.choice(len(countries), n, p=weights)
    x, y = rng.normal(0, 1, n), rng.normal(5, 2, n)
    if shift is not None:
        x = x + shift(country, rng)
    events = [
        PredictionEvent(model_id="m", prediction_id=f"p{i}", timestamp=datetime.fromtimestamp(1.7e9 + i, UTC),
                        features={"x": float(xi), "y": float(yi)}, prediction=float(yi > 5),
                        slices={"country": countries[ci]})
        for i, (xi, yi, ci) in enumerate(zip(x, y, country, strict=True), start)
    ]  # fmt: skip
    return PredictionBatch.from_events(events, range(start, start + n))


def in_c3(country, rng):
    return np.where(country == 3, 1.0, 0.0)


def run(config: MonitorConfig, shift=None, total: int = 20_000, resume_every_batch: bool = False, seed: int = 1):
    """Alerts of model `m` over `total` events, `shift` from `CHANGE_AT` on; the monitor at the end."""
    rng = np.random.default_rng(seed)
    monitor = ModelMonitor("m", config)
    alerts: list[RaisedAlert] = []
    for start in range(0, total, 1000):
        if resume_every_batch:
            monitor = ModelMonitor("m", config, json.loads(json.dumps(monitor.to_state())))
        batch = predictions(start, 1000, rng, shift if start >= CHANGE_AT else None)
        alerts += monitor.observe(batch, [], [])
    return alerts, monitor


def test_a_drift_in_one_slice_of_ten_is_found_and_named():
    alerts, monitor = run(config_for(), in_c3)

    assert {(a.alert.kind, a.alert.feature, a.alert.slice) for a in alerts} == {
        (AlertKind.feature_drift, "x", "country=C3")
    }
    first = alerts[0]
    assert CHANGE_AT <= first.offset < CHANGE_AT + 2000  # about 100 of the slice's events
    assert (
        "slice country=C3 (" in first.alert.summary and "% of its traffic): feature 'x' moved up" in first.alert.summary
    )
    details = first.alert.evidence.details
    assert details["slice"] == "country=C3" and 0.07 < details["slice_share"] < 0.13
    assert (details["slices_watched"], details["slice_values_left_out"], details["slice_events_left_out"]) == (10, 0, 0)
    assert details["current_mean"] - details["reference_mean"] == pytest.approx(1.0, abs=0.3)
    # The all-traffic monitor saw a tenth of that, under what it can tell from noise.
    assert monitor.drift.features["x"].history["ks"]


def test_a_slice_alert_resolves_once_the_slice_is_back_to_normal():
    rng = np.random.default_rng(1)
    monitor = ModelMonitor("m", config_for())
    alerts: list[RaisedAlert] = []
    for start in range(0, 21_000, 1000):
        changed = CHANGE_AT <= start < CHANGE_AT + 3000
        alerts += monitor.observe(predictions(start, 1000, rng, in_c3 if changed else None), [], [])
    assert [(a.alert.slice, a.alert.status.value) for a in alerts] == [
        ("country=C3", "firing"),
        ("country=C3", "resolved"),
    ]
    assert alerts[1].offset >= CHANGE_AT + 3000  # three clean windows of the slice


def test_a_stationary_stream_raises_nothing():
    alerts, monitor = run(config_for())
    assert alerts == []
    assert len(monitor.signals["slice_drift"].monitors) == 10  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "thin",
    [
        pytest.param(lambda country, rng: np.where(rng.random(len(country)) < 0.1, 1.0, 0.0), id="a-tenth-of-each"),
        pytest.param(lambda country, rng: np.full(len(country), 0.1), id="a-tenth-as-far-in-each"),
    ],
)
def test_the_same_drift_spread_thin_over_all_slices_raises_no_slice_alert(thin):
    """The total mean moves as much as with one slice of ten shifted by one sd (`in_c3`)."""
    alerts, _ = run(config_for(), thin)
    assert [a.alert.slice for a in alerts if a.alert.slice] == []


def test_a_change_everywhere_is_the_all_traffic_alerts_to_report():
    alerts, monitor = run(config_for(), lambda country, rng: np.full(len(country), 1.0))
    assert ("x", None) in {(a.alert.feature, a.alert.slice) for a in alerts}
    assert {a.alert.slice for a in alerts} == {None}
    assert monitor.lifecycle.muted["feature_drift"] > 0  # the slices found it too, muted


def decisions(alerts: list[RaisedAlert]) -> list[tuple]:
    """What an alert decided: where, which alert, and on which score against which threshold.
    (Not the quantiles in its wording: a reference's quantile sketch resumed in the middle of its
    warm-up compacts differently, for the model's own reference as for a slice's.)"""
    return [(a.offset, a.alert.fingerprint, a.alert.status, a.alert.evidence.detector, a.alert.evidence.score,
             a.alert.evidence.threshold, a.alert.evidence.details.get("slice_share")) for a in alerts]  # fmt: skip


@pytest.mark.parametrize("window", [{"size_events": 1000}, {"size_events": None, "size_seconds": 600}])
def test_state_round_trips_at_every_batch(window):
    """Resumed from JSON before every batch (while choosing, while slices warm up, once fitted),
    the monitor decides exactly what one uninterrupted monitor decides."""
    config = config_for(window)
    straight, monitor = run(config, in_c3)
    resumed, again = run(config, in_c3, resume_every_batch=True)
    assert decisions(resumed) == decisions(straight)
    assert any(a.alert.slice == "country=C3" for a in straight)
    state, resumed_state = monitor.to_state()["signals"]["slice_drift"], again.to_state()["signals"]["slice_drift"]
    assert resumed_state["watched"] == state["watched"]
    for value, slice_state in state["monitors"]["country"].items():
        assert (
            resumed_state["monitors"]["country"][value]["features"]["x"]["sequential"]
            == slice_state["features"]["x"]["sequential"]
        )


def test_a_state_chosen_under_other_keys_or_another_cap_chooses_afresh():
    config = config_for()
    signal = SliceDrift(config.model("m"), config)
    signal.observe(predictions(0, 2000, np.random.default_rng(6)))
    state = json.loads(json.dumps(signal.to_state()))
    assert SliceDrift.restore(config.model("m"), config, state).watched.keys() == {"country"}
    for changed in (config_for(max_slices=5), config_for(keys=["segment"])):
        resumed = SliceDrift.restore(changed.model("m"), changed, state)
        assert (resumed.watched, resumed.monitors, resumed.chosen_after) == ({}, {}, 0)


def test_time_windows_close_a_slices_window_with_the_models():
    alerts, monitor = run(config_for({"size_events": None, "size_seconds": 600}), in_c3)
    assert {a.alert.slice for a in alerts} == {"country=C3"}
    for slice_monitor in monitor.signals["slice_drift"].monitors.values():  # type: ignore[attr-defined]
        assert slice_monitor.clock.closed_before == monitor.drift.clock.closed_before
        assert len(slice_monitor.features["x"].history["cusum"]) >= 8  # 6,000 events past their references


def test_the_cap_watches_the_largest_slices_and_counts_the_rest():
    countries = [f"C{i:02d}" for i in range(15)]
    weights = np.r_[np.full(10, 0.09), np.full(5, 0.02)]
    config = config_for(max_slices=10)
    signal = SliceDrift(config.model("m"), config)
    rng = np.random.default_rng(3)
    for start in range(0, 6000, 1000):
        signal.observe(predictions(start, 1000, rng, countries=countries, weights=weights))
    watched = signal.watched["country"]
    assert set(watched.shares) == set(countries[:10])
    assert watched.values_left_out == 5
    assert watched.events == 4000
    assert watched.events_left_out == pytest.approx(4000 * weights[10:].sum(), rel=0.15)


def test_metrics_say_how_many_slices_are_watched_and_what_the_cap_leaves_out():
    from prometheus_client import CollectorRegistry

    from monitor.observability.metrics import DriftlineMetrics

    countries = [f"C{i:02d}" for i in range(15)]
    monitor = ModelMonitor("m", config_for(max_slices=10))
    rng = np.random.default_rng(5)
    for start in range(0, 4000, 1000):
        monitor.observe(predictions(start, 1000, rng, countries=countries), [], [])
    metrics = DriftlineMetrics(CollectorRegistry())
    metrics.observe_model("m", monitor)
    labels = {"model": "m", "key": "country"}
    left_out = monitor.signals["slice_drift"].watched["country"].events_left_out  # type: ignore[attr-defined]
    assert metrics.registry.get_sample_value("driftline_slices_watched", labels) == 10
    assert metrics.registry.get_sample_value("driftline_slice_events_left_out_total", labels) == left_out > 0


def test_choosing_stays_bounded_under_a_flood_of_distinct_values():
    config = config_for(max_slices=2, selection_events=3000)
    signal = SliceDrift(config.model("m"), config)
    rng = np.random.default_rng(4)
    # 2,000 values once each, then the two real slices, in this order
    flood = [f"bot{i}" for i in range(2000)] + ["DE", "DE", "DE", "FR", "FR"] * 200
    for start in range(0, 3000, 1000):
        batch = predictions(start, 1000, rng)
        batch.slices[:] = [{"country": value} for value in flood[start : start + 1000]]
        signal.observe(batch)
        if signal.candidates:  # still choosing: a few counters and a 1 KB sketch
            assert len(signal.candidates["country"].counts) <= CANDIDATES_PER_SLICE * 2
            assert len(json.dumps(signal.to_state())) < 3000
    assert list(signal.watched["country"].shares) == ["DE", "FR"]
    assert signal.watched["country"].values_left_out == pytest.approx(2000, rel=0.05)  # a sketch's estimate


def test_slice_detectors_share_the_models_budget(monkeypatch):
    types = {"x": FeatureType.numeric, "y": FeatureType.numeric, "__prediction__": FeatureType.numeric}
    plain = MonitorConfig.model_validate({"reference": {"warmup_events": 2000}})
    config = config_for(max_slices=10)
    assert drift.count_detectors(config.model("m"), types) == drift.count_detectors(plain.model("m"), types) + 10 * 6
    run_lengths = []
    real = drift.detector_run_length
    monkeypatch.setattr(drift, "detector_run_length", lambda *a: run_lengths.append(real(*a)) or run_lengths[-1])
    run(config, total=14_000)
    assert len(run_lengths) >= 11 and len(set(run_lengths)) == 1  # the model's monitor and its 10 slices


def test_a_slice_alert_waits_while_the_same_alert_fires_on_all_traffic():
    lifecycle = AlertLifecycle(AlertingConfig())
    at = datetime(2024, 1, 1, tzinfo=UTC)
    evidence = Evidence(detector="ks", score=1.0, threshold=0.5, settings_hash="h")

    def finding(slice_, feature="x"):
        return Finding(AlertKind.feature_drift, "m", feature, slice_, True, at, evidence=evidence, summary="s")

    assert lifecycle.process_one(finding(None)) is not None
    assert lifecycle.process_one(finding("country=DE")) is None
    assert lifecycle.process_one(finding("country=DE", feature="y")) is not None  # another feature
    assert lifecycle.muted["feature_drift"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slice_drift: {keys: []}", "models.0.slice_drift.keys: list should have at least 1 item"),
        ("slice_drift: {keys: [country, country]}", "keys: ['country'] listed more than once"),
        (
            "slice_drift: {keys: [country], max_slices: 0}",
            "models.0.slice_drift.max_slices: input should be greater than 0",
        ),
        ("slice_drift: {keys: [country], reference_events: -5}", "models.0.slice_drift.reference_events"),
        ("slice_drift: {keys: [country], top: 3}", "models.0.slice_drift.top: extra inputs are not permitted"),
    ],
)
def test_bad_slice_drift_config_names_the_field(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"models:\n  - model_id: m\n    {text}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


def test_a_slices_small_reference_warning_names_the_slice_and_its_setting(caplog):
    """The model's warning says `reference.warmup_events`; a slice's reference is set by
    `slice_drift.reference_events`, which is what its warning must name."""
    with caplog.at_level("WARNING", logger="monitor.monitoring.drift"):
        run(config_for(reference_events=200), total=5000)
    said = [r.getMessage() for r in caplog.records if "too small for the false-alarm budget" in r.getMessage()]
    slices = [line for line in said if ", slice country=" in line]
    assert slices and all("slice_drift.reference_events" in line for line in slices)
    assert all("reference.warmup_events" not in line for line in slices)
    assert all("reference.warmup_events" in line for line in said if line not in slices)
