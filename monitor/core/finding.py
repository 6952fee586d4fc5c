"""`Finding`: what a check concluded about one window or one event, before the alert lifecycle.

Detectors and evaluators produce findings; `monitor.alerts.lifecycle` turns them into alerts
(fire once, repeat, resolve, mute). Keeping the two apart lets every check stay a pure function
of its data, while deduplication and muting live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.contracts.alert import AlertKind, Evidence


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition found (`active=True`) or checked and absent (`active=False`) for one alert key.

    Absent findings matter: an alert resolves after enough consecutive clean checks."""

    kind: AlertKind
    model_id: str
    feature: str | None
    slice: str | None
    active: bool
    at: datetime
    """Event time of the event or window end that decided it."""
    model_version: str = "all"
    evidence: Evidence | None = None
    """Required when active."""
    summary: str = ""
    offset: int | None = None
    """Input position (file line or Kafka offset) of the event whose processing decided it."""

    @property
    def key(self) -> tuple[str, str, str | None, str | None]:
        return (self.kind.value, self.model_id, self.feature, self.slice)
