"""The publisher's checks with no broker: `validate_prediction` / `validate_outcome` refuse what the
worker would refuse, with the publisher's own words; building a publisher never connects, and a
first send to a broker that does not answer fails within its bound, in one line."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from monitor.client import (
    BrokerUnreachable,
    DriftlinePublisher,
    InvalidEvent,
    validate_outcome,
    validate_prediction,
)
from monitor.client.events import prediction_record
from monitor.contracts.deadletter import DeadLetterReason
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.contracts.limits import EventLimits
from monitor.contracts.validation import decode_prediction

NOWHERE = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once

VALID = {
    "model_id": "fraud",
    "prediction_id": "p-1",
    "model_version": "v1",
    "features": {"amount": 1.0, "country": "DE", "new_device": True, "age": None},
    "prediction": 1,
}

BAD_PREDICTIONS = [
    ({"features": {"amount": {"currency": "EUR"}}}, DeadLetterReason.schema, "features.amount: input should be a"),
    ({"timestamp": datetime(2024, 5, 1, 12, 0)}, DeadLetterReason.schema, "timestamp: input should have timezone"),
    ({"features": {"tags": {"a", "b"}}}, DeadLetterReason.schema, "features.tags:"),
    ({"probabilities": {"0": "high"}}, DeadLetterReason.schema, "probabilities.0:"),
    ({"model_id": ""}, DeadLetterReason.schema, "model_id:"),
]


def test_a_valid_prediction_comes_back_as_the_worker_reads_it():
    event = validate_prediction(**VALID, timestamp="2024-03-01T12:00:00Z", probabilities={"0": 0.2, "1": 0.8})
    assert isinstance(event, PredictionEvent)
    assert event.features == VALID["features"]
    assert event.timestamp == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert event.probabilities == {"0": 0.2, "1": 0.8}


def test_the_bytes_validated_are_the_bytes_sent():
    raw, event = prediction_record(**{**VALID, "features": {"x": float("nan")}})
    assert decode_prediction(raw) == event
    assert event.features == {"x": None}  # NaN travels as missing


def test_timestamp_defaults_to_now_in_utc():
    before = datetime.now(UTC)
    event = validate_outcome(prediction_id="p-1", label="spam")
    assert isinstance(event, OutcomeEvent)
    assert before <= event.timestamp <= datetime.now(UTC)


@pytest.mark.parametrize("bad, reason, message", BAD_PREDICTIONS, ids=[m for _, _, m in BAD_PREDICTIONS])
def test_a_bad_prediction_is_refused_with_the_publishers_own_error(bad, reason, message):
    with pytest.raises(InvalidEvent) as validated:
        validate_prediction(**{**VALID, **bad})
    assert str(validated.value).startswith(message)
    assert validated.value.reason is reason

    publisher = DriftlinePublisher(bootstrap_servers=NOWHERE)
    try:
        with pytest.raises(InvalidEvent) as published:
            publisher.publish_prediction(**{**VALID, **bad})
        assert str(published.value) == str(validated.value)
        assert published.value.reason is validated.value.reason
        assert publisher.sent == 0 and not publisher.connected  # refused before any connection
    finally:
        publisher.close()


def test_a_bad_outcome_is_refused_naming_the_field():
    with pytest.raises(InvalidEvent, match=r"^label: ") as refused:
        validate_outcome(prediction_id="p-1", label={"class": 1})
    assert refused.value.reason is DeadLetterReason.schema
    with pytest.raises(InvalidEvent, match=r"^prediction_id: "):
        validate_outcome(prediction_id="", label=1)


def test_limits_apply_as_in_the_publisher():
    with pytest.raises(InvalidEvent, match=r"^event: \d+ bytes, over the limit of 512$") as refused:
        validate_prediction(**{**VALID, "features": {"text": "x" * 600}}, limits=EventLimits(max_event_bytes=512))
    assert refused.value.reason is DeadLetterReason.oversize
    validate_prediction(**{**VALID, "features": {"text": "x" * 600}})  # within the default limits


def test_an_unknown_keyword_is_a_type_error_not_an_extra_field():
    with pytest.raises(TypeError, match="model_verison"):
        validate_prediction(**VALID, model_verison="v2")


def test_building_a_publisher_with_no_broker_does_not_connect():
    started = time.monotonic()
    publisher = DriftlinePublisher(bootstrap_servers=NOWHERE)
    try:
        assert time.monotonic() - started < 2.0  # it used to wait 30 s for the broker here
        assert not publisher.connected
    finally:
        publisher.close()


def test_the_first_send_to_no_broker_fails_within_its_bound_in_one_line():
    publisher = DriftlinePublisher(bootstrap_servers=NOWHERE, bootstrap_timeout_ms=500)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnreachable) as unreachable:
            publisher.publish_outcome(prediction_id="p-1", label=1)
        assert time.monotonic() - started < 5.0
        message = str(unreachable.value)
        assert message == (
            "no Kafka broker answered at 127.0.0.1:1 within 0.5 s (kafka.bootstrap_servers); the event was not sent"
        )
        assert unreachable.value.__cause__ is None and unreachable.value.__suppress_context__
        assert publisher.sent == 0 and not publisher.connected
    finally:
        publisher.close()


def test_the_publisher_waits_ten_seconds_at_most_by_default():
    publisher = DriftlinePublisher(bootstrap_servers=NOWHERE)
    try:
        assert publisher._settings["bootstrap_timeout_ms"] == 10_000
        assert publisher._settings["max_block_ms"] == 10_000
    finally:
        publisher.close()


def test_a_closed_publisher_refuses_to_send():
    publisher = DriftlinePublisher(bootstrap_servers=NOWHERE)
    publisher.close()
    publisher.flush()  # nothing was sent: nothing to wait for
    with pytest.raises(RuntimeError, match="closed"):
        publisher.publish_outcome(prediction_id="p-1", label=1)
