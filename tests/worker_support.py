"""Running `driftline worker` as its own process in tests, as in production: the config in a
YAML file, the worker talked to only through Kafka (and its `/metrics`). Shared by the stream,
on-call and production tests (`tests/` is on sys.path: see conftest.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from monitor.contracts.config import KafkaConfig

ROOT = Path(__file__).resolve().parents[1]


def start_worker(
    tmp_path: Path, kafka_config: KafkaConfig, settings: dict[str, Any], name: str = "worker"
) -> subprocess.Popen:
    """A worker with `settings` (MonitorConfig sections) on `kafka_config`'s broker and topics,
    `/metrics` on a free port (`metrics_port`), logging to `tmp_path/<name>.log`."""
    config = {
        "metrics": {"host": "127.0.0.1", "port": 0},
        **settings,
        "kafka": kafka_config.model_dump(mode="json", exclude_none=True),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    code = (
        "from monitor.contracts.config import load_config; from monitor.stream.worker import run_worker;"
        f"run_worker(load_config({str(path)!r}))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=(tmp_path / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


def metrics_port(log: Path, timeout: float = 20.0) -> int:
    """The port the worker logged for `/metrics`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"metrics on http://[^:/]+:(\d+)/metrics", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        time.sleep(0.2)
    raise AssertionError(f"no metrics port in {log}:\n{log.read_text(errors='replace')[-2000:]}")


def metric(log: Path, sample: str) -> float:
    """The value of one sample (name and labels as exported) on the worker's `/metrics`; 0 if absent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(log)}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"(no {path.name})"


@contextmanager
def cpu_contention(processes: int) -> Iterator[None]:
    """`processes` busy loops competing with the worker for the cores while the block runs. The
    worker's SIGKILL losses showed only under load (faust's producer-buffer flush giving up
    after 0.1 s without a send, see `write` in monitor/stream/worker.py; faust dropping and
    acking messages around a rebalance, see monitor/stream/positions.py), so the reliability
    tests make the load instead of hoping for it."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
