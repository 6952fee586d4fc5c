"""Scale-out on the real broker: two workers in one consumer group split the partitions and
together raise the same alerts as one worker on the same events."""

from __future__ import annotations

import random
import re
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from worker_support import log_tail, metrics_port, start_worker, stop_worker

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert
from monitor.contracts.config import KafkaConfig
from monitor.stream.kafka_settings import consumer_settings
from monitor.stream.records import partition_for
from monitor.stream.topics import ensure_topics

pytestmark = pytest.mark.broker

SETTINGS = {"reference": {"warmup_events": 400}, "window": {"size_events": 200}}
EVENTS, SHIFT_AT = 1400, 800


def _models(partitions: int) -> list[str]:
    """One model per partition, so that every worker gets work whatever partitions it holds."""
    models: dict[int, str] = {}
    for i in range(1000):
        models.setdefault(partition_for(f"model-{i}", partitions), f"model-{i}")
        if len(models) == partitions:
            return [models[p] for p in sorted(models)]
    raise AssertionError("no model name for some partition")


def _publish(kafka_config: KafkaConfig, models: list[str]) -> None:
    """Every model's stream interleaved; odd-numbered models drift on `amount` at `SHIFT_AT`."""
    rng = random.Random(11)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with DriftlinePublisher(kafka_config) as publisher:
        for i in range(EVENTS):
            for m, model in enumerate(models):
                shift = 3.0 if m % 2 and i >= SHIFT_AT else 0.0
                publisher.publish_prediction(
                    model_id=model,
                    prediction_id=f"{model}-{i}",
                    features={"amount": rng.gauss(0, 1) + shift, "age": rng.gauss(40, 5)},
                    prediction=0.5,
                    model_version="v1",
                    timestamp=start + timedelta(seconds=i),
                )
        publisher.flush(timeout=20)


def _events_by_model(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts: dict[str, float] = {}
    for model, value in re.findall(r'driftline_events_total\{model="([^"]+)",type="prediction"\} (\S+)', text):
        counts[model] = float(value)
    return {model: n for model, n in counts.items() if n}


def _wait_for_assignment(log: Path, worker, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        if "Worker ready" in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    raise AssertionError(f"worker not ready:\n{log_tail(log)}")


def _alerts(kafka_config: KafkaConfig, expected: int, timeout: float = 60.0) -> list[Alert]:
    consumer = KafkaConsumer(
        kafka_config.topics.alerts,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=1000),
    )
    alerts: list[Alert] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            alerts += [Alert.model_validate_json(record.value) for record in consumer]
            if len({a.model_id for a in alerts if a.kind == "feature_drift"}) >= expected:
                time.sleep(3.0)  # the rest of the run's alerts
                alerts += [Alert.model_validate_json(record.value) for record in consumer]
                break
    finally:
        consumer.close()
    return alerts


def test_two_workers_split_the_partitions_and_raise_the_same_alerts_as_one(tmp_path, kafka_config):
    models = _models(kafka_config.partitions)
    drifting = len(models) // 2
    one = kafka_config
    two = kafka_config.model_copy(
        update={
            "consumer_group": f"{kafka_config.consumer_group}-pair",
            "topics": kafka_config.topics.model_copy(
                update={name: f"{topic}-pair" for name, topic in kafka_config.topics.model_dump().items()}
            ),
        }
    )
    ensure_topics(one)
    ensure_topics(two)
    workers = {
        "single": start_worker(tmp_path, one, SETTINGS, name="single"),
        "pair-a": start_worker(tmp_path, two, SETTINGS, name="pair-a"),
        "pair-b": start_worker(tmp_path, two, SETTINGS, name="pair-b"),
    }
    try:
        for name, worker in workers.items():
            _wait_for_assignment(tmp_path / f"{name}.log", worker)
        time.sleep(2.0)  # the pair's rebalance after the second one joined
        _publish(one, models)
        _publish(two, models)
        single = _alerts(one, drifting)
        pair = _alerts(two, drifting)
        logs = "\n".join(f"--- {name}\n{log_tail(tmp_path / f'{name}.log', 1500)}" for name in workers)
        assert all(w.poll() is None for w in workers.values()), logs

        def identity(alerts: list[Alert]) -> list[tuple]:
            # Scores to 9 digits: batches split differently, so float sums associate differently.
            return sorted(
                (a.alert_id, a.kind, a.model_id, a.feature, a.status, round(a.evidence.score, 9)) for a in alerts
            )

        assert {a.model_id for a in single if a.kind == "feature_drift"} == set(models[1::2])
        assert identity(pair) == identity(single), logs
        # Each of the pair monitored some of the models, and no model was monitored by both.
        a, b = (_events_by_model(metrics_port(tmp_path / f"{name}.log")) for name in ("pair-a", "pair-b"))
        assert a and b, (a, b)
        assert not a.keys() & b.keys(), (a, b)
        assert {**a, **b} == {model: EVENTS for model in models}
    finally:
        for worker in workers.values():
            stop_worker(worker)
