"""Fixtures for the on-call tests: the real binaries (skipped with the install command when
missing), a webhook receiver on loopback and a real Alertmanager running the repository's
configuration with the receiver URLs pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from oncall_support import ALERTMANAGER_CONFIG, Process, WebhookReceiver, binary, free_port


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return binary("amtool")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


TEST_TIMERS = {"group_wait": "1s", "group_interval": "1s"}
"""Only the timers change for tests (30 s and 5 min in production would make them slow)."""


def alertmanager_config_for_test(receiver_url: str) -> dict:
    """The repository's Alertmanager configuration with every webhook sent to `receiver_url`
    (keeping each receiver's path) and short grouping timers; routes, receivers and inhibit
    rules are untouched."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = receiver_url + urlsplit(webhook["url"]).path
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route.update({k: v for k, v in TEST_TIMERS.items() if k in route or route is config["route"]})
    return config


@dataclass
class RunningAlertmanager:
    url: str
    process: Process


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[RunningAlertmanager]:
    """A real Alertmanager on a free loopback port, clustering off, delivering to `webhook`."""
    executable = binary("prometheus-alertmanager")
    config_path = tmp_path / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(alertmanager_config_for_test(webhook.url), sort_keys=False))
    port = free_port()
    process = Process(
        [
            executable,
            f"--config.file={config_path}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        tmp_path / "alertmanager.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(url + "/-/ready")
        yield RunningAlertmanager(url, process)
    finally:
        process.stop()
