"""The on-call path end to end with the real binaries, minus the worker (not built yet): the
test serves `DriftlineMetrics` from a fresh registry the way a worker will, a real Prometheus
scrapes it with the repository's rules, a real Alertmanager with the repository's routing
receives the alert, and a webhook receiver started by the test gets it with the labels and
`runbook_url` the core gives the same alert; then the alert resolves.

Test-only changes to the repository's files: loopback addresses, 1 s scrape and evaluation
intervals, 1 s Alertmanager grouping timers, and `keep_firing_for` shortened to 1 s."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from oncall_support import PROMETHEUS_CONFIG, RULES, Process, binary, free_port, http_json, wait_until
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.alerts.lifecycle import AlertLifecycle
from monitor.contracts.alert import Alert, AlertKind, Evidence
from monitor.contracts.config import AlertingConfig
from monitor.core.finding import Finding
from monitor.observability.metrics import DriftlineMetrics


class MetricsEndpoint:
    """`/metrics` of a fresh registry on a loopback port, as a worker serves it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = DriftlineMetrics(self.registry)
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[MetricsEndpoint]:
    served = MetricsEndpoint()
    yield served
    served.close()


def prometheus_config_for_test(rules_path: Path, scrape_target: str, alertmanager_target: str) -> dict:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(rules_path)]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager_target]}]}]
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "driftline"]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [scrape_target]}]
    config["scrape_configs"] = [job]
    return config


@pytest.fixture
def prometheus(tmp_path: Path, endpoint: MetricsEndpoint, alertmanager) -> Iterator[str]:
    executable = binary("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "keep_firing_for" in rule:
                rule["keep_firing_for"] = "1s"
    rules_path = tmp_path / "driftline.rules.yml"
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
    config_path = tmp_path / "prometheus.yml"
    am_target = alertmanager.url.removeprefix("http://")
    config_path.write_text(yaml.safe_dump(prometheus_config_for_test(rules_path, endpoint.target, am_target)))
    port = free_port()
    process = Process(
        [
            executable,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ],
        tmp_path / "prometheus.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(url + "/-/ready", timeout=20)
        yield url
    finally:
        process.stop()


def core_alert() -> Alert:
    """The alert the core raises for drift on `amount` of `fraud`, through the real lifecycle."""
    finding = Finding(
        AlertKind.feature_drift,
        "fraud",
        "amount",
        None,
        True,
        datetime(2024, 1, 1, tzinfo=UTC),
        evidence=Evidence(detector="ks", score=0.3, threshold=0.1, settings_hash="h"),
        summary="fraud: feature 'amount' drifted",
    )
    [alert] = AlertLifecycle(AlertingConfig()).process([finding])
    return alert


def test_alert_travels_from_metrics_to_webhook_and_resolves(endpoint, prometheus, alertmanager, webhook):
    alert = core_alert()
    endpoint.metrics.events.labels(model="fraud", type="prediction").inc(1000)
    active = endpoint.metrics.alert_active.labels(
        kind=alert.kind.value,
        model=alert.model_id,
        feature=alert.feature or "",
        slice=alert.slice or "",
        severity=alert.severity.value,
    )
    active.set(1)

    firing = wait_until(lambda: webhook.alerts("/team", "firing"), 25, what="the alert at the team webhook")
    [delivered] = firing
    assert delivered["labels"] == {
        "alertname": "DriftlineFeatureDrift",
        "kind": "feature_drift",
        "model": "fraud",
        "feature": "amount",
        "severity": "warning",
        "pipeline": "driftline",
        "job": "driftline",
    }
    assert delivered["annotations"]["runbook_url"] == alert.runbook_url
    assert delivered["annotations"]["summary"] == "Model fraud: feature amount drifted from its reference"
    assert webhook.alerts("/pager") == []
    # the heartbeat made the same trip
    wait_until(lambda: webhook.alerts("/watchdog"), 10, what="the Watchdog at its receiver")

    active.set(0)
    resolved = wait_until(lambda: webhook.alerts("/team", "resolved"), 20, what="the resolved notification")
    assert resolved[0]["labels"]["alertname"] == "DriftlineFeatureDrift"
    states = http_json(alertmanager.url + "/api/v2/alerts?filter=alertname%3D%22DriftlineFeatureDrift%22")
    assert states == []  # Alertmanager no longer lists it as active
