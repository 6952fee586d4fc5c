"""Actions: what a rule does, first as a plan (pure data, audited as is), then executed.

`build_plan` turns a rule and an alert into an `ActionPlan`: the exact request, command or
message. Targets come from the configuration only; alert fields fill `{placeholders}` in a URL
path or query (URL-quoted) or in command arguments (no shell, and never as an option). Secret
header values are read from the environment at execution time, so plans and the audit trail
never hold them.

`ActionExecutor.execute(plan)` runs a plan. Takes an `ActionPlan`. Returns a JSON-safe result, or
raises `ActionError` (with `retryable`).

>>> from datetime import UTC, datetime
>>> from monitor.contracts.alert import Alert, Evidence
>>> from monitor.contracts.config import PlaybookRule, TopicsConfig
>>> alert = Alert(alert_id="fp-1", fingerprint="fp", kind="performance_degradation", status="firing",
...               severity="critical", model_id="fraud/../admin", model_version="v3",
...               starts_at=datetime(2026, 1, 1, tzinfo=UTC), summary="s", runbook_url="r",
...               evidence=Evidence(detector="cusum", score=9.0, threshold=5.0, settings_hash="h"))
>>> rule = PlaybookRule(name="rb", kinds=["performance_degradation"], action={"type": "rollback",
...     "http": {"url": "https://models.internal/v1/{model_id}/rollback?to={target_version}"}})
>>> build_plan(rule, alert, TopicsConfig(), datetime(2026, 1, 1, tzinfo=UTC)).url
'https://models.internal/v1/fraud%2F..%2Fadmin/rollback?to=previous'
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from monitor.contracts.alert import Alert
from monitor.contracts.config import (
    HumanReviewAction,
    NotifyAction,
    PlaybookHttp,
    PlaybookRule,
    RetrainAction,
    RollbackAction,
    TopicsConfig,
)
from monitor.contracts.retrain import DataWindow, RetrainRequest, ReviewRequest
from monitor.playbooks.rules import idempotency_key

_RESPONSE_KEPT = 500
"""Characters of a response body or command output kept in the audit trail."""


class ActionError(Exception):
    """An action failed. `retryable`: a later try may succeed (timeouts, 5xx, 429, exit codes)."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class PlanError(ValueError):
    """The plan cannot be built from this alert (e.g. a value that would be an option)."""


@dataclass(frozen=True)
class ActionPlan:
    """Exactly what an action will do; `describe()` is what the audit trail records."""

    action: str
    channel: Literal["http", "command", "topic"]
    http: PlaybookHttp | None = None
    url: str | None = None
    argv: tuple[str, ...] | None = None
    timeout_seconds: float = 10.0
    topic: str | None = None
    key: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        if self.channel == "http":
            assert self.http is not None
            return {
                "channel": "http",
                "method": self.http.method,
                "url": self.url,
                "headers": sorted({**self.http.headers, **self.http.headers_from_env}),
                "body": self.payload,
            }
        if self.channel == "command":
            return {"channel": "command", "argv": list(self.argv or ())}
        return {"channel": "topic", "topic": self.topic, "key": self.key, "value": self.payload}


def template_values(alert: Alert, target_version: str | None = None) -> dict[str, str]:
    return {
        "alert_id": alert.alert_id,
        "fingerprint": alert.fingerprint,
        "kind": alert.kind.value,
        "model_id": alert.model_id,
        "model_version": alert.model_version,
        "severity": alert.severity.value,
        "target_version": target_version or "",
    }


def fill_url(template: str, values: Mapping[str, str]) -> str:
    """Placeholders URL-quoted (a `/`, `?` or `#` in a value stays inside its path segment)."""
    return template.format(**{name: quote(value, safe="") for name, value in values.items()})


def fill_argv(template: list[str], values: Mapping[str, str]) -> tuple[str, ...]:
    """Each argument filled on its own; one that would start with `-` only because of an alert
    value is refused (it would be read as an option)."""
    argv = []
    for argument in template:
        filled = argument.format(**values)
        if filled.startswith("-") and not argument.startswith("-") or "\x00" in filled:
            raise PlanError(f"refusing command argument {filled!r} built from alert content")
        argv.append(filled)
    return tuple(argv)


def _http_plan(action: str, http: PlaybookHttp, values: Mapping[str, str], payload: dict[str, Any]) -> ActionPlan:
    return ActionPlan(
        action, "http", http=http, url=fill_url(http.url, values), timeout_seconds=http.timeout_seconds, payload=payload
    )


def data_window(alert: Alert, seconds: float) -> DataWindow:
    """`seconds` of event time ending where the alert's evidence ends (or where it started)."""
    end = alert.evidence.window_end or alert.starts_at
    return DataWindow(start=end - timedelta(seconds=seconds), end=end)


