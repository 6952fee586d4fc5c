"""Which rules an alert matches, and how long it has been firing. Pure functions, no I/O.

A rule matches on the alert's kind, severity and model (an exact id or a glob); its
`min_firing_seconds` is judged on the alert's own event time: from `starts_at` to the end of
its evidence window (a repeat carries newer evidence, so a long-firing alert passes on a repeat).

>>> from datetime import UTC, datetime, timedelta
>>> from monitor.contracts.alert import Alert, Evidence
>>> from monitor.contracts.config import PlaybookRule
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> alert = Alert(alert_id="fp-1", fingerprint="fp", kind="feature_drift", status="firing", severity="warning",
...               model_id="fraud-eu", model_version="v3", feature="amount", starts_at=t0, summary="s",
...               runbook_url="r/feature_drift", evidence=Evidence(detector="ks", score=0.3, threshold=0.1,
...               settings_hash="h", window_end=t0 + timedelta(minutes=20)))
>>> rule = PlaybookRule(name="retrain", kinds=["feature_drift"], models=["fraud-*"], min_firing_seconds=600,
...                     action={"type": "retrain"})
>>> rule_matches(rule, alert), firing_seconds(alert), long_enough(rule, alert)
(True, 1200.0, True)
"""

from __future__ import annotations

from datetime import datetime
from fnmatch import fnmatchcase

from monitor.contracts.alert import Alert
from monitor.contracts.config import PlaybookRule, PlaybookSilence


def model_selected(patterns: list[str], model_id: str) -> bool:
    """Whether `model_id` is one of `patterns` (exact ids or globs, case-sensitive)."""
    return any(fnmatchcase(model_id, pattern) for pattern in patterns)


def rule_matches(rule: PlaybookRule, alert: Alert) -> bool:
    """Kind, severity and model; not the firing duration (see `long_enough`)."""
    return (
        rule.enabled
        and alert.kind in rule.kinds
        and alert.severity in rule.severities
        and model_selected(rule.models, alert.model_id)
    )


def firing_seconds(alert: Alert) -> float:
    """Event time from `starts_at` to the latest time the alert speaks of (its evidence window's
    end, or `ends_at`), never negative."""
    latest = max(t for t in (alert.starts_at, alert.ends_at, alert.evidence.window_end) if t is not None)
    return max(0.0, (latest - alert.starts_at).total_seconds())


def long_enough(rule: PlaybookRule, alert: Alert) -> bool:
    return firing_seconds(alert) >= rule.min_firing_seconds


def silenced_by(silences: list[PlaybookSilence], alert: Alert, now: datetime) -> PlaybookSilence | None:
    """The first silence in force at `now` that covers the alert, if any."""
    for silence in silences:
        if (
            now < silence.ends_at
            and (not silence.kinds or alert.kind in silence.kinds)
            and model_selected(silence.models, alert.model_id)
        ):
            return silence
    return None


def idempotency_key(rule: PlaybookRule, alert: Alert) -> str:
    """`rule:fingerprint:starts_at(ms)`: one firing period of one alert, for one rule. Repeats and
    redeliveries of the alert share it; a new firing period of the same fingerprint does not."""
    return f"{rule.name}:{alert.fingerprint}:{int(alert.starts_at.timestamp() * 1000)}"
