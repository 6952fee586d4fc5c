"""From findings to alerts, the way Alertmanager treats them.

An alert's identity is its fingerprint (kind, model, feature, slice). The first active finding
fires it; further active findings are absorbed, except that the alert is sent again once
`repeat_interval_seconds` of event time have passed since it was last sent; after
`resolve_after_clean_windows` consecutive clean checks it resolves. A cause mutes its symptoms
(`MUTED_BY`): while a data-quality alert fires on a feature, drift on that feature is not raised,
because broken data explains it. Likewise an alert on one slice (`country=DE`) is not raised while
the same alert on all traffic fires: a change everywhere is the all-traffic alert's to report.

>>> from datetime import datetime, timedelta, UTC
>>> from monitor.contracts.alert import AlertKind, Evidence
>>> from monitor.contracts.config import AlertingConfig
>>> from monitor.core.finding import Finding
>>> lifecycle = AlertLifecycle(AlertingConfig(resolve_after_clean_windows=2))
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> evidence = Evidence(detector="ks", score=0.2, threshold=0.1, settings_hash="abc")
>>> def check(active, minutes):
...     finding = Finding(AlertKind.feature_drift, "fraud", "amount", None, active, t0 + timedelta(minutes=minutes),
...                       evidence=evidence if active else None, summary="amount drifted")
...     return [(a.status.value, a.starts_at.minute) for a in lifecycle.process([finding])]
>>> check(True, 0), check(True, 1), check(False, 2), check(False, 3), check(False, 4)
([('firing', 0)], [], [], [('resolved', 0)], [])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.contracts.alert import Alert, AlertKind, AlertStatus, alert_id, fingerprint
from monitor.contracts.config import AlertingConfig
from monitor.core.finding import Finding

MUTED_BY: dict[AlertKind, tuple[AlertKind, bool]] = {
    AlertKind.feature_drift: (AlertKind.data_quality, True),
    AlertKind.prediction_drift: (AlertKind.data_quality, True),
    AlertKind.estimated_performance_drop: (AlertKind.performance_degradation, False),
    AlertKind.performance_degradation: (AlertKind.labels_missing, False),
}
"""symptom kind -> (cause kind, same feature required). The cause, while firing for the same
model (and feature, where required), mutes the symptom."""


@dataclass
class ActiveAlert:
    alert: Alert
    last_sent: datetime
    clean_checks: int = 0


class AlertLifecycle:
    """Fire, repeat, resolve and mute, for the alerts of one model (or many: keys include the model)."""

    def __init__(self, config: AlertingConfig):
        self.config = config
        self.active: dict[str, ActiveAlert] = {}
        self.muted = Counter[str]()
        """Active findings not raised because their cause was firing, by kind."""

    def process(self, findings: Iterable[Finding]) -> list[Alert]:
        """Alerts to publish for these findings, in order."""
        return [alert for finding in findings if (alert := self.process_one(finding)) is not None]

    def process_one(self, finding: Finding) -> Alert | None:
        """The alert this finding fires, repeats or resolves, if any."""
        key = fingerprint(finding.kind, finding.model_id, finding.feature, finding.slice)
        current = self.active.get(key)
        if finding.active:
            if current is None:
                if self._is_muted(finding):
                    self.muted[finding.kind.value] += 1
                    return None
                alert = self._new_alert(key, finding)
                self.active[key] = ActiveAlert(alert, finding.at)
                return alert
            current.clean_checks = 0
            if (finding.at - current.last_sent).total_seconds() < self.config.repeat_interval_seconds:
                return None
            current.alert = current.alert.model_copy(update=self._content(finding))
            current.last_sent = finding.at
            return current.alert
        if current is None:
            return None
        current.clean_checks += 1
        if current.clean_checks < self.config.resolve_after_clean_windows:
            return None
        del self.active[key]
        return current.alert.model_copy(update={"status": AlertStatus.resolved, "ends_at": finding.at})

    def _is_muted(self, finding: Finding) -> bool:
        if finding.slice is not None:
            all_traffic = fingerprint(finding.kind, finding.model_id, finding.feature, None)
            if all_traffic in self.active:
                return True
        cause = MUTED_BY.get(finding.kind)
        if cause is None:
            return False
        cause_kind, same_feature = cause
        return any(
            active.alert.kind is cause_kind
            and active.alert.model_id == finding.model_id
            and (not same_feature or active.alert.feature == finding.feature)
            for active in self.active.values()
        )

    def _content(self, finding: Finding) -> dict[str, Any]:
        return {
            "summary": finding.summary,
            "evidence": finding.evidence,
            "model_version": finding.model_version,
        }

    def _new_alert(self, key: str, finding: Finding) -> Alert:
        if finding.evidence is None:
            raise ValueError(f"active finding {finding.key} carries no evidence")
        return Alert(
            alert_id=alert_id(key, finding.at),
            fingerprint=key,
            kind=finding.kind,
            status=AlertStatus.firing,
            severity=self.config.severity[finding.kind],
            model_id=finding.model_id,
            feature=finding.feature,
            slice=finding.slice,
            starts_at=finding.at,
            runbook_url=f"{self.config.runbook_base_url.rstrip('/')}/{finding.kind.value}.md",
            **self._content(finding),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "active": {
                key: {
                    "alert": a.alert.model_dump(mode="json"),
                    "last_sent": a.last_sent.isoformat(),
                    "clean_checks": a.clean_checks,
                }
                for key, a in self.active.items()
            },
            "muted": dict(self.muted),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.active = {
            key: ActiveAlert(
                Alert.model_validate(a["alert"]), datetime.fromisoformat(a["last_sent"]), a["clean_checks"]
            )
            for key, a in state["active"].items()
        }
        self.muted = Counter(state["muted"])
