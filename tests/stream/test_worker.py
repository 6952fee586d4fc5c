"""`driftline worker` end to end on the real broker: predictions in, alerts and dead letters out.

The worker runs as its own process (`run_worker`, the config in a YAML file), as in production;
the test talks to it only through Kafka, with the publisher and plain kafka-python.
"""

from __future__ import annotations

import base64
import json
import random
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_support import start_worker, stop_worker

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert
from monitor.contracts.config import KafkaConfig
from monitor.contracts.deadletter import DeadLetter
from monitor.stream.kafka_settings import consumer_settings, producer_settings
from monitor.stream.records import decode_state
from monitor.stream.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud-scorer"
WARMUP, WINDOW, EVENTS, SHIFT_AT = 500, 200, 1500, 900
INVALID = {
    b"\xff\xfe not utf-8": "undecodable",
    b"[1, 2, 3]": "undecodable",
    json.dumps({"model_id": MODEL, "prediction_id": "broken"}).encode(): "schema",
}

pytestmark = pytest.mark.broker


def _start_worker(tmp_path: Path, kafka_config: KafkaConfig, warmup: int = WARMUP) -> subprocess.Popen:
    return start_worker(
        tmp_path, kafka_config, {"reference": {"warmup_events": warmup}, "window": {"size_events": WINDOW}}
    )


def _publish_predictions(kafka_config: KafkaConfig, first: int, last: int, noise_features: int = 0) -> None:
    """Predictions `first` to `last - 1` of one stream whose `amount` shifts at `SHIFT_AT`,
    with `noise_features` more features to make the state large."""
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with DriftlinePublisher(kafka_config) as publisher:
        for i in range(first, last):
            amount = rng.gauss(0, 1) + (3.0 if i >= SHIFT_AT else 0.0)
            publisher.publish_prediction(
                model_id=MODEL,
                prediction_id=f"p{i}",
                features={
                    "amount": amount,
                    "age": rng.gauss(40, 5),
                    **{f"noise{j}": rng.random() for j in range(noise_features)},
                },
                prediction=0.5,
                model_version="v1",
                timestamp=start + timedelta(seconds=i),
            )
        publisher.flush(timeout=10)


def _publish(kafka_config: KafkaConfig) -> None:
    _publish_predictions(kafka_config, 0, EVENTS)
    producer = KafkaProducer(**producer_settings(kafka_config))
    for raw in INVALID:
        producer.send(kafka_config.topics.predictions, key=MODEL.encode(), value=raw)
    producer.flush(timeout=10)
    producer.close()


def test_worker_raises_drift_alert_and_dead_letters_invalid_input(tmp_path, kafka_config):
    ensure_topics(kafka_config)
    worker = _start_worker(tmp_path, kafka_config)
    consumer = KafkaConsumer(
        kafka_config.topics.alerts,
        kafka_config.topics.dead_letter,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=500),
    )
    try:
        _publish(kafka_config)
        alerts: list[Alert] = []
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and worker.poll() is None:
            for record in consumer:
                if record.topic == kafka_config.topics.alerts:
                    assert record.key == MODEL.encode()
                    alerts.append(Alert.model_validate_json(record.value))
                else:
                    letters.append(DeadLetter.model_validate_json(record.value))
            drift = [a for a in alerts if a.kind == "feature_drift" and a.feature == "amount"]
            if drift and len(letters) >= len(INVALID):
                break
        log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        assert worker.poll() is None, f"worker exited:\n{log}"
        assert drift, f"no feature_drift alert on 'amount'; got {[(a.kind, a.feature) for a in alerts]}\n{log}"
        assert all(a.model_id == MODEL for a in alerts)
        assert not [a for a in alerts if a.kind == "feature_drift" and a.feature == "age"]
        assert {letter.original(): letter.reason.value for letter in letters} == INVALID
        for letter in letters:
            assert letter.source.topic == kafka_config.topics.predictions
            assert letter.source.partition is not None and letter.source.offset is not None
            assert letter.original_b64 == base64.b64encode(letter.original()).decode()
    finally:
        consumer.close()
        stop_worker(worker)


