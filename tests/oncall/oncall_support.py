"""Helpers for the on-call tests: paths, the real binaries, metric names, a PromQL reader, a
webhook receiver and process handling. No mocks: the tests run Debian's `promtool`, `amtool`,
`prometheus` and `prometheus-alertmanager`, and skip with the install command when absent."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from monitor.observability.metrics import DriftlineMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "driftline.rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules" / "driftline.rules.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "driftline-dashboard.json"
RUNBOOKS = ROOT / "runbooks"
GENERATOR = DEPLOY / "prometheus" / "generate_rules.py"

INSTALL_HINT = "apt-get update && apt-get install -y prometheus prometheus-alertmanager"


def binary(name: str) -> str:
    """Absolute path of a Debian-packaged binary, or skip the test saying how to install it."""
    path = Path("/usr/bin") / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    pytest.skip(f"/usr/bin/{name} is missing; install it with: {INSTALL_HINT}")


# -- metric names -------------------------------------------------------------------------------

PROMETHEUS_SERIES = {"up": {"job", "instance"}, "ALERTS": None}
"""Series Prometheus itself writes, allowed next to Driftline's (None: any label)."""


def driftline_series() -> dict[str, set[str]]:
    """Series name -> label names, for every metric of `DriftlineMetrics`, as Prometheus sees them
    (counters get `_total`); `job` and `instance` are added by the scrape."""
    metrics = DriftlineMetrics(CollectorRegistry())
    series: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name = metric._name + ("_total" if metric._type == "counter" else "")
        series[name] = set(metric._labelnames) | {"job", "instance"}
    return series


# -- a small PromQL reader ------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_TOKEN = re.compile(
    r"""\s+|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`|\$\{?\w+\}?|\d[\w.]*|[A-Za-z_:][\w:]*|\{|\}|\[|\]|\(|\)|.""",
    re.S,
)


@dataclass
class Selector:
    metric: str
    labels: set[str] = field(default_factory=set)


@dataclass
class ParsedExpr:
    selectors: list[Selector]
    grouping_labels: set[str]


def parse_promql(expr: str) -> ParsedExpr:
    """Metric selectors (name and matcher label names) and grouping labels of a PromQL
    expression; enough to check names against `DriftlineMetrics`, not a full parser.

    >>> p = parse_promql('sum by (job) (rate(driftline_events_total{type="outcome"}[5m])) > 0 and vector(1)')
    >>> [(s.metric, sorted(s.labels)) for s in p.selectors], sorted(p.grouping_labels)
    ([('driftline_events_total', ['type'])], ['job'])
    """
    tokens = [t for t in _TOKEN.findall(expr) if t.strip()]
    selectors: list[Selector] = []
    grouping: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in _GROUPING and nxt == "(":
            j = i + 2
            while j < len(tokens) and tokens[j] != ")":
                if re.fullmatch(r"[A-Za-z_]\w*", tokens[j]):
                    grouping.add(tokens[j])
                j += 1
            i = j + 1
            continue
        if token == "[":  # range or subquery: durations only
            while i < len(tokens) and tokens[i] != "]":
                i += 1
            i += 1
            continue
        if token == "{":  # a selector without a metric name
            labels, i = _matchers(tokens, i)
            selectors.append(Selector("", labels))
            continue
        is_call = nxt == "(" or nxt in ("by", "without")  # a function, or `sum by (...) (...)`
        if re.fullmatch(r"[A-Za-z_:][\w:]*", token) and token not in _KEYWORDS and not is_call:
            selector = Selector(token)
            i += 1
            if i < len(tokens) and tokens[i] == "{":
                selector.labels, i = _matchers(tokens, i)
            selectors.append(selector)
            continue
        i += 1
    return ParsedExpr(selectors, grouping)


def _matchers(tokens: list[str], start: int) -> tuple[set[str], int]:
    labels: set[str] = set()
    i = start + 1
    expect_name = True
    while i < len(tokens) and tokens[i] != "}":
        token = tokens[i]
        if expect_name and re.fullmatch(r"[A-Za-z_]\w*", token):
            labels.add(token)
            expect_name = False
        elif token == ",":
            expect_name = True
        i += 1
    return labels, i + 1


