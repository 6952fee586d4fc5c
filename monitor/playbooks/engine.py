"""The decision logic of the playbook runner, in plain Python: no Kafka, a clock passed in.

For each alert, in this order (the first that applies decides, and every decision is audited):

1. bytes that are not an `Alert` -> `skipped: invalid alert: <reason>`;
2. resolved -> `skipped` (and pending rollbacks of that fingerprint are dropped);
3. muted: a firing cause (`MUTED_BY`: data quality mutes drift on its feature, ...) or a
   configured silence -> `skipped`;
4. no enabled rule matches kind, severity and model -> `skipped: no matching rule`;
5. then per matching rule: firing too briefly (`min_firing_seconds`, event time) -> `skipped`;
   already handled this firing period (idempotency key `rule:fingerprint:starts_at`) -> `skipped`;
   the rule's per-model cooldown -> `skipped`; a rollback within the model's rollback period ->
   `skipped`; a rollback without approval -> `awaiting_approval` (acted on when the approval
   arrives); dry-run (the rule's default, or the kill switch) -> `dry_run` with the exact plan;
   no token in the global rate limit -> `skipped`; otherwise `started`, then `acted`, or
   `retried` with exponential backoff and finally `failed`.

A dry run goes through the same checks and records the idempotency key and the rule's cooldown
(so its trail shows when the rule would have acted) but takes no rate-limit token and no
rollback period: those budgets belong to real actions. `failed` is final for that firing
period: a possibly half-done action (a rollback that timed out) is not tried again by itself.

>>> from pathlib import Path
>>> import tempfile
>>> from monitor.contracts.config import PlaybooksConfig, TopicsConfig
>>> from monitor.playbooks.audit import AuditTrail
>>> audit = AuditTrail(Path(tempfile.mkdtemp()) / "audit.jsonl")
>>> engine = PlaybookEngine(PlaybooksConfig(), TopicsConfig(), executor=None, audit=audit)
>>> [(d.outcome.value, d.reason) for d in engine.handle_alert_bytes(b"not json")]
[('skipped', "invalid alert: event: invalid JSON: expected ident at line 1 column 2, got b'not json'")]
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from monitor.contracts.alert import Alert, AlertStatus
from monitor.contracts.config import PlaybookRule, PlaybooksConfig, RollbackAction, TopicsConfig
from monitor.contracts.retrain import Approval, Outcome, PlaybookDecision
from monitor.contracts.validation import format_validation_error
from monitor.playbooks.actions import ActionError, ActionPlan, PlanError, build_plan
from monitor.playbooks.audit import AuditTrail
from monitor.playbooks.guardrails import GuardrailState, TokenBucket
from monitor.playbooks.rules import firing_seconds, idempotency_key, rule_matches, silenced_by

log = logging.getLogger(__name__)


class Executor(Protocol):
    def execute(self, plan: ActionPlan) -> dict[str, Any]:
        """Takes a plan. Returns a JSON-safe result; raises `ActionError`."""


OnDecision = Callable[[PlaybookDecision], None]


def _invalid_reason(raw: bytes, exc: ValidationError) -> str:
    text = format_validation_error(exc)
    return text if len(text) <= 300 else text[:297] + "..."


class PlaybookEngine:
    """Alerts and approvals in, decisions out (each appended to the audit trail and passed to
    `on_decision`). Never raises on its input."""

    def __init__(
        self,
        config: PlaybooksConfig,
        topics: TopicsConfig,
        executor: Executor | None,
        audit: AuditTrail,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_decision: OnDecision | None = None,
    ):
        self.config = config
        self.topics = topics
        self.executor = executor
        self.audit = audit
        self.clock = clock
        self.sleep = sleep
        self.on_decision = on_decision
        self.rules = {rule.name: rule for rule in config.rules}
        self.bucket = TokenBucket(config.rate_limit.actions, config.rate_limit.per_seconds, clock())
        self.state = GuardrailState(
            approval_ttl_seconds=config.approval_ttl_seconds, max_pending=config.max_pending_approvals
        )
        self.state.restore(audit.read())
        self.outcomes = Counter[str]()
        """Decisions so far by outcome (this process only)."""

    # --- inputs -------------------------------------------------------------------------------

    def handle_alert_bytes(self, raw: bytes, source: str | None = None) -> list[PlaybookDecision]:
        try:
            alert = Alert.model_validate_json(raw)
        except ValidationError as exc:
            return [self._record(Outcome.skipped, f"invalid alert: {_invalid_reason(raw, exc)}", source=source)]
        return self.handle_alert(alert, source)

    def handle_alert(self, alert: Alert, source: str | None = None) -> list[PlaybookDecision]:
        try:
            return self._handle_alert(alert, source)
        except Exception as exc:  # a bug must not stop the runner; it is audited and logged
            log.exception("alert %s", alert.alert_id)
            return [self._record(Outcome.failed, "internal error", alert=alert, error=repr(exc), source=source)]

    def handle_approval_bytes(self, raw: bytes, source: str | None = None) -> list[PlaybookDecision]:
        try:
            approval = Approval.model_validate_json(raw)
        except ValidationError as exc:
            return [self._record(Outcome.skipped, f"invalid approval: {_invalid_reason(raw, exc)}", source=source)]
        try:
            return self._handle_approval(approval, source)
        except Exception as exc:
            log.exception("approval %s", approval.fingerprint)
            return [self._record(Outcome.failed, "internal error", error=repr(exc), source=source)]

    # --- the flow -----------------------------------------------------------------------------

    def _handle_alert(self, alert: Alert, source: str | None) -> list[PlaybookDecision]:
        self.state.track(alert)
        if alert.status is AlertStatus.resolved:
            return [self._record(Outcome.skipped, "resolved alert", alert=alert, source=source)]
        cause = self.state.muted_by(alert)
        if cause is not None:
            return [self._record(Outcome.skipped, f"muted by firing alert {cause}", alert=alert, source=source)]
        silence = silenced_by(self.config.silences, alert, self._now())
        if silence is not None:
            reason = f"silenced until {silence.ends_at.isoformat()}: {silence.comment}"
            return [self._record(Outcome.skipped, reason, alert=alert, source=source)]
        rules = [rule for rule in self.config.rules if rule_matches(rule, alert)]
        if not rules:
            return [self._record(Outcome.skipped, "no matching rule", alert=alert, source=source)]
        decisions: list[PlaybookDecision] = []
        for rule in rules:
            decisions += self._apply(rule, alert, source)
        return decisions

    def _handle_approval(self, approval: Approval, source: str | None) -> list[PlaybookDecision]:
        now = self.clock()
        self.state.add_approval(approval, now)
        decisions = [
            self._record(
                Outcome.approval_recorded,
                f"approved by {approval.approved_by}",
                fingerprint=approval.fingerprint,
                alert_id=approval.alert_id,
                inputs={"approval": approval.model_dump(mode="json")},
                source=source,
            )
        ]
        for key, pending in self.state.pending_for(approval.fingerprint):
            rule = self.rules.get(pending.rule)
            if rule is None or not rule_matches(rule, pending.alert):
                self.state.pending.pop(key, None)
                continue
            if self.state.approval_for(pending.alert, now) is not None:
                decisions += self._apply(rule, pending.alert, source)
        return decisions

    def _apply(self, rule: PlaybookRule, alert: Alert, source: str | None) -> list[PlaybookDecision]:
        action = rule.action
        key = idempotency_key(rule, alert)
        now = self.clock()
        common: dict[str, Any] = {"alert": alert, "rule": rule, "key": key, "source": source}

        def skip(reason: str) -> list[PlaybookDecision]:
            return [self._record(Outcome.skipped, reason, **common)]

        firing = firing_seconds(alert)
        if firing < rule.min_firing_seconds:
            return skip(f"firing for {firing:.0f} s, rule needs {rule.min_firing_seconds:.0f} s")
        if key in self.state.done:
            return skip("already handled for this firing period")
        cooldown = self.state.cooldown_left(rule.name, alert.model_id, rule.cooldown_seconds, now)
        if cooldown > 0:
            return skip(f"cooldown: {cooldown:.0f} s left for model {alert.model_id}")
        is_rollback = isinstance(action, RollbackAction)
        if is_rollback:
            period = self.state.rollback_period_left(alert.model_id, action.once_per_model_seconds, now)
            if period > 0:
                return skip(f"rolled back recently: next rollback of {alert.model_id} allowed in {period:.0f} s")
        try:
            plan = build_plan(rule, alert, self.topics, self._now())
        except PlanError as exc:
            self.state.mark(key, rule.name, alert.model_id, now, rollback=False)
            return [self._record(Outcome.failed, "cannot build the action", error=str(exc), **common)]
        inputs = plan.describe()
        approved_by = None
        if is_rollback and action.approval == "required":
            approval = self.state.approval_for(alert, now)
            if approval is None:
                dropped = self.state.add_pending(key, rule.name, alert, now)
                decisions = [
                    self._record(
                        Outcome.awaiting_approval,
                        f"rollback needs an approval of fingerprint {alert.fingerprint} on {self.topics.approvals}",
                        inputs=inputs,
                        keep_alert=True,
                        **common,
                    )
                ]
                if dropped is not None:
                    decisions.append(
                        self._record(
                            Outcome.skipped,
                            "dropped: too many rollbacks awaiting approval",
                            alert=dropped.alert,
                            rule=self.rules.get(dropped.rule),
                            key=None,
                            source=None,
                        )
                    )
                return decisions
            approved_by = approval.approved_by
        if approved_by is not None:
            inputs["approved_by"] = approved_by
        dry = self._dry_run_reason(rule)
        if dry is not None:
            self.state.mark(key, rule.name, alert.model_id, now, rollback=False)
            return [self._record(Outcome.dry_run, dry, inputs=inputs, **common)]
        if not self.bucket.take(now):
            limit = self.config.rate_limit
            return skip(f"rate limited: {limit.actions} actions per {limit.per_seconds:g} s")
        self.state.mark(key, rule.name, alert.model_id, now, rollback=is_rollback)
        decisions = [self._record(Outcome.started, "acting", inputs=inputs, **common)]
        return decisions + self._execute(plan, inputs, common)

    def _execute(self, plan: ActionPlan, inputs: dict[str, Any], common: dict[str, Any]) -> list[PlaybookDecision]:
        retry = self.config.retry
        backoff = retry.backoff_seconds
        decisions = []
        for attempt in range(1, retry.attempts + 1):
            try:
                if self.executor is None:
                    raise ActionError("no executor", retryable=False)
                result = self.executor.execute(plan)
            except ActionError as exc:
                if exc.retryable and attempt < retry.attempts:
                    decisions.append(
                        self._record(
                            Outcome.retried,
                            f"try {attempt} failed, next in {backoff:g} s",
                            inputs=inputs,
                            error=str(exc),
                            attempt=attempt,
                            **common,
                        )
                    )
                    self.sleep(backoff)
                    backoff = min(backoff * 2, retry.max_backoff_seconds)
                    continue
                why = f"gave up after {attempt} tries" if exc.retryable else "not retryable"
                decisions.append(
                    self._record(Outcome.failed, why, inputs=inputs, error=str(exc), attempt=attempt, **common)
                )
                return decisions
            except Exception as exc:
                log.exception("action %s", plan.action)
                decisions.append(
                    self._record(
                        Outcome.failed, "internal error", inputs=inputs, error=repr(exc), attempt=attempt, **common
                    )
                )
                return decisions
            acted = self._record(Outcome.acted, "done", inputs=inputs, result=result, attempt=attempt, **common)
            decisions.append(acted)
            return decisions
        return decisions  # pragma: no cover - the loop always returns

    def _dry_run_reason(self, rule: PlaybookRule) -> str | None:
        if self.config.dry_run:
            return "kill switch: playbooks.dry_run is set"
        switch = self.config.kill_switch_file
        if switch is not None and switch.exists():
            return f"kill switch: {switch} exists"
        if rule.dry_run:
            return "rule is dry-run (set dry_run: false to act)"
        return None

    # --- the record ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _record(
        self,
        outcome: Outcome,
        reason: str,
        *,
        alert: Alert | None = None,
        rule: PlaybookRule | None = None,
        key: str | None = None,
        keep_alert: bool = False,
        **fields: Any,
    ) -> PlaybookDecision:
        if alert is not None:
            fields.setdefault("alert_id", alert.alert_id)
            fields.setdefault("fingerprint", alert.fingerprint)
            fields.update(
                kind=alert.kind,
                model_id=alert.model_id,
                model_version=alert.model_version,
                feature=alert.feature,
                alert_status=alert.status,
            )
        if rule is not None:
            fields.update(rule=rule.name, action=rule.action.type)
        decision = PlaybookDecision(
            time=self._now(),
            outcome=outcome,
            reason=reason,
            idempotency_key=key,
            alert=alert if keep_alert else None,
            **fields,
        )
        self.outcomes[outcome.value] += 1
        self.audit.append(decision)
        if self.on_decision is not None:
            try:
                self.on_decision(decision)
            except Exception:
                log.exception("on_decision callback")
        return decision
