"""`DriftlinePublisher` against the real broker: what it sends is what a plain consumer reads,
and what it refuses never reaches the topic."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from monitor.client import DriftlinePublisher, InvalidEvent
from monitor.contracts.config import KafkaConfig
from monitor.contracts.deadletter import DeadLetterReason
from monitor.contracts.envelope import EventEnvelope, unpack
from monitor.contracts.events import SCHEMA_VERSION
from monitor.contracts.limits import EventLimits
from monitor.contracts.validation import decode_outcome, decode_prediction
from monitor.kafka.settings import consumer_settings
from monitor.kafka.topics import ensure_topics

pytestmark = pytest.mark.broker

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _read_all(config: KafkaConfig, topic: str, expected: int, timeout: float = 10.0) -> list:
    """Every event of `topic` from the beginning, once `expected` of them have arrived: (record,
    the event's bytes), an envelope's events each with their record."""
    consumer = KafkaConsumer(**consumer_settings(config, enable_auto_commit=False))
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    unpacked = unpack([record.value])
                    assert not unpacked.refused
                    records += [(record, raw) for raw in unpacked.raws]
        return records
    finally:
        consumer.close()


def test_predictions_and_outcomes_arrive_keyed_and_intact(kafka_config):
    ensure_topics(kafka_config)
    models = ["fraud", "churn", "credit"]
    sent_predictions, sent_outcomes = {}, {}
    with DriftlinePublisher(kafka_config) as publisher:
        assert not publisher.connected  # it connects on the first send
        for i in range(300):
            model_id = models[i % 3]
            prediction_id = f"{model_id}-{i}"
            publisher.publish_prediction(
                model_id=model_id,
                prediction_id=prediction_id,
                model_version="v2" if i % 10 == 0 else "v1",
                timestamp=T0 + timedelta(seconds=i),
                features={"amount": i * 1.5, "country": ["DE", "FR"][i % 2], "new_device": i % 7 == 0, "age": None},
                prediction=i % 2,
                probabilities={"0": 0.25, "1": 0.75},
                slices={"country": ["DE", "FR"][i % 2]},
                latency_ms=3.5,
                request_status="ok",
            )
            sent_predictions[prediction_id] = model_id
            if i % 2 == 0:
                publisher.publish_outcome(prediction_id=prediction_id, label=1, timestamp=T0 + timedelta(hours=1))
                sent_outcomes[prediction_id] = 1
        assert publisher.sent == 450
    assert publisher.failed == 0

    predictions = _read_all(kafka_config, kafka_config.topics.predictions, len(sent_predictions))
    assert len(predictions) == len(sent_predictions)
    partitions_of_model: dict[str, set[int]] = {}
    for record, value in predictions:
        raw = orjson.loads(value)
        assert raw["schema_version"] == SCHEMA_VERSION == "1.1"
        assert raw["model_version"] in {"v1", "v2"}
        event = decode_prediction(value)
        assert record.key == event.model_id.encode()
        assert sent_predictions.pop(event.prediction_id) == event.model_id
        assert event.features["age"] is None and event.slices == {"country": event.features["country"]}
        partitions_of_model.setdefault(event.model_id, set()).add(record.partition)
    assert sent_predictions == {}
    assert all(len(partitions) == 1 for partitions in partitions_of_model.values())  # one owner per model

    outcomes = _read_all(kafka_config, kafka_config.topics.outcomes, len(sent_outcomes))
    assert len(outcomes) == len(sent_outcomes) == 150
    for record, value in outcomes:
        assert orjson.loads(value)["schema_version"] == SCHEMA_VERSION
        event = decode_outcome(value)
        # in envelopes, on the partition the outcome would take alone, keyed by its prediction id
        assert record.partition == (murmur2(event.prediction_id.encode()) & 0x7FFFFFFF) % kafka_config.partitions
        assert sent_outcomes.pop(event.prediction_id) == event.label
        assert event.timestamp == T0 + timedelta(hours=1)


def _publish_bad_then_sentinel(kafka_config, **bad_fields):
    """Publish one bad prediction (expecting a refusal), then a good one; read the topic."""
    valid = {
        "model_id": "fraud",
        "prediction_id": "p-bad",
        "model_version": "v1",
        "features": {"amount": 1.0},
        "prediction": 1,
    }
    with DriftlinePublisher(kafka_config) as publisher:
        with pytest.raises(InvalidEvent) as refused:
            publisher.publish_prediction(**{**valid, **bad_fields})
        assert publisher.sent == 0
        publisher.publish_prediction(**{**valid, "prediction_id": "p-sentinel"})
    records = _read_all(kafka_config, kafka_config.topics.predictions, expected=1)
    return refused.value, [decode_prediction(value).prediction_id for _, value in records]


def test_an_invalid_feature_is_refused_naming_the_field_and_nothing_is_sent(kafka_config):
    error, on_topic = _publish_bad_then_sentinel(kafka_config, features={"amount": {"currency": "EUR"}})
    assert str(error).startswith(
        "features.amount: input should be a boolean, a number, a string, a list of numbers or null"
    )
    assert error.reason is DeadLetterReason.schema
    assert on_topic == ["p-sentinel"]


def test_a_naive_timestamp_is_refused_naming_the_field(kafka_config):
    error, on_topic = _publish_bad_then_sentinel(kafka_config, timestamp=datetime(2024, 5, 1, 12, 0))
    assert str(error).startswith("timestamp: input should have timezone info")
    assert on_topic == ["p-sentinel"]


def test_a_value_json_cannot_carry_is_refused_naming_the_field(kafka_config):
    error, on_topic = _publish_bad_then_sentinel(kafka_config, features={"tags": {"a", "b"}})
    assert str(error).startswith("features.tags:")
    assert on_topic == ["p-sentinel"]


def test_an_oversize_event_is_refused_before_sending():
    publisher = DriftlinePublisher(
        bootstrap_servers="127.0.0.1:1", limits=EventLimits(max_event_bytes=512), api_version=(3, 9)
    )
    try:
        with pytest.raises(InvalidEvent, match=r"event: \d+ bytes, over the limit of 512") as refused:
            publisher.publish_prediction(
                model_id="m", prediction_id="p", model_version="v1", features={"text": "x" * 600}, prediction=0
            )
        assert refused.value.reason is DeadLetterReason.oversize
        assert publisher.sent == 0
    finally:
        publisher.close(timeout=1)


def test_timestamp_defaults_to_now_in_utc(kafka_config):
    before = datetime.now(UTC)
    with DriftlinePublisher(kafka_config) as publisher:
        publisher.publish_outcome(prediction_id="p1", label="spam", model_id="mail").result(timeout=10)
    ((_, value),) = _read_all(kafka_config, kafka_config.topics.outcomes, expected=1)
    event = decode_outcome(value)
    assert before <= event.timestamp <= datetime.now(UTC)
    assert event.model_id == "mail" and event.label == "spam"


def test_nan_features_travel_as_missing(kafka_config):
    with DriftlinePublisher(kafka_config) as publisher:
        publisher.publish_prediction(
            model_id="m", prediction_id="p", model_version="v1", features={"x": float("nan")}, prediction=0.5
        ).result(timeout=10)
    ((_, value),) = _read_all(kafka_config, kafka_config.topics.predictions, expected=1)
    assert decode_prediction(value).features == {"x": None}


@pytest.fixture
def stoppable_broker():
    """A broker of the test's own, to stop while a producer still holds records."""
    from monitor.kafka.broker import EmbeddedBroker

    broker = EmbeddedBroker(stop_timeout=0.5).start()  # it lingers on SIGTERM while clients are connected
    try:
        yield broker
    finally:
        broker.stop()


def _unraisable_at_collection(drop) -> list:
    """What `__del__` methods raise while `drop()` releases objects and the collector runs."""
    import gc
    import sys

    caught: list = []
    previous, sys.unraisablehook = sys.unraisablehook, caught.append
    try:
        drop()
        gc.collect()
    finally:
        sys.unraisablehook = previous
    return [item.exc_value for item in caught]


def test_closing_with_the_broker_gone_drops_what_it_holds_and_leaks_nothing(stoppable_broker):
    """kafka-python's close raises KafkaTimeoutError when its flush times out and leaves the
    producer open, to raise again from __del__ at garbage collection (an unraisable exception in
    whatever test runs then). The publisher closes it for good and counts what was dropped."""
    holder = {"publisher": DriftlinePublisher(bootstrap_servers=stoppable_broker.bootstrap_servers, retries=1000)}
    publisher = holder["publisher"]
    publisher.publish_outcome(prediction_id="p-0", label=1).result(timeout=10)  # connected, metadata known
    stoppable_broker.stop()
    for i in range(1, 4):
        publisher.publish_outcome(prediction_id=f"p-{i}", label=1)
    started = time.monotonic()
    publisher.close(timeout=0.5)  # no KafkaTimeoutError
    assert time.monotonic() - started < 5
    assert (publisher.sent, publisher.failed) == (4, 3)
    del publisher
    assert _unraisable_at_collection(holder.clear) == []


def test_close_producer_closes_for_good_after_a_timeout(stoppable_broker):
    from kafka import KafkaProducer

    from monitor.kafka.settings import close_producer

    holder = {"producer": KafkaProducer(bootstrap_servers=stoppable_broker.bootstrap_servers, retries=1000)}
    producer = holder["producer"]
    producer.send("t", b"0").get(timeout=10)
    stoppable_broker.stop()
    futures = [producer.send("t", b"%d" % i) for i in range(1, 4)]
    assert close_producer(producer, timeout=0.5) is False
    assert all(future.is_done and future.failed() for future in futures)
    assert close_producer(producer, timeout=0.5) is True  # closed already: nothing to do
    del producer
    assert _unraisable_at_collection(holder.clear) == []


def test_a_models_predictions_travel_in_envelopes_of_at_most_batch_events(kafka_config):
    ensure_topics(kafka_config)
    # A linger of 1 s, not 20 ms: a loaded machine may take longer than 20 ms to publish the first
    # 50, and the linger would then send part of them (right, but not what is asserted here).
    with DriftlinePublisher(kafka_config, batch_events=50, batch_linger_ms=1000) as publisher:
        futures = [
            publisher.publish_prediction(
                model_id="m", prediction_id=f"p{i}", model_version="v1", features={"x": float(i)}, prediction=0
            )
            for i in range(120)
        ]
        delivered = [future.result(timeout=10) for future in futures]  # the last 20 go after the linger time
    events = _read_all(kafka_config, kafka_config.topics.predictions, expected=120)
    assert [decode_prediction(value).prediction_id for _, value in events] == [f"p{i}" for i in range(120)]
    envelopes = {record.offset: record for record, _ in events}
    assert sorted(len(EventEnvelope.model_validate_json(r.value).events) for r in envelopes.values()) == [20, 50, 50]
    assert all(record.key == b"m" for record in envelopes.values())
    assert {metadata.offset for metadata in delivered} == set(envelopes)


def test_outcomes_travel_in_envelopes_per_partition_in_order(kafka_config):
    """Each outcome lands where it would alone (keyed by its prediction id), so the outcomes of one
    prediction keep their order, and the worker handles a message per envelope."""
    ensure_topics(kafka_config)
    with DriftlinePublisher(kafka_config, batch_events=50) as publisher:
        futures = [publisher.publish_outcome(prediction_id=f"p{i % 150}", label=i // 150) for i in range(300)]
        delivered = [future.result(timeout=10) for future in futures]
    events = _read_all(kafka_config, kafka_config.topics.outcomes, expected=300)
    labels: dict[str, list[int]] = {}
    for record, value in events:
        event = decode_outcome(value)
        assert record.partition == (murmur2(event.prediction_id.encode()) & 0x7FFFFFFF) % kafka_config.partitions
        labels.setdefault(event.prediction_id, []).append(event.label)
    assert labels == {f"p{i}": [0, 1] for i in range(150)}  # both outcomes of each prediction, in order
    envelopes = {(record.partition, record.offset) for record, _ in events}
    assert len(envelopes) < 300 / 10  # packed: a few envelopes per partition, not 300 messages
    assert {(metadata.partition, metadata.offset) for metadata in delivered} == envelopes


def test_batch_events_1_sends_each_event_alone(kafka_config):
    ensure_topics(kafka_config)
    with DriftlinePublisher(kafka_config, batch_events=1) as publisher:
        for i in range(3):
            publisher.publish_prediction(
                model_id="m", prediction_id=f"p{i}", model_version="v1", features={"x": 1.0}, prediction=0
            ).get(timeout=10)
            publisher.publish_outcome(prediction_id=f"p{i}", label=1).get(timeout=10)
    for topic in (kafka_config.topics.predictions, kafka_config.topics.outcomes):
        events = _read_all(kafka_config, topic, expected=3)
        assert [record.value for record, _ in events] == [value for _, value in events]
    assert [record.key for record, _ in events] == [f"p{i}".encode() for i in range(3)]
