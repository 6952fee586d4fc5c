"""Scale-out on the real broker: two workers in one consumer group split the partitions and
together raise the same alerts as one worker on the same events."""

from __future__ import annotations

import json
import random
import re
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_support import log_tail, metrics_port, start_worker, stop_worker

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert
from monitor.contracts.config import KafkaConfig
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import MODEL_STATE_TABLE, changelog_topic, ensure_topics
from monitor.stream.records import decode_state, partition_for

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
    """Every model's stream interleaved; odd-numbered models drift on `amount` at `SHIFT_AT`.

    One event per message. With the publisher's envelopes of 100 the two runs raised different
    alerts once in CI (the same kinds, 9-13 events apart on two models, in 1 of 5 runs); the cause
    is not found yet, so this test keeps to the message granularity it was written for."""
    rng = random.Random(11)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with DriftlinePublisher(kafka_config, batch_events=1) as publisher:
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


def _held(log: Path, topic: str) -> set[int]:
    """The partitions of `topic` a worker resumed after its latest assignment (its log's
    `<topic>[<p>] resumes at` lines after the consumer's last `Setting newly assigned partitions`)."""
    text = log.read_text(errors="replace")
    latest = text[text.rfind("Setting newly assigned partitions") :] if "Setting newly assigned" in text else ""
    return {int(p) for p in re.findall(rf"{re.escape(topic)}\[(\d+)\] resumes at", latest)}


def _wait_for_split(logs: list[Path], topic: str, partitions: int, timeout: float = 45.0) -> None:
    """Until every worker of a group holds some partitions of `topic` after its latest assignment,
    no partition twice and none left over: the rebalance that followed the last join is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = [_held(log, topic) for log in logs]
        if all(held) and sum(map(len, held)) == partitions and set().union(*held) == set(range(partitions)):
            return
        time.sleep(0.3)
    raise AssertionError(f"{topic} not split between the workers: {held}\n" + "\n".join(map(log_tail, logs)))


END = b"end of the test run"


def _alerts(kafka_config: KafkaConfig, models: list[str], timeout: float = 60.0) -> list[Alert]:
    """Every alert the worker(s) raised on the run, read exactly, with no quiet period standing in
    for "no more alerts": first the saved states of every model must cover all `EVENTS` (a
    worker flushes what it sent, alerts included, before it saves a state, and these settings
    close count windows only: no timer raises one later), then an end marker goes to every
    partition of the alerts topic, and each partition is read up to its marker."""
    changelog = KafkaConsumer(
        changelog_topic(kafka_config, MODEL_STATE_TABLE),
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=300),
    )
    events: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and any(events.get(model, 0) < EVENTS for model in models):
            for record in changelog:
                state, _ = decode_state(record.value)
                events[json.loads(record.key)] = state["drift"]["events"]
    finally:
        changelog.close()
    assert all(events.get(model, 0) >= EVENTS for model in models), f"saved states cover {events}"

    topic = kafka_config.topics.alerts
    producer = KafkaProducer(**producer_settings(kafka_config))
    try:
        partitions = sorted(producer.partitions_for(topic))
        for partition in partitions:
            producer.send(topic, value=END, partition=partition).get(timeout=10)
    finally:
        producer.close()
    consumer = KafkaConsumer(**consumer_settings(kafka_config, group_id=None, enable_auto_commit=False))
    alerts: list[Alert] = []
    open_partitions = set(partitions)
    try:
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        while open_partitions and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if tp.partition not in open_partitions:
                        break
                    if record.value == END:
                        open_partitions.discard(tp.partition)
                    else:
                        alerts.append(Alert.model_validate_json(record.value))
    finally:
        consumer.close()
    assert not open_partitions, f"no end marker read back on partitions {sorted(open_partitions)} of {topic}"
    return alerts


def test_two_workers_split_the_partitions_and_raise_the_same_alerts_as_one(tmp_path, kafka_config):
    models = _models(kafka_config.partitions)
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
        # the pair's rebalance after the second one joined: a partition moved later would be monitored by both
        _wait_for_split([tmp_path / "pair-a.log", tmp_path / "pair-b.log"], two.topics.predictions, two.partitions)
        _publish(one, models)
        _publish(two, models)
        single = _alerts(one, models)
        pair = _alerts(two, models)
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
