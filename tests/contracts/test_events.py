"""Event contracts: valid events round-trip; every kind of bad input gives the expected message."""

from __future__ import annotations

import orjson
import pytest

from monitor.contracts.deadletter import DeadLetterReason
from monitor.contracts.events import SCHEMA_VERSION, UNVERSIONED, OutcomeEvent, PredictionEvent
from monitor.contracts.limits import EventLimits
from monitor.contracts.validation import InvalidEvent, decode_any, decode_outcome, decode_prediction

VALID = {
    "model_id": "fraud",
    "model_version": "v3",
    "prediction_id": "p-1",
    "timestamp": "2024-01-01T12:00:00+01:00",
    "features": {"amount": 12.5, "count": 3, "country": "DE", "is_new": True, "missing": None},
    "prediction": "fraud",
    "probabilities": {"fraud": 0.7, "ok": 0.3},
    "slices": {"country": "DE"},
    "latency_ms": 12.0,
    "request_status": "ok",
}


def encode(**changes) -> bytes:
    event = {**VALID, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


def test_prediction_round_trips_through_json():
    event = decode_prediction(encode())
    again = decode_prediction(event.model_dump_json().encode())
    assert again == event
    assert again.features == VALID["features"]
    assert again.timestamp.utcoffset().total_seconds() == 3600


def test_feature_types_are_kept_exactly():
    features = decode_prediction(encode()).features
    assert [type(features[k]) for k in ("amount", "count", "country", "is_new")] == [float, int, str, bool]
    assert features["missing"] is None


def test_minimal_producer_gets_defaults():
    event = decode_prediction(
        encode(
            schema_version=...,
            model_version=...,
            probabilities=...,
            slices=...,
            latency_ms=...,
            request_status=...,
        )
    )
    assert event.schema_version == SCHEMA_VERSION
    assert event.model_version == UNVERSIONED


def test_drift_bench_events_validate():
    line = (
        b'{"model_id": "bench-num_mean_abrupt", "prediction_id": "num_mean_abrupt_large_r0-0000042",'
        b' "timestamp": "2024-01-01T00:00:42Z", "features": {"x_num": 0.123456}, "prediction": 0.8123}'
    )
    assert isinstance(decode_any(line), PredictionEvent)
    outcome = b'{"prediction_id": "err_abrupt_large_r0-0000042", "label": 1, "timestamp": "2024-01-01T00:02:22.5Z"}'
    assert isinstance(decode_any(outcome), OutcomeEvent)


def test_unknown_fields_are_kept_apart_not_fatal():
    event = decode_prediction(encode(tenant="acme"))
    assert event.model_extra == {"tenant": "acme"}


@pytest.mark.parametrize(
    ("raw", "reason", "message"),
    [
        (
            encode(features={"age": "abc", "x": {"a": 1}}),
            "schema",
            "features.x: input should be a boolean, a number, a string, a list of numbers or null, got {'a': 1}",
        ),
        (encode(latency_ms="abc"), "schema", "latency_ms: input should be a valid number"),
        (encode(latency_ms=-1), "schema", "latency_ms: input should be greater than or equal to 0, got -1"),
        (encode(prediction_id=...), "schema", "prediction_id: field required"),
        (encode(timestamp="2024-01-01T00:00:00"), "schema", "timestamp: input should have timezone info"),
        (encode(timestamp="yesterday"), "schema", "timestamp: input should be a valid datetime"),
        (
            encode(timestamp="1970-01-01T00:00:00Z"),
            "limit",
            "timestamp: timestamp 1970-01-01T00:00:00+00:00 is outside",
        ),
        (
            encode(probabilities={"a": 0.5, "b": 0.2}),
            "schema",
            "probabilities: probabilities sum to 0.7, not 1",
        ),
        (
            encode(probabilities={"a": 1.5}),
            "schema",
            "probabilities.a: input should be less than or equal to 1",
        ),
        (
            encode(request_status="maybe"),
            "schema",
            "request_status: input should be 'ok', 'error' or 'timeout'",
        ),
        (encode(model_id=""), "schema", "model_id: string should have at least 1 character"),
        (
            encode(prediction=None),
            "schema",
            "prediction: input should be a boolean, a number or a string, got None",
        ),
        (encode(features=[1, 2]), "schema", "features: input should be a valid dictionary"),
        (b'{"model_id": "m", "features": {"a": NaN}}', "undecodable", "event: not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "undecodable", "event: not valid UTF-8 JSON"),
        (b"[1, 2]", "undecodable", "event: expected a JSON object, got list"),
        (b"", "undecodable", "event: not valid UTF-8 JSON"),
    ],
)
def test_bad_input_names_field_and_reason(raw, reason, message):
    with pytest.raises(InvalidEvent) as caught:
        decode_prediction(raw)
    assert caught.value.reason == DeadLetterReason(reason)
    assert message in str(caught.value)


def test_outcome_label_must_be_scalar():
    raw = b'{"prediction_id": "p", "label": [1], "timestamp": "2024-01-01T00:00:00Z"}'
    with pytest.raises(InvalidEvent, match=r"label: input should be a boolean, a number or a string, got \[1\]"):
        decode_outcome(raw)


@pytest.mark.parametrize(
    ("raw", "reason", "message"),
    [
        (
            encode(features={"note": "x" * 2000}),
            "limit",
            "value of feature 'note' is 2000 characters long, over the limit of 1024",
        ),
        (
            encode(features={f"f{i}": i for i in range(501)}),
            "limit",
            "features: 501 features, over the limit of 500",
        ),
        (
            encode(slices={f"s{i}": "v" for i in range(17)}),
            "limit",
            "slices: 17 slices, over the limit of 16",
        ),
        (encode(prediction="p" * 1025), "limit", "prediction: prediction is 1025 characters long"),
    ],
)
def test_limits_refuse_with_clear_reason(raw, reason, message):
    with pytest.raises(InvalidEvent) as caught:
        decode_prediction(raw)
    assert caught.value.reason == DeadLetterReason(reason)
    assert message in str(caught.value)


def test_oversize_event_is_refused_before_parsing():
    limits = EventLimits(max_event_bytes=1000)
    raw = encode(features={f"f{i}": 1.0 for i in range(200)})
    with pytest.raises(InvalidEvent) as caught:
        decode_prediction(raw, limits)
    assert caught.value.reason == DeadLetterReason.oversize
    assert f"event: {len(raw)} bytes, over the limit of 1000" == str(caught.value)


def test_limits_are_configurable():
    raw = encode(features={"note": "x" * 2000})
    event = decode_prediction(raw, EventLimits(max_string_length=4096))
    assert len(event.features["note"]) == 2000


def test_deeply_nested_input_is_refused_not_crashing():
    raw = b'{"model_id": "m", "features": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    with pytest.raises(InvalidEvent):
        decode_prediction(raw)
