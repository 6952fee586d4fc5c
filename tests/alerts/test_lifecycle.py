from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from monitor.alerts.lifecycle import AlertLifecycle
from monitor.contracts.alert import AlertKind, AlertStatus, Evidence
from monitor.contracts.config import AlertingConfig
from monitor.core.finding import Finding

T0 = datetime(2024, 1, 1, tzinfo=UTC)
EVIDENCE = Evidence(detector="ks", score=0.3, threshold=0.1, settings_hash="h")


def finding(kind=AlertKind.feature_drift, feature="amount", active=True, minutes=0, model="fraud"):
    return Finding(
        kind,
        model,
        feature,
        None,
        active,
        T0 + timedelta(minutes=minutes),
        evidence=EVIDENCE if active else None,
        summary=f"{kind} on {feature}",
    )


def test_fires_once_then_repeats_after_interval():
    lifecycle = AlertLifecycle(AlertingConfig(repeat_interval_seconds=3600))
    sent = [lifecycle.process([finding(minutes=m)]) for m in (0, 10, 59, 61, 100, 125)]
    assert [len(s) for s in sent] == [1, 0, 0, 1, 0, 1]
    first, repeat = sent[0][0], sent[3][0]
    assert first.status is AlertStatus.firing and repeat.status is AlertStatus.firing
    assert repeat.alert_id == first.alert_id and repeat.starts_at == first.starts_at


def test_resolves_after_configured_clean_windows_and_active_resets_count():
    lifecycle = AlertLifecycle(AlertingConfig(resolve_after_clean_windows=3))
    lifecycle.process([finding()])
    assert lifecycle.process([finding(active=False, minutes=1), finding(active=False, minutes=2)]) == []
    assert lifecycle.process([finding(minutes=3)]) == []  # condition back: count starts again
    out = lifecycle.process([finding(active=False, minutes=m) for m in (4, 5, 6)])
    assert [a.status for a in out] == [AlertStatus.resolved]
    assert out[0].ends_at == T0 + timedelta(minutes=6)
    assert lifecycle.process([finding(minutes=7)])[0].status is AlertStatus.firing  # a new firing period


def test_alert_carries_runbook_ending_in_kind_and_evidence():
    alert = AlertLifecycle(AlertingConfig(runbook_base_url="https://runbooks.example/driftline/")).process([finding()])[
        0
    ]
    assert alert.runbook_url == "https://runbooks.example/driftline/feature_drift.md"
    assert alert.evidence.threshold == 0.1
    assert alert.severity.value == "warning"


def test_data_quality_mutes_drift_on_same_feature_only():
    lifecycle = AlertLifecycle(AlertingConfig())
    lifecycle.process([finding(kind=AlertKind.data_quality)])
    assert lifecycle.process([finding(minutes=1)]) == []
    assert lifecycle.muted["feature_drift"] == 1
    other = lifecycle.process([finding(feature="age", minutes=1)])
    assert [a.feature for a in other] == ["age"]
    other_model = lifecycle.process([finding(model="churn", minutes=1)])
    assert len(other_model) == 1


def test_labels_missing_mutes_performance_and_performance_mutes_estimate():
    lifecycle = AlertLifecycle(AlertingConfig())
    lifecycle.process([finding(kind=AlertKind.labels_missing, feature=None)])
    assert lifecycle.process([finding(kind=AlertKind.performance_degradation, feature=None)]) == []
    lifecycle2 = AlertLifecycle(AlertingConfig())
    lifecycle2.process([finding(kind=AlertKind.performance_degradation, feature=None)])
    assert lifecycle2.process([finding(kind=AlertKind.estimated_performance_drop, feature=None)]) == []


def test_state_round_trip_through_json():
    lifecycle = AlertLifecycle(AlertingConfig(resolve_after_clean_windows=2))
    lifecycle.process([finding(), finding(feature="age", active=False)])
    restored = AlertLifecycle(AlertingConfig(resolve_after_clean_windows=2))
    restored.restore(orjson.loads(orjson.dumps(lifecycle.to_state())))
    tail = [finding(active=False, minutes=1), finding(active=False, minutes=2)]
    assert [a.model_dump() for a in restored.process(tail)] == [a.model_dump() for a in lifecycle.process(tail)]
