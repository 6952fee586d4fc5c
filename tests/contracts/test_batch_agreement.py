"""The columnar fast path (`contracts.batch`) agrees with the pydantic contract on every event.

Generated events, valid and invalid (wrong types, over the limits, odd timestamps, control
characters, unknown fields, missing fields), go through both doors: the batch decoder must accept
exactly the events pydantic accepts, with the same values, and reject the others with the same
reason and message. Small limits make every limit reachable.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.contracts.batch import decode_batch
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.contracts.limits import EventLimits
from monitor.contracts.validation import InvalidEvent, decode_any

LIMITS = EventLimits(max_event_bytes=1500, max_features=4, max_string_length=12, max_slices=2, max_vector_length=3)

_short_text = st.text(min_size=0, max_size=14)
identifiers = st.one_of(
    st.sampled_from(["m", "fraud", "p-1", "v2"]),
    _short_text,
    st.sampled_from(["", "a\n", "a\x00b", "\t", "x" * 256, "x" * 257, "\ud800", "é"]),
)
numbers = st.one_of(
    st.integers(-1000, 1000),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e308, 5e-324]),
)
vectors = st.lists(st.one_of(numbers, st.booleans(), st.none(), st.just("1")), max_size=5)
"""Lists of numbers (embeddings), some too long for `LIMITS`, some with a value that is not a number."""
values = st.one_of(st.none(), st.booleans(), numbers, _short_text, st.lists(st.integers(), max_size=2), vectors,
                   st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))  # fmt: skip
timestamps = st.one_of(
    st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "2024-02-29T23:59:59.5+02:00",
            "2024-01-01T00:00:00.123456Z",
            "2024-01-01T00:00:00.1234567Z",
            "2024-01-01T00:00:00.9999999Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01t00:00:00z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+23:59",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00-00:00",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-12-31T23:59:60Z",
            "1999-12-31T23:59:59Z",
            "2000-01-01T00:00:00Z",
            "2099-12-31T23:59:59.999999Z",
            "2100-01-01T00:00:00Z",
            "2024-01-01T00:00Z",
            "yesterday",
            "",
        ]
    ),
    st.integers(0, 5_000_000_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
)
probabilities = st.one_of(
    st.none(),
    st.just({}),
    st.dictionaries(
        identifiers, st.one_of(st.floats(0, 1), st.integers(0, 1), st.booleans(), st.just("0.5")), max_size=3
    ),
    st.floats(0, 1).map(lambda p: {"0": 1 - p, "1": p}),
    st.floats(0, 1).map(lambda p: {"1": p}),
)
slices = st.one_of(st.none(), st.dictionaries(identifiers, st.one_of(st.text(max_size=3), st.integers()), max_size=3))
MISSING = object()


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """The strategy's value, or the field left out."""
    return st.one_of(strategy, st.just(MISSING))


valid_ids = st.one_of(
    st.sampled_from(["m", "fraud", "p-1", "v2", "é", "x" * 256]),
    st.text(st.characters(min_codepoint=32), min_size=1, max_size=8),
)
_valid_numbers = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))
valid_labels = st.one_of(st.booleans(), _valid_numbers, st.text(max_size=12))
valid_values = st.one_of(st.none(), valid_labels, st.lists(_valid_numbers, max_size=3))


def _mutated(
    draw: Any, valid: dict[str, st.SearchStrategy], wild: dict[str, st.SearchStrategy], extra: list[str]
) -> dict[str, Any]:
    """A valid event with none, one or two fields replaced by a wild value or removed, and
    sometimes an unknown field: most events are close to valid, so each check is reached."""
    event = {name: draw(strategy) for name, strategy in valid.items()}
    for name in draw(st.lists(st.sampled_from(sorted(wild)), max_size=2, unique=True)):
        event[name] = draw(st.one_of(wild[name], st.just(MISSING)))
    if draw(st.integers(0, 3)) == 0:
        event[draw(st.sampled_from(extra))] = draw(values)
    return {k: v for k, v in event.items() if v is not MISSING}


