"""Events as the publisher sends them, checked with no broker: `validate_prediction`, `validate_outcome`.

A service's unit tests can learn that an event is wrong without Kafka:

>>> from monitor.client import InvalidEvent, validate_prediction
>>> validate_prediction(model_id="fraud", model_version="v3", prediction_id="p-1",
...                     features={"amount": 12.5, "country": "DE"}, prediction=1,
...                     timestamp="2024-03-01T12:00:00Z").features
{'amount': 12.5, 'country': 'DE'}
>>> try:
...     validate_prediction(model_id="fraud", model_version="v3", prediction_id="p-1",
...                         features={"age": {"years": 3}}, prediction=1)
... except InvalidEvent as error:
...     print(error.reason.value, "|", error)
schema | features.age: input should be a boolean, a number, a string, a list of numbers or null, got {'years': 3}

`prediction_record` / `outcome_record` build the JSON the publisher puts on the wire and decode
it with the worker's own door (`monitor.contracts.validation`), so what passes here is what the
worker takes. NaN and infinite feature values are sent as null (missing): JSON has no such numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from monitor.contracts.deadletter import DeadLetterReason
from monitor.contracts.events import SCHEMA_VERSION, OutcomeEvent, PredictionEvent
from monitor.contracts.limits import EventLimits
from monitor.contracts.validation import InvalidEvent, decode_outcome, decode_prediction, format_validation_error

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z


def prediction_record(
    *,
    model_id: str,
    prediction_id: str,
    features: Mapping[str, Any],
    prediction: bool | int | float | str,
    model_version: str,
    timestamp: datetime | str | None = None,
    probabilities: Mapping[str, float] | None = None,
    slices: Mapping[str, str] | None = None,
    latency_ms: float | None = None,
    request_status: str | None = None,
    attributions: Mapping[str, float] | None = None,
    limits: EventLimits | None = None,
) -> tuple[bytes, PredictionEvent]:
    """The bytes `DriftlinePublisher.publish_prediction` sends for these fields, and the event the
    worker reads from them. Raises `InvalidEvent` naming the field when the worker would refuse it.

    `timestamp` is the event time (now, UTC, when omitted); a naive datetime is refused."""
    limits = limits or EventLimits.default()
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "timestamp": _now() if timestamp is None else timestamp,
        "model_id": model_id,
        "model_version": model_version,
        "prediction_id": prediction_id,
        "features": features,
        "prediction": prediction,
    }
    optional = {
        "probabilities": probabilities,
        "slices": slices,
        "latency_ms": latency_ms,
        "request_status": request_status,
        "attributions": attributions,
    }
    event.update({name: value for name, value in optional.items() if value is not None})
    raw = _encode(event, PredictionEvent, limits)
    return raw, decode_prediction(raw, limits)


def outcome_record(
    *,
    prediction_id: str,
    label: bool | int | float | str,
    timestamp: datetime | str | None = None,
    model_id: str | None = None,
    limits: EventLimits | None = None,
) -> tuple[bytes, OutcomeEvent]:
    """The bytes `DriftlinePublisher.publish_outcome` sends for these fields, and the event the
    worker reads from them. Raises `InvalidEvent` naming the field when the worker would refuse it.

    `timestamp` is when the outcome became known (now, UTC, when omitted)."""
    limits = limits or EventLimits.default()
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "timestamp": _now() if timestamp is None else timestamp,
        "prediction_id": prediction_id,
        "label": label,
    }
    if model_id is not None:
        event["model_id"] = model_id
    raw = _encode(event, OutcomeEvent, limits)
    return raw, decode_outcome(raw, limits)


def validate_prediction(**fields: Any) -> PredictionEvent:
    """Check one prediction exactly as `publish_prediction` does before sending, with no broker.

    Takes `publish_prediction`'s keyword arguments (and `limits`, an `EventLimits`); returns the
    event as the worker will read it, or raises `InvalidEvent` naming the field and the reason."""
    return prediction_record(**fields)[1]


def validate_outcome(**fields: Any) -> OutcomeEvent:
    """Check one outcome exactly as `publish_outcome` does before sending, with no broker.

    Takes `publish_outcome`'s keyword arguments (and `limits`, an `EventLimits`); returns the
    event as the worker will read it, or raises `InvalidEvent` naming the field and the reason."""
    return outcome_record(**fields)[1]


def _encode(event: dict[str, Any], model: type[PredictionEvent | OutcomeEvent], limits: EventLimits) -> bytes:
    try:
        return orjson.dumps(event, option=_JSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        # A value JSON cannot carry (a set, a Decimal, an object): let the model say which field.
        try:
            model.model_validate(event, context=limits.context())
        except ValidationError as exc:
            raise InvalidEvent(DeadLetterReason.schema, format_validation_error(exc)) from None
        raise  # the model accepted it, so the encoder's own message is the best there is


def _now() -> datetime:
    return datetime.now(UTC)
