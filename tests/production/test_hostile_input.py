"""Hostile input: whatever a broken or malicious producer sends, Driftline refuses it with a
reason, keeps it, and carries on.

* The decoders (`decode_any`, `decode_prediction`, `decode_outcome`) raise `InvalidEvent` with a
  dead-letter reason and a message naming the field (or `event`), for at least 10,000 fuzzed
  messages (`hostile_messages.py`), and nothing else: no `RecursionError`, no `UnicodeError`, no
  pydantic error escaping. Valid events drawn beside them decode.
* A real worker on the broker sent hostile messages interleaved with valid predictions puts every
  hostile one on the dead-letter topic with its reason, original bytes and source offset, stays
  alive, and counts every valid prediction once. The default suite sends ~1,000 hostile messages;
  `pytest -m slow tests/production/test_hostile_input.py` sends 10,000.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import msgpack
import pytest
from hostile_messages import HOSTILE_KINDS, Hostile, hostile_messages, valid_predictions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer
from worker_support import start_worker, stop_worker

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import KafkaConfig
from monitor.contracts.deadletter import DeadLetter, DeadLetterReason
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.contracts.validation import InvalidEvent, decode_any, decode_outcome, decode_prediction
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import MODEL_STATE_TABLE, changelog_topic, ensure_topics
from monitor.stream.records import decode_state

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud"
PER_EXAMPLE = 10
"""Hostile messages drawn per hypothesis example (one example per message is 5x slower)."""
FUZZ_MESSAGES = 10_000
MESSAGE_START = re.compile(r"^(event|[^:\s]+): \S")
"""Every refusal starts by naming what is wrong: a field path, or `event` for the whole input."""

_FUZZ_SETTINGS = settings(
    max_examples=FUZZ_MESSAGES // PER_EXAMPLE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def _refusal(decode, raw: bytes) -> InvalidEvent:
    """The `InvalidEvent` `decode` raises for `raw`; any other outcome fails the test."""
    try:
        event = decode(raw)
    except InvalidEvent as error:
        return error
    raise AssertionError(f"{decode.__name__} accepted hostile input as {event!r}: {raw[:300]!r}")


def test_decoders_refuse_10000_hostile_messages_with_a_reason_and_accept_valid_ones_between():
    seen: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    valid = [0]

    @_FUZZ_SETTINGS
    @given(st.lists(hostile_messages(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE), valid_predictions())
    def check(batch: list[Hostile], good: dict) -> None:
        for hostile in batch:
            matching = decode_outcome if hostile.outcome else decode_prediction
            reasons[_refusal(decode_any, hostile.raw).reason.value] += 1
            for decode in (decode_any, matching, decode_prediction, decode_outcome):
                error = _refusal(decode, hostile.raw)
                assert isinstance(error.reason, DeadLetterReason)
                message = str(error)
                assert MESSAGE_START.match(message), f"{decode.__name__}: {message!r} names no field or cause"
                assert len(message) < 1200, f"{decode.__name__}: a {len(message)}-character message"
                if decode is decode_any or decode is matching:
                    assert error.reason in hostile.reasons, (hostile.kind, decode.__name__, message)
                    assert message.startswith(hostile.field), (hostile.kind, decode.__name__, message)
            seen[hostile.kind] += 1
        # A valid event drawn between the hostile ones still decodes, as the right type.
        event = decode_any(good["raw"])
        assert isinstance(event, PredictionEvent) and event.prediction_id == good["prediction_id"]
        assert decode_prediction(good["raw"]) == event
        valid[0] += 1

    check()
    assert sum(seen.values()) >= FUZZ_MESSAGES, seen
    assert seen.keys() == HOSTILE_KINDS.keys(), f"kinds never drawn: {HOSTILE_KINDS.keys() - seen.keys()}"
    # every reason a decoder gives (`unreadable` is the Kafka client's: a record with no bytes to decode)
    assert reasons.keys() == {reason.value for reason in DeadLetterReason} - {"unreadable"}, reasons
    assert valid[0] >= FUZZ_MESSAGES // PER_EXAMPLE


def test_a_valid_outcome_still_decodes_between_hostile_ones():
    raw = json.dumps({"prediction_id": "p1", "timestamp": "2026-01-01T00:00:00Z", "label": True}).encode()
    assert isinstance(decode_any(raw), OutcomeEvent) and decode_outcome(raw).label is True


# ----------------------------------------------------------------------------- on the broker


def _draw(count: int, seed_label: str) -> list[tuple[str, bytes, object]]:
    """`count` hostile messages and one valid prediction after every 3, drawn by hypothesis
    (derandomized: the same stream every run). Items: (kind, raw, expected reason or None)."""
    stream: list[tuple[str, bytes, object]] = []
    index = iter(range(10**9))

    @settings(
        max_examples=count // PER_EXAMPLE,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(hostile_messages(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE), st.data())
    def collect(batch: list[Hostile], data: st.DataObject) -> None:
        for i, hostile in enumerate(batch):
            stream.append((hostile.kind, hostile.raw, _refusal(decode_prediction, hostile.raw).reason))
            if i % 3 == 2:
                good = data.draw(valid_predictions(MODEL, st.just(next(index))), label=seed_label)
                stream.append(("valid", good["raw"], None))

    collect()
    return stream


def _model_events(record_value: bytes) -> int:
    """Predictions a model-state changelog record has counted (`{"state"|"monitor": ModelMonitor
    state, "covered": ...}`, msgpack)."""
    record = msgpack.unpackb(record_value)
    state = record["state"] if "state" in record else record["monitor"]
    return state["drift"]["events"]


WORKER_SETTINGS = {"reference": {"warmup_events": 200}, "window": {"size_events": 100, "min_events": 50}}
"""A short warm-up, so the detectors run on the awkward valid events too."""


def _run_hostile_stream(tmp_path: Path, kafka_config: KafkaConfig, hostile_count: int, timeout: float) -> None:
    stream = _draw(hostile_count, "valid")
    ensure_topics(kafka_config)
    worker = start_worker(tmp_path, kafka_config, WORKER_SETTINGS)
    letters_consumer = KafkaConsumer(
        kafka_config.topics.dead_letter,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=300),
    )
    changelog = KafkaConsumer(
        changelog_topic(kafka_config, MODEL_STATE_TABLE),
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=300),
    )
    log = tmp_path / "worker.log"
    try:
        producer = KafkaProducer(**producer_settings(kafka_config, linger_ms=5, max_request_size=2_000_000))
        sent = []
        for i, (kind, raw, reason) in enumerate(stream):
            # One partition keeps the interleaving; hostile input with no key or a junk key lands anywhere.
            key = MODEL.encode() if kind == "valid" or i % 2 else (None if i % 4 == 0 else raw[:8])
            sent.append((kind, raw, reason, producer.send(kafka_config.topics.predictions, key=key, value=raw)))
        producer.flush(timeout=60)
        expected: dict[tuple[int, int], tuple[str, bytes, DeadLetterReason]] = {}
        valid = 0
        for kind, raw, reason, future in sent:
            metadata = future.get(timeout=10)
            if kind == "valid":
                valid += 1
                last_valid = raw
            else:
                expected[(metadata.partition, metadata.offset)] = (kind, raw, reason)
        producer.close()

        letters: dict[tuple[int, int], DeadLetter] = {}
        events = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.poll() is None:
            for record in letters_consumer:
                letter = DeadLetter.model_validate_json(record.value)
                letters[(letter.source.partition, letter.source.offset)] = letter
            for record in changelog:
                if json.loads(record.key) == MODEL:
                    events = _model_events(record.value)
            if len(letters) >= len(expected) and events >= valid:
                break
        tail = log.read_text(errors="replace")[-4000:]
        assert worker.poll() is None, f"the worker died:\n{tail}"
        missing = expected.keys() - letters.keys()
        assert not missing, f"{len(missing)} of {len(expected)} hostile messages not dead-lettered:\n{tail}"
        assert letters.keys() == expected.keys(), "dead letters for messages that were valid"
        for source, (kind, raw, reason) in expected.items():
            letter = letters[source]
            assert letter.source.topic == kafka_config.topics.predictions
            assert letter.reason == reason, (kind, letter.error)
            assert MESSAGE_START.match(letter.error), letter.error
            assert letter.original() == raw, kind
        assert events == valid, f"{events} valid predictions counted, {valid} sent:\n{tail}"
        # A sentinel: one more valid prediction on the model's partition. The worker applies a
        # partition in order and saves the model's state at checkpoints, after what it read
        # before; the first saved count that includes the sentinel is exact, with no sleep
        # standing in for "nothing else was counted".
        sentinel = {**json.loads(last_valid), "prediction_id": "sentinel"}
        producer = KafkaProducer(**producer_settings(kafka_config))
        try:
            key, value = MODEL.encode(), json.dumps(sentinel).encode()
            at = producer.send(kafka_config.topics.predictions, key=key, value=value).get(timeout=10)
        finally:
            producer.close()
        covered = 0
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and worker.poll() is None and covered <= at.offset:
            for record in changelog:
                if json.loads(record.key) == MODEL:
                    state, positions = decode_state(record.value)
                    events, covered = state["drift"]["events"], positions.get(str(at.partition), 0)
        assert covered > at.offset, f"no saved state covers the sentinel:\n{log.read_text(errors='replace')[-4000:]}"
        assert events == valid + 1, f"{events} predictions counted, {valid} and a sentinel sent:\n{tail}"
        assert worker.poll() is None, f"the worker died:\n{log.read_text(errors='replace')[-4000:]}"
    finally:
        letters_consumer.close()
        changelog.close()
        stop_worker(worker)


@pytest.mark.broker
@pytest.mark.parametrize(
    ("hostile_count", "timeout"),
    [
        pytest.param(1_000, 40, id="1000-hostile"),
        pytest.param(10_000, 240, id="10000-hostile", marks=pytest.mark.slow),
    ],
)
def test_worker_dead_letters_hostile_messages_and_counts_the_valid_ones_between(
    tmp_path, kafka_config, hostile_count, timeout
):
    _run_hostile_stream(tmp_path, kafka_config, hostile_count=hostile_count, timeout=timeout)


# ----------------------------------------------------------------------------- valid but hostile traffic


def test_a_rarely_present_categorical_feature_does_not_stop_the_model():
    """Valid events can be hostile too: a categorical feature present in one event in ten (or
    null in nine in ten) during the warm-up."""
    from datetime import UTC, datetime, timedelta

    from monitor.contracts.config import MonitorConfig
    from monitor.monitoring.fleet import ModelMonitor

    config = MonitorConfig.model_validate({"reference": {"warmup_events": 200}, "window": {"size_events": 100}})
    monitor = ModelMonitor(MODEL, config)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        PredictionEvent(
            model_id=MODEL,
            prediction_id=f"p{i}",
            timestamp=start + timedelta(seconds=i),
            features={"amount": float(i % 17), "country": None if i % 10 else "DE"},
            prediction=0.5,
        )
        for i in range(400)
    ]
    monitor.observe(PredictionBatch.from_events(events, range(len(events))), [], [])
    assert monitor.drift.events == len(events)
    assert "country/category_cusum" in monitor.drift.unfitted  # said, not silently dropped
    watched = {d.name for d in monitor.drift.features["country"].sequential + monitor.drift.features["country"].tests}
    assert not {key.split("/")[1] for key in monitor.drift.unfitted if key.startswith("country/")} & watched
    assert monitor.drift.features["amount"].sequential and monitor.drift.features["amount"].tests  # the rest as usual
