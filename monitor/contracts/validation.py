"""Turn raw bytes into a validated event, or an `InvalidEvent` naming the field and the reason.

This is the only door into the monitor: the streaming worker and replay both call `decode`, and
send what it refuses to the dead letters.

>>> try:
...     decode_prediction(b'{"model_id": "m", "prediction_id": "p", "timestamp": "2024-01-01T00:00:00Z",'
...                       b' "features": {"age": {"years": 3}}, "prediction": 1}')
... except InvalidEvent as error:
...     print(error.reason.value, "|", error)
schema | features.age: input should be a boolean, a number, a string, a list of numbers or null, got {'years': 3}
"""

from __future__ import annotations

import reprlib

import orjson
from pydantic import ValidationError

from monitor.contracts.deadletter import DeadLetterReason
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.contracts.limits import EventLimits

Event = PredictionEvent | OutcomeEvent


class InvalidEvent(ValueError):
    """An input that cannot be accepted. `reason` is the dead-letter reason code, the message
    names the field path and what is wrong with it."""

    def __init__(self, reason: DeadLetterReason, message: str, without_values: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.without_values = message if without_values is None else without_values
        """The message with no input value quoted (the field paths and reasons only): what a dead
        letter and a log line say of an event that could hold personal data."""


_UNION_TAGS = {
    "bool": "a boolean",
    "int": "a number",
    "float": "a number",
    "str": "a string",
    "list[float]": "a list of numbers",
    "none": "null",
}


def format_validation_error(error: ValidationError, max_errors: int = 3, values: bool = True) -> str:
    """One clause per field, `path: reason, got <value>` (without `, got <value>` when not
    `values`), at most `max_errors` of them.

    A value allowed to be one of several types fails once per type; those failures are folded
    into one clause naming what the field accepts."""
    by_path: dict[str, list[dict]] = {}
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if loc and loc[-1] in _UNION_TAGS:
            item = {**item, "union_tag": loc.pop()}
        loc = [part for part in loc if part not in _UNION_TAGS]  # `features.x.list[float].0` reads `features.x.0`
        path = ".".join(_short_part(part) for part in loc) or "event"
        by_path.setdefault(path, []).append(item)
    clauses = []
    for path, items in by_path.items():
        tags = [item["union_tag"] for item in items if "union_tag" in item]
        if tags and len(tags) == len(items):
            accepted = list(dict.fromkeys(_UNION_TAGS[tag] for tag in tags))
            if path.startswith("features."):
                # a list's own errors are at its elements' paths; nullable unions report none for None
                accepted = [a for a in accepted if a != "null"] + ["null"]
                if "a list of numbers" not in accepted:
                    accepted.insert(-1, "a list of numbers")
            message = "input should be " + (
                ", ".join(accepted[:-1]) + " or " + accepted[-1] if len(accepted) > 1 else accepted[0]
            )
        else:
            item = next(item for item in items if "union_tag" not in item) if tags else items[0]
            message = item["msg"][0].lower() + item["msg"][1:]
            if item["type"] == "missing" or item["type"].startswith("limit_"):
                clauses.append(f"{path}: {message}")
                continue
        clauses.append(f"{path}: {message}, got {_short(items[0].get('input'))}" if values else f"{path}: {message}")
    extra = len(clauses) - max_errors
    text = "; ".join(clauses[:max_errors])
    return f"{text}; and {extra} more" if extra > 0 else text


def _bounded_repr() -> reprlib.Repr:
    bounded = reprlib.Repr()
    bounded.maxlevel = 3  # a value nested 1,000 deep is shown as [[[[...]]]], never recursed into
    bounded.maxstring = bounded.maxother = bounded.maxlong = 80
    bounded.maxlist = bounded.maxtuple = bounded.maxdict = bounded.maxset = 6
    return bounded


_REPR = _bounded_repr()


def _short(value: object, limit: int = 80) -> str:
    """A repr of at most `limit` characters, whatever the value's size or depth (hostile input
    ends up in dead-letter messages and logs)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_part(part: object, limit: int = 64) -> str:
    """One part of a field path; a hostile 60,000-character feature name is cut short."""
    text = str(part)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason_of(error: ValidationError) -> DeadLetterReason:
    limit_errors = any(item["type"].startswith("limit_") for item in error.errors(include_url=False))
    return DeadLetterReason.limit if limit_errors else DeadLetterReason.schema


def parse_object(raw: bytes, limits: EventLimits) -> dict:
    """Check the size, decode JSON, and insist on an object."""
    if len(raw) > limits.max_event_bytes:
        raise InvalidEvent(
            DeadLetterReason.oversize, f"event: {len(raw)} bytes, over the limit of {limits.max_event_bytes}"
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(DeadLetterReason.undecodable, f"event: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidEvent(DeadLetterReason.undecodable, f"event: expected a JSON object, got {type(data).__name__}")
    return data


def _validate(model: type[Event], data: dict, limits: EventLimits) -> Event:
    try:
        return model.model_validate(data, context=limits.context())
    except ValidationError as exc:
        reason, without_values = _reason_of(exc), format_validation_error(exc, values=False)
        raise InvalidEvent(reason, format_validation_error(exc), without_values) from None
    except RecursionError:
        raise InvalidEvent(DeadLetterReason.schema, "event: nested too deeply") from None


def decode_prediction(raw: bytes, limits: EventLimits | None = None) -> PredictionEvent:
    limits = limits or EventLimits.default()
    return _validate(PredictionEvent, parse_object(raw, limits), limits)


def decode_outcome(raw: bytes, limits: EventLimits | None = None) -> OutcomeEvent:
    limits = limits or EventLimits.default()
    return _validate(OutcomeEvent, parse_object(raw, limits), limits)


def decode_any(raw: bytes, limits: EventLimits | None = None) -> Event:
    """For mixed streams (replay files): an object with `label` and no `features` is an outcome."""
    limits = limits or EventLimits.default()
    data = parse_object(raw, limits)
    model = OutcomeEvent if "label" in data and "features" not in data else PredictionEvent
    return _validate(model, data, limits)
