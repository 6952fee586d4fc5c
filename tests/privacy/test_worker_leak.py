"""`driftline worker` with features marked `pii`, on the real broker: a recognisable value planted
in the marked features is, once the worker has monitored, alerted, joined, dead-lettered and
checkpointed, in no topic but the input it came from (every topic of the test is listed with the
admin client and read back whole), nor in the worker's log, its `/metrics` or an explain page."""

from __future__ import annotations

import base64
import json
import random
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from worker_support import log_tail, metrics_port, start_worker, stop_worker

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.config import KafkaConfig, MonitorConfig
from monitor.contracts.privacy import PII_KEY_ENV, PrivacyPolicy
from monitor.kafka.settings import admin_settings, consumer_settings, producer_settings
from monitor.kafka.topics import MODEL_STATE_TABLE, changelog_topic, ensure_topics
from monitor.observability.explain import explain

MODEL = "fraud-scorer"
MARKER = "PLANTEDPII"
KEY = "a-test-key-of-forty-characters-at-least!"
WARMUP, WINDOW, EVENTS, SHIFT_AT = 500, 200, 1500, 900
MARKS = {"email": {"pii": "hash"}, "ssn": {"pii": "drop"}}

pytestmark = pytest.mark.broker


def _email(k: int) -> str:
    return f"user{k}.{MARKER}@example.com"


def _publish(kafka_config: KafkaConfig) -> int:
    """The stream (in envelopes), its outcomes, and invalid input holding the planted value;
    returns how many dead letters the invalid input makes."""
    rng = random.Random(5)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with DriftlinePublisher(kafka_config, batch_events=100) as publisher:
        for i in range(EVENTS):
            k = rng.choice([0, 0, 0, 1, 1, 2]) if i < SHIFT_AT else rng.choice([3, 4, 4])
            publisher.publish_prediction(
                model_id=MODEL,
                model_version="v1",
                prediction_id=f"p{i}",
                features={"email": _email(k), "ssn": f"{MARKER}-{i:06d}", "amount": rng.gauss(0, 1)},
                prediction=int(rng.random() < 0.3),
                timestamp=start + timedelta(seconds=i),
            )
            if i % 4 == 0:
                publisher.publish_outcome(
                    prediction_id=f"p{i}", label=rng.choice([0, 1]), timestamp=start + timedelta(seconds=i + 1)
                )
        publisher.flush(timeout=10)
    valid = {"model_id": MODEL, "prediction_id": "q1", "timestamp": "2026-01-01T00:10:00Z",
             "features": {"email": _email(1), "ssn": f"{MARKER}-q1", "amount": 0.1}, "prediction": 0}  # fmt: skip
    broken = {**valid, "prediction_id": "q2", "features": {"email": {"nested": _email(8)}, "ssn": f"{MARKER}-q2"}}
    predictions, outcomes = kafka_config.topics.predictions, kafka_config.topics.outcomes
    invalid = [
        (predictions, json.dumps({**broken, "prediction_id": "q3"}).encode()),  # alone
        (predictions, json.dumps({"batch_version": 1, "events": [valid, broken]}).encode()),  # event 1 of 2
        (predictions, json.dumps({"batch_version": 9, "events": [valid]}).encode()),  # a bad envelope, whole
        (predictions, b'{"model_id": "' + MODEL.encode() + b'", "features": {"email": "' + _email(6).encode()),
        (outcomes, json.dumps({**valid, "prediction_id": "q4"}).encode()),  # a prediction on the outcomes topic
    ]
    producer = KafkaProducer(**producer_settings(kafka_config))
    for topic, raw in invalid:
        producer.send(topic, key=MODEL.encode(), value=raw)
    producer.flush(timeout=10)
    producer.close()
    return len(invalid)


def _read_whole(kafka_config: KafkaConfig, topic: str) -> list[tuple[bytes, bytes]]:
    """Every record of `topic` now: (key, value), all partitions, from the start to the end."""
    consumer = KafkaConsumer(**consumer_settings(kafka_config, group_id=None, enable_auto_commit=False))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += [(record.key or b"", record.value or b"") for record in batch]
        assert all(consumer.position(tp) >= end for tp, end in ends.items()), f"{topic}: not read to its end"
        return records
    finally:
        consumer.close()


