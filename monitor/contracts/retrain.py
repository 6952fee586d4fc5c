"""Contracts of the playbook runner's topics: what it asks for, what it reads, what it records.

- `RetrainRequest` on `retrain-requests`: retrain this model, because of this alert (with its
  evidence), on this window of data. Retraining systems subscribe to it.
- `ReviewRequest` on `review-requests`: a person should look at this alert (runbook link inside).
- `Approval` on `driftline-approvals`: a person approves a rollback for an alert fingerprint.
- `PlaybookDecision` on `driftline-audit` and in the audit JSONL file: one decision of the runner.

Like the alert, each is versioned and changes are additive only.

>>> from datetime import UTC, datetime
>>> approval = Approval.model_validate_json(b'{"fingerprint": "d43adb682f8cd932", "approved_by": "alice"}')
>>> approval.alert_id is None, approval.schema_version
(True, '1.0')
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from monitor.contracts.alert import Alert, AlertKind, AlertStatus

PLAYBOOK_SCHEMA_VERSION = "1.0"
"""Version of the playbook contracts this code writes."""


class _Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DataWindow(_Contract):
    """Event-time window of the data to train on."""

    start: AwareDatetime
    end: AwareDatetime


class RetrainRequest(_Contract):
    """Retrain `model_id` on `data_window`, because of `alert` (its evidence says what changed)."""

    schema_version: str = Field(PLAYBOOK_SCHEMA_VERSION, description="Playbook contract version.")
    request_id: str = Field(description="Stable per rule and alert firing period: a consumer can deduplicate on it.")
    requested_at: AwareDatetime
    rule: str = Field(description="The playbook rule that asked.")
    model_id: str
    model_version: str = Field(description="Version the evidence is about, or `all`.")
    kind: AlertKind
    reason: str = Field(description="The alert's summary.")
    data_window: DataWindow
    alert: Alert = Field(description="The alert, with its evidence (score, threshold, windows, reference).")


class ReviewRequest(_Contract):
    """A person should look at `alert`; `runbook_url` says how."""

    schema_version: str = Field(PLAYBOOK_SCHEMA_VERSION, description="Playbook contract version.")
    request_id: str
    requested_at: AwareDatetime
    rule: str
    model_id: str
    kind: AlertKind
    summary: str
    runbook_url: str
    alert: Alert


class Approval(_Contract):
    """A person approves rollbacks for one alert fingerprint (one firing period if `alert_id` is set)."""

    schema_version: str = Field(PLAYBOOK_SCHEMA_VERSION, description="Playbook contract version.")
    fingerprint: Annotated[str, Field(min_length=1)]
    alert_id: str | None = Field(None, description="Only this firing period; null for any of the fingerprint.")
    approved_by: Annotated[str, Field(min_length=1)]
    expires_at: AwareDatetime | None = Field(None, description="Null: the runner's `approval_ttl_seconds`.")
    comment: str = ""


class Outcome(StrEnum):
    """What the runner decided or did."""

    acted = "acted"
    """The action succeeded."""
    dry_run = "dry_run"
    """The action would have run; `inputs` says exactly what it would have sent."""
    skipped = "skipped"
    """Nothing done; `reason` says why (no rule, resolved, muted, cooldown, rate limit, ...)."""
    awaiting_approval = "awaiting_approval"
    """A rollback waits for an `Approval` of the fingerprint."""
    started = "started"
    """Written before the first try: after a crash the action counts as done (at most once)."""
    retried = "retried"
    """A try failed and another follows; `error` says why."""
    failed = "failed"
    """Every try failed (or the failure cannot be retried); `error` says why."""
    approval_recorded = "approval_recorded"
    """An approval arrived."""


class PlaybookDecision(_Contract):
    """One line of the audit trail."""

    schema_version: str = Field(PLAYBOOK_SCHEMA_VERSION, description="Playbook contract version.")
    time: AwareDatetime = Field(description="Wall-clock time of the decision.")
    outcome: Outcome
    reason: str = ""
    rule: str | None = None
    action: str | None = None
    alert_id: str | None = None
    fingerprint: str | None = None
    kind: AlertKind | None = None
    model_id: str | None = None
    model_version: str | None = None
    feature: str | None = None
    alert_status: AlertStatus | None = None
    idempotency_key: str | None = Field(None, description="`rule:fingerprint:starts_at`; acted on at most once.")
    attempt: int | None = None
    inputs: dict[str, Any] = Field(default_factory=dict, description="What was (or would be) sent; no secrets.")
    result: dict[str, Any] = Field(default_factory=dict, description="What came back: status, offsets, exit code.")
    error: str | None = None
    source: str | None = Field(None, description="Where the input came from: `topic/partition/offset`.")
    alert: Alert | None = Field(None, description="The alert, on `awaiting_approval` records (restored at start).")
