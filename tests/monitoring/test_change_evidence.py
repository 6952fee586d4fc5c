"""Drift alerts say what moved and by how much, in the feature's units: planted changes of known
direction and size come back in the evidence within sampling error, whichever detector fired."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from monitor.contracts.batch import columns_of
from monitor.contracts.config import MonitorConfig
from monitor.contracts.validation import decode_any
from monitor.monitoring.fleet import FleetMonitor

WARMUP, WINDOW, CHANGE, EVENTS = 2000, 500, 3000, 4500
"""The change starts a window (windows are counted from the end of the warm-up), so the window
that alarms holds changed events only."""
CONFIG = MonitorConfig.model_validate({"reference": {"warmup_events": WARMUP}, "window": {"size_events": WINDOW}})


def first_alert(events: list[dict], feature: str | None, kind: str = "feature_drift"):
    decoded = [decode_any(orjson.dumps(e)) for e in events]
    fleet = FleetMonitor(CONFIG)
    for start in range(0, len(decoded), 700):
        chunk = decoded[start : start + 700]
        for raised in fleet.observe(*columns_of(chunk, range(start, start + len(chunk)))):
            if raised.alert.kind == kind and raised.alert.feature == feature:
                return raised.alert
    raise AssertionError(f"no {kind} alert on {feature}")


def stream(make_features) -> list[dict]:
    rng = np.random.default_rng(11)
    return [
        {"model_id": "m", "prediction_id": f"p{i}", "prediction": 0.5,
         "timestamp": f"2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
         "features": make_features(rng, i >= CHANGE)}
        for i in range(EVENTS)
    ]  # fmt: skip


def test_a_mean_shift_reads_as_up_by_its_size_in_units_and_standard_deviations():
    events = stream(
        lambda rng, after: {"amount": float(rng.normal(55 if after else 50, 5)), "age": float(rng.normal(40, 5))}
    )
    alert = first_alert(events, "amount")
    details = alert.evidence.details
    assert details["direction"] == "up"
    assert details["reference_mean"] == pytest.approx(50, abs=0.5)
    assert details["current_mean"] == pytest.approx(55, abs=1.5)
    assert details["mean_difference"] == pytest.approx(5, abs=1.5)
    assert details["standardised_mean_difference"] == pytest.approx(1.0, abs=0.3)
    assert details["current_median"] - details["reference_median"] == pytest.approx(5, abs=2.0)
    assert details["wasserstein"] == pytest.approx(5, abs=2.0)
    # the page draws reference against current from these, whichever detector fired
    assert {"reference_p50", "current_p50", "reference_p95", "current_p95"} <= details.keys()
    assert "'amount' moved up: mean 50" in alert.summary and "+1" in alert.summary
    if alert.evidence.detector == "cusum":
        assert "component mean_up" in alert.summary


def test_a_wider_spread_reads_as_spread_out_with_its_ratio():
    events = stream(
        lambda rng, after: {"amount": float(rng.normal(50, 10 if after else 5)), "age": float(rng.normal(40, 5))}
    )
    details = first_alert(events, "amount").evidence.details
    assert details["direction"] == "wider"
    assert details["spread_ratio"] == pytest.approx(2.0, abs=0.5)
    assert abs(details["standardised_mean_difference"]) < 0.3


def test_a_category_mix_change_names_the_categories_that_moved_and_by_how_much():
    def features(rng, after):
        shares = [0.2, 0.3, 0.5] if after else [0.6, 0.3, 0.1]
        return {"country": str(rng.choice(["DE", "FR", "NL"], p=shares)), "x": float(rng.normal())}

    alert = first_alert(stream(features), "country")
    details = alert.evidence.details
    moved = {name: (before, after) for name, before, after in details["moved"]}
    assert set(list(moved)[:2]) == {"DE", "NL"}  # the two that moved by 0.4; FR did not
    assert moved["DE"] == pytest.approx((0.6, 0.2), abs=0.08)
    assert moved["NL"] == pytest.approx((0.1, 0.5), abs=0.08)
    assert details["total_variation"] == pytest.approx(0.4, abs=0.08)
    assert details["psi"] > 0.5
    assert "'country' changed its mix: 'DE' 6" in alert.summary


def test_a_multivariate_alert_names_the_features_that_moved_most():
    def features(rng, after):
        values = {f"f{j}": float(rng.normal()) for j in range(5)}
        if after:
            values["f3"] += 1.5
        return values

    alert = first_alert(stream(features), None, kind="multivariate_drift")
    moved = alert.evidence.details["features_moved"]
    assert moved[0][0] == "f3" and moved[0][1] == pytest.approx(1.5, abs=0.35)
    assert "most in 'f3' (+1." in alert.summary