def _wait_for(kafka_config: KafkaConfig, worker, log: Path, letters_expected: int, pseudonym: bytes) -> dict:
    """Until the worker has alerted on the hashed feature, dead-lettered every invalid input and
    checkpointed a state of the stream's categories: what the search then reads is complete."""
    topics = kafka_config.topics
    consumer = KafkaConsumer(
        topics.alerts,
        topics.dead_letter,
        changelog_topic(kafka_config, MODEL_STATE_TABLE),
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=500),
    )
    seen: dict = {"alerts": [], "letters": [], "state": False}
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and worker.poll() is None:
            for record in consumer:
                if record.topic == topics.alerts:
                    seen["alerts"].append(record.value)
                elif record.topic == topics.dead_letter:
                    seen["letters"].append(json.loads(record.value))
                elif pseudonym in (record.value or b"") or MARKER.encode() in (record.value or b""):
                    seen["state"] = True  # a state of the monitored stream (raw values: a leak, found below)
            on_email = [a for a in seen["alerts"] if json.loads(a)["feature"] == "email"]
            if on_email and len(seen["letters"]) >= letters_expected and seen["state"]:
                return seen
    finally:
        consumer.close()
    raise AssertionError(
        f"alerts on email: {[json.loads(a)['feature'] for a in seen['alerts']]}, {len(seen['letters'])} dead"
        f" letters of {letters_expected}, state with the pseudonym: {seen['state']}\n{log_tail(log)}"
    )


def test_a_planted_value_in_marked_features_is_in_no_topic_log_metric_or_page(tmp_path, kafka_config, monkeypatch):
    monkeypatch.setenv(PII_KEY_ENV, KEY)  # the worker inherits the environment: the key's only way in
    kafka_config = kafka_config.model_copy(update={"checkpoint_seconds": 1.0})
    settings = {
        "reference": {"warmup_events": WARMUP},
        "window": {"size_events": WINDOW},
        "models": [{"model_id": MODEL, "features": MARKS}],
    }
    config = MonitorConfig.model_validate({**settings, "kafka": kafka_config.model_dump()})
    pseudonym = PrivacyPolicy.from_config(config).pseudonym("email", _email(0)).encode()
    ensure_topics(kafka_config)
    worker = start_worker(tmp_path, kafka_config, settings)
    log = tmp_path / "worker.log"
    try:
        expected_letters = _publish(kafka_config)
        seen = _wait_for(kafka_config, worker, log, expected_letters, pseudonym)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(log)}/metrics", timeout=5) as response:
            metrics = response.read()
    finally:
        stop_worker(worker)

    redactions = sorted(letter.get("redaction") or "none" for letter in seen["letters"])
    assert redactions == ["redacted", "redacted", "redacted", "redacted", "withheld"], seen["letters"]

    alerts_file = tmp_path / "alerts.jsonl"
    alerts_file.write_bytes(b"\n".join(seen["alerts"]) + b"\n")
    pages = b""
    for alert_id in {json.loads(a)["alert_id"] for a in seen["alerts"]}:
        explain(alert_id, tmp_path / "page.html", alerts_path=alerts_file)
        pages += (tmp_path / "page.html").read_bytes()

    suffix = kafka_config.consumer_group.removeprefix("driftline.")
    admin = KafkaAdminClient(**admin_settings(kafka_config))
    try:
        ours = sorted(topic for topic in admin.list_topics() if suffix in topic)
    finally:
        admin.close()
    internal = [f"{kafka_config.consumer_group}-{name}" for name in ("join-input", "joined")]
    changelogs = [t for t in ours if t.endswith("-changelog")]
    assert {*kafka_config.topics.model_dump().values(), *internal} <= set(ours) and len(changelogs) >= 3, ours

    places: dict[str, bytes] = {}
    for topic in ours:
        records = _read_whole(kafka_config, topic)
        content = b"".join(key + b"\0" + value for key, value in records)
        if topic == kafka_config.topics.dead_letter:  # the originals are base64 inside the JSON
            content += b"".join(base64.b64decode(orjson.loads(value)["original_b64"]) for _, value in records)
        places[f"topic {topic}"] = content
    places["worker log"] = log.read_bytes()
    places["/metrics"] = metrics
    places["explain pages"] = pages

    inputs = {f"topic {kafka_config.topics.predictions}", f"topic {kafka_config.topics.outcomes}"}
    assert MARKER.encode() in places[f"topic {kafka_config.topics.predictions}"]  # the input holds it, as it must
    for name in (f"topic {changelogs[0]}", f"topic {internal[1]}", "explain pages", "worker log", "/metrics"):
        assert places[name], f"{name} is empty: the search there would prove nothing"
    assert pseudonym in places[f"topic {kafka_config.consumer_group}-{MODEL_STATE_TABLE}-changelog"]
    leaked = [name for name, content in places.items() if name not in inputs and MARKER.encode() in content]
    assert not leaked, f"the planted value is in: {leaked}\n{log_tail(log)}"
