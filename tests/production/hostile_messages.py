"""Hypothesis strategies for hostile and valid input on the `predictions` topic.

`hostile_messages()` draws a `Hostile`: raw bytes no decoder may accept, the dead-letter reasons
the matching decoder may give, and the field its message must name. Every kind of damage a
broken or malicious producer can do is one strategy: wrong types, missing fields, huge strings,
deep nesting, invalid UTF-8, NaN and infinity tokens, timestamps far in the past and future,
bytes that are not JSON, JSON that is not an object, oversize events.

`valid_predictions()` draws events that must be accepted, including awkward but legal ones
(extreme floats, unicode, nulls, unknown fields nested deep), each with its `prediction_id`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from hypothesis import strategies as st

from monitor.contracts.deadletter import DeadLetterReason
from monitor.contracts.limits import EventLimits

LIMITS = EventLimits.default()
SCHEMA, LIMIT = DeadLetterReason.schema, DeadLetterReason.limit
UNDECODABLE, OVERSIZE = DeadLetterReason.undecodable, DeadLetterReason.oversize


@dataclass(frozen=True)
class Hostile:
    kind: str
    raw: bytes
    reasons: frozenset[DeadLetterReason]
    """What the matching decoder (`decode_any`, and `decode_prediction` or `decode_outcome`) may say."""
    field: str
    """Named at the start of the error message: a field path, or `event` for the whole input."""
    outcome: bool = False
    """Built from an outcome rather than a prediction."""


def base_prediction(i: int = 0) -> dict:
    return {
        "model_id": "fraud",
        "model_version": "v1",
        "prediction_id": f"p{i}",
        "timestamp": "2026-01-01T00:00:00Z",
        "features": {"amount": 12.5, "country": "DE", "new_customer": True},
        "prediction": 0.93,
        "probabilities": {"0": 0.07, "1": 0.93},
        "slices": {"country": "DE"},
        "latency_ms": 4.2,
        "request_status": "ok",
    }


def base_outcome(i: int = 0) -> dict:
    return {"prediction_id": f"p{i}", "model_id": "fraud", "timestamp": "2026-01-01T00:10:00Z", "label": 1}


def _encode(event: dict) -> bytes:
    return orjson.dumps(event)


# ----------------------------------------------------------------------------- values

_int64 = st.integers(-(2**63), 2**63 - 1)
_short_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_not_a_string = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(_int64, max_size=3),
    st.dictionaries(_short_text, _int64, max_size=2),
)
_not_a_scalar = st.one_of(st.lists(_int64, min_size=0, max_size=3), st.dictionaries(_short_text, _int64, max_size=3))

# A wrong value per field, each one the contract refuses. (Not every wrong-looking value is:
# an int timestamp is Unix time, "12" is a valid latency; those are left out.)
_WRONG = {
    "model_id": _not_a_string,
    "prediction_id": _not_a_string,
    "model_version": st.one_of(_not_a_string.filter(lambda v: v is not None), st.just(""), st.just("a\x00b")),
    "schema_version": st.one_of(_not_a_string.filter(lambda v: v is not None), st.just("1" * 17)),
    "timestamp": st.one_of(
        st.booleans(),
        st.none(),
        _not_a_scalar,
        st.sampled_from(["yesterday", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00", ""]),
    ),
    "features": st.one_of(st.lists(_int64, max_size=3), _short_text, _int64, st.none(), st.booleans()),
    # a list of numbers is a valid value (an embedding); lists of anything else are not
    "features.amount": st.one_of(
        st.dictionaries(_short_text, _int64, max_size=3),
        st.lists(st.one_of(_short_text, st.booleans()), min_size=1, max_size=3),
    ),
    "prediction": st.one_of(_not_a_scalar, st.none()),
    "probabilities": st.one_of(
        st.lists(st.floats(0, 1), max_size=2),
        _short_text,
        st.just({"0": 0.5, "1": 0.6}),  # sum is not 1
        st.just({"0": -0.5, "1": 1.5}),
        st.just({"0": "NaN", "1": 0.5}),
    ),
    "slices": st.one_of(st.just({"country": 7}), st.just({"": "DE"}), st.lists(_short_text, max_size=2)),
    "latency_ms": st.one_of(
        st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
        st.sampled_from(["NaN", "Infinity", "-inf", "fast"]),
        _not_a_scalar,
    ),
    "request_status": st.one_of(st.sampled_from(["maybe", "OK", ""]), _int64, _not_a_scalar),
}
_WRONG_OUTCOME = {
    "prediction_id": _not_a_string,
    "model_id": _not_a_string.filter(lambda v: v is not None),
    "label": st.one_of(_not_a_scalar, st.none()),
    "timestamp": _WRONG["timestamp"],
}


def _set(event: dict, path: str, value: object) -> dict:
    event = {**event, "features": dict(event["features"])} if "features" in event else dict(event)
    if "." in path:
        head, key = path.split(".", 1)
        if isinstance(event.get(head), dict):
            event[head] = {**event[head], key: value}
        else:
            event[head] = {key: value}
    else:
        event[path] = value
    return event


# ----------------------------------------------------------------------------- hostile kinds


@st.composite
def wrong_types(draw: st.DrawFn) -> Hostile:
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(_WRONG)))
        event = _set(base_prediction(), field, draw(_WRONG[field]))
        return Hostile("wrong_type", _encode(event), frozenset({SCHEMA}), field.split(".")[0])
    field = draw(st.sampled_from(sorted(_WRONG_OUTCOME)))
    event = _set(base_outcome(), field, draw(_WRONG_OUTCOME[field]))
    return Hostile("wrong_type", _encode(event), frozenset({SCHEMA}), field, outcome=True)


@st.composite
def missing_fields(draw: st.DrawFn) -> Hostile:
    if draw(st.booleans()):
        field = draw(st.sampled_from(["model_id", "prediction_id", "timestamp", "features", "prediction"]))
        event = {k: v for k, v in base_prediction().items() if k != field}
        if field == "features":  # without features, decode_any would read it as an outcome: keep it a prediction
            event["label"] = None
            return Hostile("missing", _encode(event), frozenset({SCHEMA}), "", outcome=True)
        return Hostile("missing", _encode(event), frozenset({SCHEMA}), field)
    field = draw(st.sampled_from(["prediction_id", "timestamp", "label"]))
    event = {k: v for k, v in base_outcome().items() if k != field}
    if field == "label":  # no label and no features: a prediction without features, for decode_any
        return Hostile("missing", _encode(event), frozenset({SCHEMA}), "", outcome=True)
    return Hostile("missing", _encode(event), frozenset({SCHEMA}), field, outcome=True)


@st.composite
def huge_strings(draw: st.DrawFn) -> Hostile:
    """Strings over the length limits; beyond `max_event_bytes` the whole event is oversize."""
    length = draw(
        st.one_of(
            st.integers(LIMITS.max_string_length + 1, 4 * LIMITS.max_string_length),
            st.integers(LIMITS.max_event_bytes, 3 * LIMITS.max_event_bytes),
        )
    )
    text = draw(st.sampled_from("xé€𝄞")) * length
    where = draw(st.sampled_from(["feature value", "prediction", "label", "model_id", "feature name", "slice"]))
    if where == "label":
        event, field, reason, outcome = _set(base_outcome(), "label", text), "label", LIMIT, True
    else:
        outcome = False
        path, field, reason = {
            "feature value": ("features.amount", "features", LIMIT),
            "prediction": ("prediction", "prediction", LIMIT),
            "model_id": ("model_id", "model_id", SCHEMA),
            "feature name": (f"features.{text}", "features", SCHEMA),
            "slice": ("slices.country", "slices", SCHEMA),
        }[where]
        event = _set(base_prediction(), path, text)
    raw = _encode(event)
    if len(raw) > LIMITS.max_event_bytes:
        reason, field = OVERSIZE, "event"
    return Hostile("huge_string", raw, frozenset({reason}), field, outcome)


@st.composite
def deep_nesting(draw: st.DrawFn) -> Hostile:
    """Arrays or objects nested 2 to 20,000 deep in a field; JSON parsing stops at 1,024 levels."""
    depth = draw(st.one_of(st.integers(2, 1100), st.integers(1100, 20_000)))
    nested = "[" * depth + "]" * depth if draw(st.booleans()) else '{"a":' * depth + "1" + "}" * depth
    field = draw(st.sampled_from(["features.amount", "features", "prediction", "probabilities.1", "slices.country"]))
    event = _set(base_prediction(), field, "@NESTED@")
    raw = _encode(event).replace(b'"@NESTED@"', nested.encode())
    if len(raw) > LIMITS.max_event_bytes:
        return Hostile("deep_nesting", raw, frozenset({OVERSIZE}), "event")
    if depth + 1 + field.count(".") > 1024:  # the event's own object, and one per dotted level above the field
        return Hostile("deep_nesting", raw, frozenset({UNDECODABLE}), "event")
    return Hostile("deep_nesting", raw, frozenset({SCHEMA}), field.split(".")[0])


_BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Hostile:
    """Bytes that are not UTF-8 inside a string, or escaped lone surrogates."""
    bad = draw(st.sampled_from([*_BAD_UTF8, b"\\ud800", b"\\udfff"]))
    field = draw(st.sampled_from(["model_id", "prediction_id", "features.country", "prediction", "timestamp"]))
    raw = _encode(_set(base_prediction(), field, "@BAD@")).replace(b"@BAD@", b"ok" + bad + b"ok")
    return Hostile("invalid_utf8", raw, frozenset({UNDECODABLE}), "event")


@st.composite
def nan_and_infinity(draw: st.DrawFn) -> Hostile:
    """JSON has no NaN or infinity: the bare tokens, and numbers too large for a double."""
    token = draw(st.sampled_from([b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"1e999", b"-1e400"]))
    field = draw(st.sampled_from(["features.amount", "prediction", "probabilities.1", "latency_ms"]))
    raw = _encode(_set(base_prediction(), field, "@NUM@")).replace(b'"@NUM@"', token)
    return Hostile("nan_infinity", raw, frozenset({UNDECODABLE}), "event")


@st.composite
def out_of_range_timestamps(draw: st.DrawFn) -> Hostile:
    """Years 1 to 1999 and 2100 to 9999, any offset; naive times and impossible dates."""
    year = draw(st.one_of(st.integers(1, 1999), st.integers(2101, 9999)))
    offset = draw(st.sampled_from(["Z", "+00:00", "+14:00", "-12:00", "+05:30"]))
    stamp = f"{year:04d}-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 28)):02d}T12:00:00{offset}"
    # Year 1 in a zone east of UTC may fall before datetime.min: refused as no date at all.
    reasons = frozenset({LIMIT, SCHEMA} if year == 1 else {LIMIT})
    if draw(st.booleans()):
        event, outcome = _set(base_prediction(), "timestamp", stamp), False
    else:
        event, outcome = _set(base_outcome(), "timestamp", stamp), True
    return Hostile("timestamp", _encode(event), reasons, "timestamp", outcome)


@st.composite
def not_json(draw: st.DrawFn) -> Hostile:
    """Bytes that are not JSON, and JSON values that are not objects."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        raw = draw(st.binary(min_size=0, max_size=200))
        raw = draw(st.sampled_from([b"\x00", b"<", b"\x89PNG", b"'", b"\xac\xed"])) + raw  # never a JSON object
    elif choice == 1:
        raw = _encode(
            draw(
                st.one_of(
                    st.integers(-(2**63), 2**63 - 1),
                    st.text(max_size=20),
                    st.none(),
                    st.booleans(),
                    st.lists(st.integers(0, 9)),
                )
            )
        )
    else:
        raw = _encode(base_prediction())[: draw(st.integers(0, 60))]  # truncated
    return Hostile("not_json", raw, frozenset({UNDECODABLE}), "event")


