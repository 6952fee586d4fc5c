"""Alerts, a fake clock, a recording executor and a loopback HTTP server for the playbook tests."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from monitor.contracts.alert import Alert, AlertKind, AlertStatus, Evidence, Severity, alert_id, fingerprint
from monitor.playbooks.actions import ActionError, ActionPlan

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def make_alert(
    kind: str = "feature_drift",
    model_id: str = "fraud",
    feature: str | None = "amount",
    *,
    status: str = "firing",
    severity: str | None = None,
    starts_at: datetime = T0,
    firing_for: float = 0.0,
    model_version: str = "v2",
) -> Alert:
    kind_ = AlertKind(kind)
    fp = fingerprint(kind_.value, model_id, feature, None)
    return Alert(
        alert_id=alert_id(fp, starts_at),
        fingerprint=fp,
        kind=kind_,
        status=AlertStatus(status),
        severity=Severity(severity or ("critical" if kind == "performance_degradation" else "warning")),
        model_id=model_id,
        model_version=model_version,
        feature=feature,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(seconds=firing_for) if status == "resolved" else None,
        summary=f"{kind} on {model_id}",
        runbook_url=f"https://example.org/runbooks/{kind}",
        evidence=Evidence(
            detector="ks",
            score=0.31,
            threshold=0.12,
            window_start=starts_at - timedelta(minutes=10),
            window_end=starts_at + timedelta(seconds=firing_for),
            reference_size=5000,
            current_size=1000,
            reference_version="ref-abc",
            settings_hash="h123",
            details={"mean_before": 0.1, "mean_after": 1.9},
        ),
    )


class FakeClock:
    def __init__(self, start: float = T0.timestamp()):
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class RecordingExecutor:
    """Records every plan; fails the first `failures` tries with `error`."""

    def __init__(self, failures: int = 0, error: ActionError | None = None):
        self.plans: list[ActionPlan] = []
        self.failures = failures
        self.error = error or ActionError("HTTP 503", retryable=True)

    def execute(self, plan: ActionPlan) -> dict[str, Any]:
        self.plans.append(plan)
        if len(self.plans) <= self.failures:
            raise self.error
        return {"status": 200}


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 (port 0) in a thread; records requests, answers with the
    status configured per path prefix (200 by default)."""

    def __init__(self, statuses: dict[str, int] | None = None):
        self.statuses = statuses or {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server.lock:
                    server.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": json.loads(body) if body else None,
                        }
                    )
                status = next((s for prefix, s in server.statuses.items() if self.path.startswith(prefix)), 200)
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_PUT = do_GET = do_DELETE = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def requests_to(self, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(prefix)]

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