def unknown_names(expr: str, known: dict[str, set[str] | None]) -> list[str]:
    """What in `expr` names a metric or label that does not exist: empty when all is well."""
    parsed = parse_promql(expr)
    problems = []
    available: set[str] = {"job", "instance"}
    for selector in parsed.selectors:
        if selector.metric not in known:
            problems.append(f"unknown metric {selector.metric or '{...}'!r}")
            continue
        labels = known[selector.metric]
        if labels is None:
            continue
        available |= labels
        problems += [f"{selector.metric} has no label {name!r}" for name in sorted(selector.labels - labels)]
    if all(known.get(s.metric, set()) is not None for s in parsed.selectors):
        problems += [f"grouping by unknown label {name!r}" for name in sorted(parsed.grouping_labels - available)]
    return problems


# -- processes and HTTP ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http_json(url: str, payload: Any = None, method: str | None = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class Process:
    """A child process with its log file; stopped with SIGTERM (then SIGKILL), by its own pid."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        self._log_handle = log.open("wb")
        self.popen = subprocess.Popen(args, stdout=self._log_handle, stderr=subprocess.STDOUT)

    def wait_ready(self, url: str, timeout: float = 15) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.popen.args[0]} exited: {self.log.read_text()[-2000:]}")
            return is_ready(url)

        wait_until(ready, timeout, what=f"{url} to be ready")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log_handle.close()


class WebhookReceiver:
    """An Alertmanager webhook receiver on loopback that keeps every notification it gets,
    with the path it was posted to (`/pager`, `/team`, `/watchdog`)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def notifications(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [body for p, body in self.received if path is None or p == path]

    def alerts(self, path: str, status: str | None = None) -> list[dict[str, Any]]:
        """Every alert delivered to `path` (optionally with that status), in arrival order."""
        return [
            alert
            for body in self.notifications(path)
            for alert in body["alerts"]
            if status is None or alert["status"] == status
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- Prometheus with the repository's rules -------------------------------------------------------

TEST_KEEP_FIRING_FOR = "1s"
"""`keep_firing_for` of the kind rules in tests: 5 min in production (rebalances) would hold a
resolved alert firing for the whole test. The kind rules have no `for:`; nothing else changes."""


def rules_for_test(directory: Path) -> Path:
    """A copy of the repository's rules in `directory` with `keep_firing_for` shortened to
    `TEST_KEEP_FIRING_FOR`; expressions, `for:`, labels and annotations are the repository's."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "keep_firing_for" in rule:
                rule["keep_firing_for"] = TEST_KEEP_FIRING_FOR
    path = directory / "driftline.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def prometheus_config_for_test(rules_path: Path, scrape_target: str, alertmanager_target: str) -> dict:
    """The repository's prometheus.yml with 1 s scrape and evaluation intervals, the `driftline`
    job scraping `scrape_target` (static, instead of DNS discovery) and alerts sent to
    `alertmanager_target`; the other jobs are dropped."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(rules_path)]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager_target]}]}]
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "driftline"]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [scrape_target]}]
    config["scrape_configs"] = [job]
    return config


@contextmanager
def running_prometheus(directory: Path, scrape_target: str, alertmanager_url: str) -> Iterator[str]:
    """A real Prometheus on a free loopback port with the test copy of the rules, scraping
    `scrape_target` and alerting `alertmanager_url` (re-sending every second); yields its URL."""
    executable = binary("prometheus")
    rules_path = rules_for_test(directory)
    config_path = directory / "prometheus.yml"
    am_target = alertmanager_url.removeprefix("http://")
    config_path.write_text(yaml.safe_dump(prometheus_config_for_test(rules_path, scrape_target, am_target)))
    port = free_port()
    process = Process(
        [
            executable,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ],
        directory / "prometheus.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(url + "/-/ready", timeout=20)
        yield url
    finally:
        process.stop()