@st.composite
def oversize(draw: st.DrawFn) -> Hostile:
    """Over `max_event_bytes`, whatever is inside: padding in an unknown field, or random bytes."""
    size = draw(st.integers(LIMITS.max_event_bytes + 1, 4 * LIMITS.max_event_bytes))
    if draw(st.booleans()):
        event = {**base_prediction(), "padding": "p" * size}
        raw = _encode(event)
    else:
        chunk = draw(st.binary(min_size=1, max_size=16))
        raw = (chunk * (size // len(chunk) + 1))[:size]
    return Hostile("oversize", raw, frozenset({OVERSIZE}), "event")


HOSTILE_KINDS = {
    "wrong_type": wrong_types(),
    "missing": missing_fields(),
    "huge_string": huge_strings(),
    "deep_nesting": deep_nesting(),
    "invalid_utf8": invalid_utf8(),
    "nan_infinity": nan_and_infinity(),
    "timestamp": out_of_range_timestamps(),
    "not_json": not_json(),
    "oversize": oversize(),
}


def hostile_messages() -> st.SearchStrategy[Hostile]:
    return st.one_of(*HOSTILE_KINDS.values())


# ----------------------------------------------------------------------------- valid events

_EXTREME_NUMBERS = [1e308, -1e308, 5e-324, -0.0, 2**63 - 1, -(2**63), 1.7976931348623157e308]


def _mostly(draw: st.DrawFn, usual: st.SearchStrategy, awkward: st.SearchStrategy) -> object:
    """`usual` nine times in ten, else `awkward`: types stay recognisable, edge cases still come."""
    return draw(awkward) if draw(st.integers(0, 9)) == 0 else draw(usual)


@st.composite
def valid_predictions(draw: st.DrawFn, model_id: str = "fraud", index: st.SearchStrategy[int] | None = None) -> dict:
    """A prediction the contract accepts, awkward where it may be: extreme numbers, unicode
    names and values, nulls, a number where a category is usual (and the reverse), unknown
    fields nested deep. Every feature is present in every event (see the sparse-feature test in
    test_hostile_input.py for why)."""
    i = draw(index if index is not None else st.integers(0, 10**9))
    day = f"20{draw(st.integers(0, 99)):02d}-0{draw(st.integers(1, 9))}-1{draw(st.integers(0, 9))}"
    offset = draw(st.sampled_from(["Z", "+02:00", "-11:30"]))
    features = {
        "amount": _mostly(draw, st.floats(-1e6, 1e6), st.sampled_from(_EXTREME_NUMBERS)),
        "age": _mostly(draw, st.integers(0, 120), st.one_of(st.none(), st.just("unknown"), st.booleans())),
        "country": _mostly(draw, st.sampled_from(["DE", "FR", "ünïcode", "", "名前"]), st.one_of(st.none(), _int64)),
        "名前": draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)),
        "x" * 256: draw(st.integers(-(2**63), 2**63 - 1)),
    }
    event = {
        "model_id": model_id,
        "prediction_id": f"p{i}",
        "timestamp": f"{day}T0{draw(st.integers(0, 9))}:00:00{offset}",
        "features": features,
        "prediction": draw(st.one_of(st.floats(0, 1), st.integers(0, 1), st.booleans(), st.sampled_from(["y", "n"]))),
    }
    if draw(st.booleans()):
        event["slices"] = {"country": draw(st.sampled_from(["DE", "FR", "ünïcode", ""]))}
    if draw(st.booleans()):
        # Unknown fields are allowed (kept apart and counted), even nested deep within the limits.
        depth = draw(st.integers(1, 500))
        event["future_field"] = "@DEEP@"
        return {"raw": _encode(event).replace(b'"@DEEP@"', b"[" * depth + b"]" * depth), "prediction_id": f"p{i}"}
    return {"raw": _encode(event), "prediction_id": f"p{i}"}
