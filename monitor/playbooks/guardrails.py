"""The runner's memory: what it did, when, what is firing and what is approved. No I/O.

Everything here is rebuilt from the audit trail at start (`GuardrailState.restore`), so a
restarted runner keeps its idempotency keys, cooldowns, rollback periods, approvals, pending
rollbacks and its view of firing alerts (for muting). Only the token bucket starts full again.

>>> bucket = TokenBucket(capacity=2, per_seconds=60, now=0.0)
>>> [bucket.take(0.0), bucket.take(0.0), bucket.take(0.0), bucket.take(30.0), bucket.take(30.0)]
[True, True, False, True, False]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from monitor.alerts.lifecycle import MUTED_BY
from monitor.contracts.alert import Alert, AlertKind, AlertStatus
from monitor.contracts.retrain import Approval, Outcome, PlaybookDecision

DONE_OUTCOMES = frozenset({Outcome.started, Outcome.acted, Outcome.failed, Outcome.dry_run})
"""An idempotency key with one of these in the audit trail is never acted on again."""


class TokenBucket:
    """At most `capacity` at once, refilled continuously at `capacity / per_seconds` per second."""

    def __init__(self, capacity: int, per_seconds: float, now: float):
        if capacity <= 0 or per_seconds <= 0:
            raise ValueError("Invalid token bucket: 'capacity' and 'per_seconds' must be positive")
        self.capacity = capacity
        self.rate = capacity / per_seconds
        self.tokens = float(capacity)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class FiringAlert:
    """What muting needs to know of a firing alert."""

    kind: AlertKind
    model_id: str
    feature: str | None


@dataclass(frozen=True, slots=True)
class PendingRollback:
    rule: str
    alert: Alert
    since: float


class GuardrailState:
    """Idempotency keys, last actions, approvals, pending rollbacks and firing alerts."""

    def __init__(self, *, approval_ttl_seconds: float, max_pending: int):
        self.approval_ttl_seconds = approval_ttl_seconds
        self.max_pending = max_pending
        self.done: set[str] = set()
        self.last_action: dict[tuple[str, str], float] = {}
        """(rule, model_id) -> time it last acted (or dry-ran) for that model."""
        self.last_rollback: dict[str, float] = {}
        """model_id -> time of its last rollback, whatever the rule."""
        self.approvals: dict[str, list[tuple[Approval, float]]] = {}
        """fingerprint -> approvals and the time each was received."""
        self.pending: OrderedDict[str, PendingRollback] = OrderedDict()
        """idempotency key -> rollback waiting for approval, oldest first."""
        self.firing: dict[str, FiringAlert] = {}

    # --- firing alerts and muting -------------------------------------------------------------

    def track(self, alert: Alert) -> None:
        if alert.status is AlertStatus.firing:
            self.firing[alert.fingerprint] = FiringAlert(alert.kind, alert.model_id, alert.feature)
        else:
            self.firing.pop(alert.fingerprint, None)
            for key in [k for k, p in self.pending.items() if p.alert.fingerprint == alert.fingerprint]:
                del self.pending[key]

    def muted_by(self, alert: Alert) -> str | None:
        """The fingerprint of a firing cause that mutes this alert (`MUTED_BY`), if any.

        The core does not raise a symptom while its cause fires, but a symptom that fired first
        keeps firing: the runner mutes it here."""
        cause = MUTED_BY.get(alert.kind)
        if cause is None:
            return None
        cause_kind, same_feature = cause
        for fingerprint, firing in self.firing.items():
            if (
                firing.kind is cause_kind
                and firing.model_id == alert.model_id
                and (not same_feature or firing.feature == alert.feature)
            ):
                return fingerprint
        return None

    # --- what was done ------------------------------------------------------------------------

    def cooldown_left(self, rule: str, model_id: str, cooldown: float, now: float) -> float:
        last = self.last_action.get((rule, model_id))
        return 0.0 if last is None else max(0.0, last + cooldown - now)

    def rollback_period_left(self, model_id: str, period: float, now: float) -> float:
        last = self.last_rollback.get(model_id)
        return 0.0 if last is None else max(0.0, last + period - now)

    def mark(self, key: str, rule: str, model_id: str, now: float, *, rollback: bool) -> None:
        self.done.add(key)
        self.last_action[(rule, model_id)] = now
        if rollback:
            self.last_rollback[model_id] = now
        self.pending.pop(key, None)

    # --- approvals ----------------------------------------------------------------------------

    def add_approval(self, approval: Approval, now: float) -> None:
        kept = [(a, t) for a, t in self.approvals.get(approval.fingerprint, []) if self._valid(a, t, now)]
        self.approvals[approval.fingerprint] = [*kept, (approval, now)]

    def _valid(self, approval: Approval, received: float, now: float) -> bool:
        if approval.expires_at is not None:
            return now < approval.expires_at.timestamp()
        return now < received + self.approval_ttl_seconds

    def approval_for(self, alert: Alert, now: float) -> Approval | None:
        for approval, received in self.approvals.get(alert.fingerprint, []):
            if self._valid(approval, received, now) and approval.alert_id in (None, alert.alert_id):
                return approval
        return None

    def add_pending(self, key: str, rule: str, alert: Alert, now: float) -> PendingRollback | None:
        """Remember a rollback waiting for approval; the one dropped to stay under the cap, if any."""
        self.pending[key] = PendingRollback(rule, alert, self.pending[key].since if key in self.pending else now)
        self.pending.move_to_end(key)
        if len(self.pending) > self.max_pending:
            return self.pending.popitem(last=False)[1]
        return None

    def pending_for(self, fingerprint: str) -> list[tuple[str, PendingRollback]]:
        return [(key, p) for key, p in self.pending.items() if p.alert.fingerprint == fingerprint]

    # --- restart ------------------------------------------------------------------------------

    def restore(self, decisions: Iterable[PlaybookDecision]) -> None:
        """Replay an audit trail, oldest first."""
        for decision in decisions:
            now = decision.time.timestamp()
            if decision.fingerprint is not None and decision.alert_status is not None and decision.kind is not None:
                if decision.alert_status is AlertStatus.firing:
                    self.firing[decision.fingerprint] = FiringAlert(
                        decision.kind, decision.model_id or "", decision.feature
                    )
                else:
                    self.firing.pop(decision.fingerprint, None)
                    for key in [k for k, p in self.pending.items() if p.alert.fingerprint == decision.fingerprint]:
                        del self.pending[key]
            key = decision.idempotency_key
            if key is not None and decision.outcome in DONE_OUTCOMES:
                self.done.add(key)
                self.pending.pop(key, None)
                if decision.outcome in (Outcome.started, Outcome.dry_run) and decision.rule and decision.model_id:
                    self.last_action[(decision.rule, decision.model_id)] = now
                    if decision.outcome is Outcome.started and decision.action == "rollback":
                        self.last_rollback[decision.model_id] = now
            elif decision.outcome is Outcome.awaiting_approval and key and decision.alert and decision.rule:
                if key not in self.done:
                    self.add_pending(key, decision.rule, decision.alert, now)
            elif decision.outcome is Outcome.approval_recorded and "approval" in decision.inputs:
                self.add_approval(Approval.model_validate(decision.inputs["approval"]), now)