@st.composite
def predictions(draw: Any) -> dict[str, Any]:
    valid = {
        "model_id": valid_ids,
        "prediction_id": valid_ids,
        "timestamp": st.sampled_from(["2024-01-01T00:00:00Z", "2024-02-29T23:59:59.5+02:00", "2000-01-01T00:00:00Z"]),
        "features": st.dictionaries(st.text(min_size=1, max_size=3), valid_values, max_size=4),
        "prediction": valid_labels,
        "model_version": _maybe(valid_ids),
        "probabilities": _maybe(st.one_of(st.none(), st.floats(0, 1).map(lambda p: {"0": 1 - p, "1": p}))),
        "slices": _maybe(st.one_of(st.none(), st.dictionaries(valid_ids, st.text(max_size=3), max_size=2))),
        "latency_ms": _maybe(st.one_of(st.none(), st.floats(0, 1e6))),
        "request_status": _maybe(st.sampled_from([None, "ok", "error", "timeout"])),
        "attributions": _maybe(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.text(min_size=1, max_size=3),
                    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-1000, 1000)),
                    max_size=4,
                ),
            )
        ),
    }
    wild = {
        "model_id": identifiers,
        "prediction_id": identifiers,
        "timestamp": timestamps,
        "features": st.one_of(st.dictionaries(st.one_of(st.text(max_size=3), st.just("")), values, max_size=5), values),
        "prediction": values,
        "schema_version": st.one_of(st.just("1.0"), st.text(max_size=18), st.none()),
        "model_version": st.one_of(identifiers, st.none()),
        "probabilities": probabilities,
        "slices": slices,
        "latency_ms": st.one_of(st.none(), numbers, st.just("12")),
        "request_status": st.sampled_from([None, "ok", "error", "timeout", "OK", 1]),
        "attributions": st.one_of(
            st.dictionaries(st.one_of(st.text(max_size=3), st.just("")), st.one_of(values, numbers), max_size=5), values
        ),
    }
    return _mutated(draw, valid, wild, ["trace_id", "extra", "label"])


@st.composite
def outcomes(draw: Any) -> dict[str, Any]:
    valid = {
        "prediction_id": valid_ids,
        "label": valid_labels,
        "timestamp": st.sampled_from(["2024-01-01T00:00:00Z", "2030-06-01T12:00:00.25-05:00"]),
        "model_id": _maybe(st.one_of(valid_ids, st.none())),
    }
    wild = {
        "prediction_id": identifiers,
        "label": values,
        "timestamp": timestamps,
        "model_id": st.one_of(identifiers, st.none()),
        "schema_version": st.sampled_from(["1.0", "x" * 17, None]),
    }
    return _mutated(draw, valid, wild, ["note", "features"])