def build_plan(rule: PlaybookRule, alert: Alert, topics: TopicsConfig, now: datetime) -> ActionPlan:
    """The plan of `rule.action` for `alert`, at wall-clock time `now`."""
    action = rule.action
    request_id = idempotency_key(rule, alert)
    alert_json = alert.model_dump(mode="json")
    if isinstance(action, RollbackAction):
        target = action.target_versions.get(alert.model_id, action.target_version)
        values = template_values(alert, target)
        if action.command is not None:
            argv = fill_argv(action.command, values)
            return ActionPlan("rollback", "command", argv=argv, timeout_seconds=action.command_timeout_seconds)
        assert action.http is not None
        body = {
            "model_id": alert.model_id,
            "from_version": alert.model_version,
            "to_version": target,
            "alert_id": alert.alert_id,
            "fingerprint": alert.fingerprint,
            "request_id": request_id,
            "reason": alert.summary,
        }
        return _http_plan("rollback", action.http, values, body)
    values = template_values(alert)
    if isinstance(action, RetrainAction):
        request = RetrainRequest(
            request_id=request_id,
            requested_at=now,
            rule=rule.name,
            model_id=alert.model_id,
            model_version=alert.model_version,
            kind=alert.kind,
            reason=alert.summary,
            data_window=data_window(alert, action.training_window_seconds),
            alert=alert,
        ).model_dump(mode="json")
        if action.webhook is not None:
            return _http_plan("retrain", action.webhook, values, request)
        return ActionPlan("retrain", "topic", topic=topics.retrain_requests, key=alert.model_id, payload=request)
    if isinstance(action, HumanReviewAction):
        request = ReviewRequest(
            request_id=request_id,
            requested_at=now,
            rule=rule.name,
            model_id=alert.model_id,
            kind=alert.kind,
            summary=alert.summary,
            runbook_url=alert.runbook_url,
            alert=alert,
        ).model_dump(mode="json")
        if action.webhook is not None:
            return _http_plan("human_review", action.webhook, values, request)
        return ActionPlan("human_review", "topic", topic=topics.review_requests, key=alert.model_id, payload=request)
    if isinstance(action, NotifyAction):
        payload = {"rule": rule.name, "request_id": request_id, "runbook_url": alert.runbook_url, "alert": alert_json}
        return _http_plan("notify", action.webhook, values, payload)
    raise PlanError(f"unknown action {action!r}")  # pragma: no cover - the config union is closed


PublishAndWait = Callable[[str, bytes | None, bytes], dict[str, Any]]
"""Takes a topic, key and value. Returns where the record landed once the broker acknowledged
it; raises on failure."""


def _retryable_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class ActionExecutor:
    """Runs plans: HTTP with urllib3 (no redirects followed, no hidden retries: the engine
    retries), commands with `subprocess` (no shell), messages through `publish`."""

    def __init__(self, publish: PublishAndWait | None = None, environ: Mapping[str, str] | None = None):
        import urllib3

        self._urllib3 = urllib3
        self._pool = urllib3.PoolManager(retries=False)
        self.publish = publish
        self.environ = os.environ if environ is None else environ

    def execute(self, plan: ActionPlan) -> dict[str, Any]:
        if plan.channel == "http":
            return self._http(plan)
        if plan.channel == "command":
            return self._command(plan)
        return self._publish(plan)

    def _headers(self, http: PlaybookHttp) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **http.headers}
        for header, variable in http.headers_from_env.items():
            value = self.environ.get(variable)
            if value is None:
                raise ActionError(f"environment variable {variable} (header {header}) is not set", retryable=False)
            headers[header] = value
        return headers

    def _http(self, plan: ActionPlan) -> dict[str, Any]:
        assert plan.http is not None and plan.url is not None
        body = None if plan.http.method in ("GET", "DELETE") else json.dumps(plan.payload).encode()
        try:
            response = self._pool.request(
                plan.http.method,
                plan.url,
                body=body,
                headers=self._headers(plan.http),
                timeout=self._urllib3.Timeout(total=plan.timeout_seconds),
                redirect=False,
            )
        except self._urllib3.exceptions.HTTPError as exc:
            raise ActionError(f"{plan.http.method} {plan.url}: {type(exc).__name__}: {exc}", retryable=True) from None
        text = response.data[:_RESPONSE_KEPT].decode("utf-8", "replace")
        if response.status >= 300:
            raise ActionError(
                f"{plan.http.method} {plan.url}: HTTP {response.status} {text}".strip(),
                retryable=_retryable_status(response.status),
            )
        return {"status": response.status, "body": text}

    def _command(self, plan: ActionPlan) -> dict[str, Any]:
        argv = list(plan.argv or ())
        try:
            done = subprocess.run(argv, shell=False, capture_output=True, timeout=plan.timeout_seconds, check=False)
        except FileNotFoundError:
            raise ActionError(f"command not found: {argv[0]!r}", retryable=False) from None
        except subprocess.TimeoutExpired:
            raise ActionError(f"command timed out after {plan.timeout_seconds} s", retryable=True) from None
        output = (done.stdout + done.stderr)[-_RESPONSE_KEPT:].decode("utf-8", "replace")
        if done.returncode != 0:
            raise ActionError(f"command exited with {done.returncode}: {output}".strip(), retryable=True)
        return {"returncode": 0, "output": output}

    def _publish(self, plan: ActionPlan) -> dict[str, Any]:
        if self.publish is None:
            raise ActionError("no producer to publish with", retryable=False)
        assert plan.topic is not None
        try:
            return self.publish(plan.topic, plan.key.encode() if plan.key else None, json.dumps(plan.payload).encode())
        except Exception as exc:
            raise ActionError(f"publish to {plan.topic}: {type(exc).__name__}: {exc}", retryable=True) from None

    def close(self) -> None:
        self._pool.clear()
