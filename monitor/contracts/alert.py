"""The alert contract: what Driftline publishes on the `alerts` topic.

Retraining systems and the playbook runner subscribe to it, so it is versioned and changes are
additive only (`ALERT_SCHEMA_VERSION`). Its shape follows Alertmanager: an alert's identity is
its `fingerprint` (a hash of kind, model, feature and slice); it fires, repeats while active and
resolves; every alert carries the `evidence` a person needs to judge it and a `runbook_url`
whose last part is its kind, the name of a page in `runbooks/`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ALERT_SCHEMA_VERSION = "1.1"
"""Version of the alert contract this code writes. A consumer reads every minor version of the
major it knows. 1.1 added the `attribution_drift` kind, and `slice` on `feature_drift` and
`prediction_drift` alerts (drift per slice)."""

JsonScalar = bool | int | float | str | None
EvidenceDetail = JsonScalar | list[JsonScalar] | list[list[JsonScalar]]


class AlertKind(StrEnum):
    """Every kind of alert the core raises; each has a page `runbooks/<kind>.md`."""

    data_quality = "data_quality"
    feature_drift = "feature_drift"
    prediction_drift = "prediction_drift"
    multivariate_drift = "multivariate_drift"
    performance_degradation = "performance_degradation"
    estimated_performance_drop = "estimated_performance_drop"
    canary_regression = "canary_regression"
    slice_regression = "slice_regression"
    serving_degradation = "serving_degradation"
    labels_missing = "labels_missing"
    attribution_drift = "attribution_drift"


class AlertStatus(StrEnum):
    firing = "firing"
    resolved = "resolved"


class Severity(StrEnum):
    """Routing hint: `critical` pages someone, `warning` goes to a queue, `info` to a dashboard."""

    critical = "critical"
    warning = "warning"
    info = "info"


class Evidence(BaseModel):
    """Why the alert fired: the test, its score against the threshold actually applied, and the
    data it looked at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: str = Field(description="Registered name of the detector or rule that decided.")
    score: float = Field(description="The statistic the decision was made on.")
    threshold: float = Field(description="The threshold actually applied (after calibration).")
    window_start: AwareDatetime | None = Field(None, description="Event time of the first event looked at.")
    window_end: AwareDatetime | None = Field(None, description="Event time of the last event looked at.")
    reference_size: int | None = Field(None, ge=0, description="Events in the reference it was compared with.")
    current_size: int | None = Field(None, ge=0, description="Events in the current window or run.")
    reference_version: str | None = Field(None, description="Content hash of the reference profile.")
    settings_hash: str = Field(description="Hash of the detector settings, to tell configurations apart.")
    details: dict[str, EvidenceDetail] = Field(
        default_factory=dict,
        description="Detector-specific numbers, e.g. metric before and after, histograms.",
    )


class Alert(BaseModel):
    """One state change of one alert: it fired, is still firing (a repeat), or resolved."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: str = Field(ALERT_SCHEMA_VERSION, description="Alert contract version.")
    alert_id: Annotated[str, Field(min_length=1)] = Field(
        description="Unique per firing period: the fingerprint and the time it started."
    )
    fingerprint: str = Field(description="Stable hash of the identifying labels (kind, model, feature, slice).")
    kind: AlertKind
    status: AlertStatus
    severity: Severity
    model_id: str
    model_version: str = Field(description="Version the evidence is about, or `all` for every version.")
    feature: str | None = Field(None, description="Feature the alert is about; null for model-level alerts.")
    slice: str | None = Field(None, description="Slice as `name=value`; null when about all traffic.")
    starts_at: AwareDatetime = Field(description="Event time the alert started firing.")
    ends_at: AwareDatetime | None = Field(None, description="Event time it resolved; null while firing.")
    summary: str = Field(description="One sentence for a person.")
    runbook_url: str = Field(description="Runbook page; its last path segment is `kind`.")
    evidence: Evidence


def fingerprint(kind: str, model_id: str, feature: str | None, slice_: str | None) -> str:
    """Stable identity of an alert, like Alertmanager's label-set fingerprint.

    >>> fingerprint("feature_drift", "fraud", "amount", None)
    'd43adb682f8cd932'
    """
    labels = f"kind={kind}\x1fmodel_id={model_id}\x1ffeature={feature or ''}\x1fslice={slice_ or ''}"
    return hashlib.sha256(labels.encode()).hexdigest()[:16]


def alert_id(fingerprint_: str, starts_at: datetime) -> str:
    """Id of one firing period of an alert: repeats and the resolution share it."""
    return f"{fingerprint_}-{int(starts_at.timestamp() * 1000)}"