def encoded(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


raw_events = st.one_of(
    st.builds(encoded, predictions()),
    st.builds(encoded, outcomes()),
    st.sampled_from([b"", b"[]", b"{", b"null", b'{"a": NaN}', b"\xff\xfe", b'{"features": 1e400}']),
    st.builds(lambda e: encoded(e).replace(b"}", b', "model_id": "dup"}', 1), predictions()),
)


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (1, 1.0 and True differ), NaN never occurs."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


def _expected(raw: bytes) -> PredictionEvent | OutcomeEvent | InvalidEvent:
    try:
        return decode_any(raw, LIMITS)
    except InvalidEvent as error:
        return error


def _check(raws: list[bytes]) -> None:
    decoded = decode_batch(raws, positions=np.arange(100, 100 + len(raws)), limits=LIMITS, kind="any")
    rejected = dict(decoded.rejected)
    p_at = {int(p) - 100: i for i, p in enumerate(decoded.predictions.positions)}
    o_at = {int(p) - 100: i for i, p in enumerate(decoded.outcomes.positions)}
    assert len(rejected) + len(p_at) + len(o_at) == len(raws)
    for index, raw in enumerate(raws):
        expected = _expected(raw)
        if isinstance(expected, InvalidEvent):
            assert index in rejected, (raw, expected)
            assert (rejected[index].reason, str(rejected[index])) == (expected.reason, str(expected))
        elif isinstance(expected, PredictionEvent):
            assert index in p_at, (raw, rejected.get(index))
            batch, i = decoded.predictions, p_at[index]
            assert batch.model_ids[i] == expected.model_id
            assert batch.prediction_ids[i] == expected.prediction_id
            assert batch.model_versions[i] == expected.model_version
            assert batch.timestamps[i] == expected.timestamp.timestamp()
            assert _same(batch.features[i], expected.features)
            assert _same(batch.predictions[i], expected.prediction)
            assert _same(batch.probabilities[i], expected.probabilities)
            assert batch.slices[i] == expected.slices
            assert _same(batch.latency_ms[i], expected.latency_ms)
            status = expected.request_status
            assert batch.request_status[i] == (None if status is None else status.value)
            assert _same(batch.attributions[i], expected.attributions)
        else:
            assert index in o_at, (raw, rejected.get(index))
            batch, i = decoded.outcomes, o_at[index]
            assert batch.prediction_ids[i] == expected.prediction_id
            assert _same(batch.labels[i], expected.label)
            assert batch.model_ids[i] == expected.model_id
            assert batch.timestamps[i] == expected.timestamp.timestamp()


BASE = {
    "model_id": "m",
    "prediction_id": "p",
    "timestamp": "2024-01-01T00:00:00Z",
    "features": {"a": 1},
    "prediction": 1,
}
PITFALLS = [
    {**BASE, "model_id": "a\n"},  # Python's `$` matches before a final newline, pydantic's does not
    {**BASE, "timestamp": "2024-01-01T00:00:00.9999999Z"},  # pydantic truncates past microseconds
    {**BASE, "timestamp": "2024-01-01T00:00:00+24:00"},
    {**BASE, "timestamp": "2024-12-31T23:59:60Z"},
    {**BASE, "timestamp": "2023-02-29T00:00:00Z"},
    {**BASE, "timestamp": 1704067200},
    {**BASE, "features": {"a": 2**63}},  # orjson: an int; past int64 for msgspec's bounds
    {**BASE, "features": {"a": 2**64}},  # orjson: a float
    {**BASE, "features": {"a": -(2**63) - 1}},
    {**BASE, "prediction": "x" * 13},
    {**BASE, "features": {"a": "x" * 13}},
    {**BASE, "features": {"a": [1, 2.5, -3]}},  # integers in a vector read as floats on both paths
    {**BASE, "features": {"a": [1.0, 2.0, 3.0, 4.0]}},  # over max_vector_length
    {**BASE, "features": {"a": [1.0, True]}},
    {**BASE, "features": {"a": [2**64, 1e308]}},
    {**BASE, "features": {"a": []}},
    {**BASE, "features": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}},
    {**BASE, "slices": {"a": "1", "b": "2", "c": "3"}},
    {**BASE, "probabilities": {"0": 0.5, "1": 0.4}},
    {**BASE, "probabilities": {"0": 0.5, "1": "0.5"}},
    {**BASE, "latency_ms": "12"},
    {**BASE, "trace_id": "t-1"},
    {**BASE, "attributions": {"a": 1, "b": -0.5}},  # an integer attribution is a float on both paths
    {**BASE, "attributions": {"a": 2**64}},
    {**BASE, "attributions": {"a": True}},
    {**BASE, "attributions": {"a": "0.5"}},
    {**BASE, "attributions": {"": 0.5}},
    {**BASE, "attributions": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}},
    {**BASE, "attributions": {"a": None}},
    {"prediction_id": "p", "label": True, "timestamp": "2024-01-01T00:00:00Z", "features": None},
    {"prediction_id": "p", "label": "x" * 13, "timestamp": "2024-01-01T00:00:00Z"},
]


@pytest.mark.parametrize("event", PITFALLS, ids=range(len(PITFALLS)))
def test_known_pitfalls_get_the_same_verdict_and_values(event: dict[str, Any]) -> None:
    _check([encoded(event)])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_events)
def test_one_event_gets_the_same_verdict_and_values_from_both_doors(raw: bytes) -> None:
    _check([raw])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_events, min_size=2, max_size=12))
def test_a_batch_keeps_input_order_and_judges_each_event_alone(raws: list[bytes]) -> None:
    _check(raws)


def test_the_fast_path_takes_the_common_events_without_pydantic(monkeypatch) -> None:
    """The agreement above would hold trivially if every event went through pydantic."""
    import monitor.contracts.batch as batch_module

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pydantic path used")

    monkeypatch.setattr(batch_module, "decode_any", refuse)
    raws = [
        encoded(
            {
                "model_id": "m",
                "prediction_id": f"p{i}",
                "timestamp": "2024-01-01T00:00:00.5+01:00",
                "features": {"a": i, "b": "x", "c": None, "d": True},
                "prediction": 0.25,
                "probabilities": {"0": 0.75, "1": 0.25},
                "slices": {"country": "DE"},
                "latency_ms": 3,
                "request_status": "ok",
                "attributions": {"a": 0.5, "b": -1},
            }
        )  # fmt: skip
        for i in range(3)
    ] + [encoded({"prediction_id": "p1", "label": 1, "timestamp": "2024-01-02T00:00:00Z"})]
    decoded = decode_batch(raws, positions=range(4), limits=LIMITS)
    assert (len(decoded.predictions), len(decoded.outcomes), decoded.rejected) == (3, 1, [])
    assert decoded.predictions.column("a") == [0, 1, 2]
    assert decoded.predictions.attributions[0] == {"a": 0.5, "b": -1.0}