def _committed(kafka_config: KafkaConfig) -> int:
    """Messages of the predictions topic the worker's consumer group has committed (OffsetFetch;
    this consumer never joins the group)."""
    consumer = KafkaConsumer(
        **consumer_settings(kafka_config, group_id=kafka_config.consumer_group, enable_auto_commit=False)
    )
    try:
        topic = kafka_config.topics.predictions
        offsets = [consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic)]
    finally:
        consumer.close(autocommit=False)
    return sum(offset or 0 for offset in offsets)


def _latest_state(consumer: KafkaConsumer, states: dict[str, dict]) -> dict[str, dict]:
    """Read what the changelog holds now into `states` (last record per model wins)."""
    for record in consumer:
        monitor_state, covered = decode_state(record.value)
        states[json.loads(record.key)] = {"monitor": monitor_state, "covered": covered, "bytes": len(record.value)}
    return states


def _wait_for_events(consumer: KafkaConsumer, states: dict, worker: subprocess.Popen, events: int, log: Path):
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and worker.poll() is None:
        state = _latest_state(consumer, states).get(MODEL)
        if state is not None and state["monitor"]["drift"]["events"] >= events:
            return state
    raise AssertionError(
        f"state did not reach {events} events: {states.get(MODEL, {}).get('covered')}\n"
        + log.read_text(errors="replace")[-3000:]
    )


def test_worker_killed_and_restarted_counts_every_event_once(tmp_path, kafka_config):
    """SIGKILL after a first half, restart, second half: the state recovered from the changelog
    has counted each event exactly once, whatever the consumer group had committed. 100
    features and a warm-up longer than the run make the state records larger than 1 MB
    (Kafka's default message size), as with wide models in production."""
    ensure_topics(kafka_config)
    changelog = KafkaConsumer(
        f"{kafka_config.consumer_group}-model-state-changelog",
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=200),
    )
    first = _start_worker(tmp_path, kafka_config, warmup=2000)
    second = None
    states: dict[str, dict] = {}
    try:
        _publish_predictions(kafka_config, 0, 700, noise_features=98)
        state = _wait_for_events(changelog, states, first, 700, tmp_path / "worker.log")
        first.send_signal(signal.SIGKILL)  # before or after faust commits: either must count once
        first.wait(timeout=5)
        assert state["monitor"]["drift"]["events"] == 700
        (tmp_path / "worker.log").rename(tmp_path / "worker-killed.log")
        committed = _committed(kafka_config)

        second = _start_worker(tmp_path, kafka_config, warmup=2000)
        _publish_predictions(kafka_config, 700, 1000, noise_features=98)
        state = _wait_for_events(changelog, states, second, 1000, tmp_path / "worker.log")
        time.sleep(1.0)  # a double count would show as a later, larger record
        state = _latest_state(changelog, states)[MODEL]
        assert state["monitor"]["drift"]["events"] == 1000
        assert sum(state["covered"].values()) == 1000  # one partition holds the model: next offset 1000
        assert second.poll() is None
        assert state["bytes"] > 1_000_000
        # What the group had not committed was replayed, and skipped: one contiguous run ending at
        # the last offset the state covered. (Its start is the committed offset, usually 0: faust
        # commits every 2.8 s; not asserted, a commit in flight at the kill can still land.)
        log = (tmp_path / "worker.log").read_text(errors="replace")
        runs = [
            (int(a), int(b))
            for a, b in re.findall(r"replayed messages the state already covers \(offsets (\d+) to (\d+)\)", log)
        ]
        skipped = sorted(offset for a, b in runs for offset in range(a, b + 1))
        if skipped:
            assert skipped == list(range(skipped[0], 700)), runs
        else:
            assert committed == 700, "nothing replayed, so the group must have committed everything"
    finally:
        changelog.close()
        stop_worker(first)
        if second is not None:
            stop_worker(second)
