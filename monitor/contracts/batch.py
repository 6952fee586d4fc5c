"""Decode a batch of raw events straight into columns: the door into the monitor for a whole batch.

The pydantic models in `events` stay the contract (`schemas/` are generated from them) and the
judge of every event the fast path does not accept. The fast path is msgspec: its typed decoder
checks types, lengths and patterns in C while it parses, with no model object per event. What is
left (the timestamp range, probabilities summing to 1) is checked on the batch's arrays. The fast
path only accepts events pydantic accepts too, with the same values
(`tests/contracts/test_batch_agreement.py` checks it on generated events). Every event it does
not accept (an unknown top-level field, a form only pydantic's lax parsing takes, an invalid
event) goes through pydantic one at a time, which accepts it or words the reason.

>>> raw = [b'{"model_id": "fraud", "prediction_id": "p1", "timestamp": "2024-01-01T00:00:00Z",'
...        b' "features": {"amount": 12.5, "country": "DE"}, "prediction": 0.93}',
...        b'{"model_id": "fraud", "prediction_id": "p2", "timestamp": "yesterday",'
...        b' "features": {}, "prediction": 1}']
>>> decoded = decode_batch(raw, positions=[10, 11], kind="prediction")
>>> batch = decoded.predictions
>>> len(batch), batch.timestamps.tolist(), batch.column("amount"), batch.positions.tolist()
(1, [1704067200.0], [12.5], [10])
>>> [(index, error.reason.value) for index, error in decoded.rejected]
[(1, 'schema')]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from itertools import repeat
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import numpy as np
from msgspec import Meta

from monitor.contracts.events import SCHEMA_VERSION, UNVERSIONED, OutcomeEvent, PredictionEvent
from monitor.contracts.limits import EventLimits
from monitor.contracts.validation import InvalidEvent, decode_any, decode_outcome, decode_prediction

if TYPE_CHECKING:
    from monitor.contracts.privacy import PrivacyPolicy

EventKind = Literal["prediction", "outcome", "any"]


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of `values` (numpy would make a 2-d array of a list of lists)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@dataclass(slots=True)
class PredictionBatch:
    """Validated predictions as columns, one entry per event in input order.

    `positions` are the input positions (Kafka offsets, replay line ids) that findings and alerts
    report. Per-event columns are numpy arrays (object arrays for text and mappings), so a model's
    share of a batch is one fancy index (`take`); feature values are transposed into one column
    per feature on first use (`column`)."""

    positions: np.ndarray
    timestamps: np.ndarray
    """Event time, seconds since the epoch (float64)."""
    model_ids: np.ndarray
    model_versions: np.ndarray
    prediction_ids: np.ndarray
    features: np.ndarray
    """One mapping name -> value per event."""
    predictions: np.ndarray
    probabilities: np.ndarray
    """A mapping class -> probability per event, or None."""
    slices: np.ndarray
    latency_ms: np.ndarray
    request_status: np.ndarray
    """`ok`, `error`, `timeout` or None."""
    extra_fields: np.ndarray
    """Unknown top-level fields on each event (allowed, not monitored, counted)."""
    attributions: np.ndarray
    """A mapping feature name -> attribution (e.g. its SHAP value) per event, or None."""
    _columns: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.positions)

    def column(self, name: str) -> list[Any]:
        """Feature `name`'s value per event (None where an event lacks it)."""
        values = self._columns.get(name)
        if values is None:
            values = self._columns[name] = list(map(dict.get, self.features, repeat(name)))
        return values

    def feature_names(self) -> set[str]:
        return set().union(*self.features)

    def take(self, index: np.ndarray | slice) -> PredictionBatch:
        """The events at `index` (an index array or a slice), in that order."""
        return PredictionBatch(
            self.positions[index],
            self.timestamps[index],
            self.model_ids[index],
            self.model_versions[index],
            self.prediction_ids[index],
            self.features[index],
            self.predictions[index],
            self.probabilities[index],
            self.slices[index],
            self.latency_ms[index],
            self.request_status[index],
            self.extra_fields[index],
            self.attributions[index],
        )

    def by_model(self) -> dict[str, np.ndarray]:
        """Model id -> indices of its events, in input order, models in order of first event."""
        if len(self) == 0:
            return {}
        first = self.model_ids[0]
        if (self.model_ids == first).all():
            return {first: np.arange(len(self))}
        names, inverse = np.unique(self.model_ids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        groups = {names[inverse[chunk[0]]]: chunk for chunk in np.split(order, bounds)}
        return dict(sorted(groups.items(), key=lambda item: item[1][0]))

    @classmethod
    def empty(cls) -> PredictionBatch:
        return cls.from_events([], [])

    @classmethod
    def from_events(cls, events: Sequence[PredictionEvent], positions: Sequence[int]) -> PredictionBatch:
        """Columns of validated `PredictionEvent`s (tests, and callers that hold events)."""
        return _prediction_batch(
            [_prediction_row(event) for event in events],
            [event.timestamp.timestamp() for event in events],
            [len(event.model_extra or ()) for event in events],
            np.asarray(positions, dtype=np.int64),
        )


@dataclass(slots=True)
class OutcomeBatch:
    """Validated outcomes as columns, one entry per event in input order."""

    positions: np.ndarray
    timestamps: np.ndarray
    prediction_ids: np.ndarray
    labels: np.ndarray
    model_ids: np.ndarray
    """The model the producer named, or None."""

    def __len__(self) -> int:
        return len(self.positions)

    @classmethod
    def empty(cls) -> OutcomeBatch:
        return cls.from_events([], [])

    @classmethod
    def from_events(cls, events: Sequence[OutcomeEvent], positions: Sequence[int]) -> OutcomeBatch:
        return _outcome_batch(
            [_outcome_row(event) for event in events],
            [event.timestamp.timestamp() for event in events],
            np.asarray(positions, dtype=np.int64),
        )


def columns_of(
    events: Sequence[PredictionEvent | OutcomeEvent], positions: Sequence[int]
) -> tuple[PredictionBatch, OutcomeBatch]:
    """Validated events (predictions and outcomes, in input order) as the two batches."""
    is_prediction = [isinstance(event, PredictionEvent) for event in events]
    split = [
        [(event, at) for event, at, wanted in zip(events, positions, is_prediction, strict=True) if wanted == kind]
        for kind in (True, False)
    ]
    (predictions, p_at), (outcomes, o_at) = ((list(zip(*pairs, strict=True)) or [(), ()]) for pairs in split)
    return PredictionBatch.from_events(predictions, p_at), OutcomeBatch.from_events(outcomes, o_at)


@dataclass(slots=True)
class DecodedBatch:
    predictions: PredictionBatch
    outcomes: OutcomeBatch
    rejected: list[tuple[int, InvalidEvent]]
    """(index in the input, why) of each refused event, in input order."""


# -- the msgspec contract, derived from the pydantic one for a set of limits -----------------------

_TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)"
"""RFC 3339 with at most microseconds: pydantic truncates finer fractions where Python rounds, so
those (and every other form pydantic's lax parsing accepts) take the pydantic path."""
_ONE_TIMESTAMP = re.compile(_TIMESTAMP)
_TIMESTAMP_LINES = re.compile(f"{_TIMESTAMP}(?:\n{_TIMESTAMP})*")
_CONTROL = re.compile(r"[\x00-\x1f]")
"""What an identifier may not hold (pydantic's pattern `^[^\x00-\x1f]+$`)."""


@cache
def _decoders(limits: EventLimits) -> tuple[msgspec.json.Decoder, msgspec.json.Decoder]:
    """Prediction and outcome decoders enforcing what `events` declares, for these limits, but
    for the patterns (identifiers, timestamps), which `_valid_predictions` checks once per batch
    (a regular expression per event costs more than the rest of its decoding).

    Field order matters: `_prediction_row` and `_outcome_row` build the same tuples from pydantic
    events (with None for the timestamp, which travels as seconds beside them)."""
    identifier = Annotated[str, Meta(min_length=1, max_length=256)]
    text = Annotated[str, Meta(max_length=limits.max_string_length)]
    # orjson reads integers past 64 bits as floats; those (and unsigned ones over int64) go to pydantic
    integer = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
    label = bool | integer | float | text
    version = Annotated[str, Meta(max_length=16)]
    vector = Annotated[list[float], Meta(max_length=limits.max_vector_length)]
    features = Annotated[dict[str, label | vector | None], Meta(max_length=limits.max_features)]
    slice_value = Annotated[str, Meta(max_length=256)]
    slices = Annotated[dict[identifier, slice_value], Meta(max_length=limits.max_slices)]
    probability = Annotated[float, Meta(ge=0.0, le=1.0)]
    prediction = msgspec.defstruct(
        "Prediction",
        [
            ("model_id", identifier),
            ("prediction_id", identifier),
            ("timestamp", str),
            ("features", features),
            ("prediction", label),
            ("schema_version", version, SCHEMA_VERSION),
            ("model_version", identifier, UNVERSIONED),
            ("probabilities", dict[identifier, probability] | None, None),
            ("slices", slices | None, None),
            ("latency_ms", Annotated[float, Meta(ge=0.0)] | None, None),
            ("request_status", Literal["ok", "error", "timeout"] | None, None),
            ("attributions", Annotated[dict[str, float], Meta(max_length=limits.max_features)] | None, None),
        ],
        forbid_unknown_fields=True,
    )
    outcome = msgspec.defstruct(
        "Outcome",
        [
            ("prediction_id", identifier),
            ("label", label),
            ("timestamp", str),
            ("model_id", identifier | None, None),
            ("schema_version", version, SCHEMA_VERSION),
        ],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(prediction), msgspec.json.Decoder(outcome)


def _each(
    texts: Sequence[str], all_good: Callable[[str], bool], good: Callable[[str], bool], joint: str = "\n"
) -> np.ndarray:
    """Whether each text passes `good`, asking `all_good` of all of them joined by `joint` first
    (one regular-expression scan per batch; per text only when some fail)."""
    if all_good(joint.join(texts)):
        return np.ones(len(texts), dtype=bool)
    return np.fromiter(map(good, texts), dtype=bool, count=len(texts))


def _no_control(text: str) -> bool:
    return _CONTROL.search(text) is None


def _timestamps_ok(texts: Sequence[str]) -> np.ndarray:
    return _each(texts, lambda joined: _TIMESTAMP_LINES.fullmatch(joined) is not None,
                 lambda text: _ONE_TIMESTAMP.fullmatch(text) is not None)  # fmt: skip


def _identifiers_ok(texts: Sequence[str]) -> np.ndarray:
    """No control characters (lengths are checked while decoding)."""
    return _each(texts, _no_control, _no_control, joint=" ")


def _keys_ok(mappings: Sequence[dict[str, Any] | None], long: int, control: bool) -> np.ndarray:
    """Each mapping's keys between 1 and `long` characters (and without control characters when
    `control`): checked on the batch's distinct keys, per mapping only when one fails."""

    def good(key: str) -> bool:
        return 1 <= len(key) <= long and (not control or _no_control(key))

    keys = set().union(*filter(None, mappings))
    if all(map(good, keys)):
        return np.ones(len(mappings), dtype=bool)
    return np.fromiter((not m or all(map(good, m)) for m in mappings), dtype=bool, count=len(mappings))


def _valid_predictions(rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
    model_ids, prediction_ids, timestamps, features, _, _, versions, probabilities, slices, _, _, attributions = zip(
        *rows, strict=True
    )
    good = _timestamps_ok(timestamps)
    for texts in (model_ids, prediction_ids, versions):
        good &= _identifiers_ok(texts)
    good &= _keys_ok(features, 256, control=False)
    good &= _keys_ok(attributions, 256, control=False)
    good &= _keys_ok(probabilities, 256, control=True)
    good &= _keys_ok(slices, 256, control=True)
    for i, given in enumerate(probabilities):
        if given and abs(sum(given.values()) - 1.0) > 1e-3:
            good[i] = False
    return good


def _valid_outcomes(rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
    prediction_ids, _, timestamps, model_ids, _ = zip(*rows, strict=True)
    good = _timestamps_ok(timestamps) & _identifiers_ok(prediction_ids)
    named = [i for i, model_id in enumerate(model_ids) if model_id is not None]
    good[named] &= _identifiers_ok([model_ids[i] for i in named])
    return good


def _prediction_row(event: PredictionEvent) -> tuple[Any, ...]:
    status = event.request_status
    return (
        event.model_id,
        event.prediction_id,
        None,
        event.features,
        event.prediction,
        event.schema_version,
        event.model_version,
        event.probabilities,
        event.slices,
        event.latency_ms,
        None if status is None else status.value,
        event.attributions,
    )


def _outcome_row(event: OutcomeEvent) -> tuple[Any, ...]:
    return (event.prediction_id, event.label, None, event.model_id, event.schema_version)


def _prediction_batch(
    rows: Sequence[tuple[Any, ...]], times: Sequence[float], extras: Sequence[int], positions: np.ndarray
) -> PredictionBatch:
    columns = list(zip(*rows, strict=True)) if rows else [()] * 12
    (
        model_ids,
        prediction_ids,
        _,
        features,
        predictions,
        _,
        versions,
        probabilities,
        slices,
        latency,
        status,
        attributions,
    ) = columns
    return PredictionBatch(
        positions=positions,
        timestamps=np.asarray(times, dtype=np.float64).reshape(len(rows)),
        model_ids=_objects(model_ids),
        model_versions=_objects(versions),
        prediction_ids=_objects(prediction_ids),
        features=_objects(features),
        predictions=_objects(predictions),
        probabilities=_objects(probabilities),
        slices=_objects(slices),
        latency_ms=_objects(latency),
        request_status=_objects(status),
        extra_fields=np.asarray(extras, dtype=np.int64).reshape(len(rows)),
        attributions=_objects(attributions),
    )


def _outcome_batch(rows: Sequence[tuple[Any, ...]], times: Sequence[float], positions: np.ndarray) -> OutcomeBatch:
    prediction_ids, labels, _, model_ids, _ = list(zip(*rows, strict=True)) if rows else [()] * 5
    return OutcomeBatch(
        positions=positions,
        timestamps=np.asarray(times, dtype=np.float64).reshape(len(rows)),
        prediction_ids=_objects(prediction_ids),
        labels=_objects(labels),
        model_ids=_objects(model_ids),
    )


def _epoch_seconds(texts: Sequence[str]) -> list[float] | None:
    """Seconds since the epoch of RFC 3339 texts, or None when one is not a real time (a 30
    February, an hour 24: the pattern lets those through, pydantic words why they are wrong)."""
    try:
        return [datetime.fromisoformat(text).timestamp() for text in texts]
    except ValueError:
        return None


def decode_batch(
    raws: Sequence[bytes],
    positions: Sequence[int] | np.ndarray,
    limits: EventLimits | None = None,
    kind: EventKind = "any",
    privacy: PrivacyPolicy | None = None,
) -> DecodedBatch:
    """Validate and decode `raws` into columns; `positions[i]` is the input position of `raws[i]`.

    `kind` says what the input holds: predictions, outcomes, or both (a replay file: an object
    with `label` and no `features` is an outcome). `privacy` removes the features marked `pii`
    from the predictions before anything else sees them (`monitor.contracts.privacy`); the
    refused keep their reasons as they are (`PrivacyPolicy.refusal` says what a dead letter may
    keep of them)."""
    limits = limits or EventLimits.default()
    prediction_decoder, outcome_decoder = _decoders(limits)
    max_bytes = limits.max_event_bytes
    fast_predictions: list[tuple[int, Any]] = []
    fast_outcomes: list[tuple[int, Any]] = []
    slow: list[int] = []
    decoders = {
        "prediction": ((prediction_decoder, fast_predictions),),
        "outcome": ((outcome_decoder, fast_outcomes),),
        "any": ((prediction_decoder, fast_predictions), (outcome_decoder, fast_outcomes)),
    }[kind]
    errors = (msgspec.ValidationError, msgspec.DecodeError)
    first_decoder, first_out = decoders[0]
    try:  # the common case, every event of the first kind and within the size limit: no Python loop
        if max(map(len, raws), default=0) > max_bytes:
            raise msgspec.DecodeError
        first_out += enumerate(map(first_decoder.decode, raws))
    except errors:
        first_out.clear()
        for index, raw in enumerate(raws):
            if len(raw) > max_bytes:
                slow.append(index)
                continue
            for decoder, out in decoders:
                try:
                    out.append((index, decoder.decode(raw)))
                    break
                except errors:
                    continue
            else:
                slow.append(index)

    p_rows, p_times, p_at = _checked(fast_predictions, slow, limits, _valid_predictions)
    o_rows, o_times, o_at = _checked(fast_outcomes, slow, limits, _valid_outcomes)
    p_extras = [0] * len(p_rows)
    rejected: list[tuple[int, InvalidEvent]] = []
    decode = {"prediction": decode_prediction, "outcome": decode_outcome, "any": decode_any}[kind]
    for index in sorted(slow):
        try:
            event = decode(raws[index], limits)
        except InvalidEvent as error:
            rejected.append((index, error))
            continue
        if isinstance(event, PredictionEvent):
            p_rows.append(_prediction_row(event))
            p_times.append(event.timestamp.timestamp())
            p_at.append(index)
            p_extras.append(len(event.model_extra or ()))
        else:
            o_rows.append(_outcome_row(event))
            o_times.append(event.timestamp.timestamp())
            o_at.append(index)
    positions = np.asarray(positions, dtype=np.int64)
    p_at, p_rows, p_times, p_extras = _in_input_order(p_at, p_rows, p_times, p_extras)
    o_at, o_rows, o_times = _in_input_order(o_at, o_rows, o_times)
    predictions = _prediction_batch(p_rows, p_times, p_extras, positions[p_at])
    if privacy is not None and privacy.active:
        privacy.apply(predictions.model_ids, predictions.features, predictions.attributions)
    return DecodedBatch(predictions, _outcome_batch(o_rows, o_times, positions[o_at]), rejected)


def _in_input_order(at: list[int], *columns: list[Any]) -> tuple[np.ndarray, ...]:
    """`at` (input indices: the fast path's, then pydantic's) sorted, and `columns` with it."""
    order = np.argsort(np.asarray(at, dtype=np.int64), kind="stable")
    if len(order) and (order[:-1] > order[1:]).any():
        columns = tuple([column[i] for i in order] for column in columns)
    return (np.asarray(at, dtype=np.int64)[order], *columns)


def _checked(
    fast: list[tuple[int, Any]],
    slow: list[int],
    limits: EventLimits,
    valid: Callable[[Sequence[tuple[Any, ...]]], np.ndarray],
) -> tuple[list[tuple[Any, ...]], list[float], list[int]]:
    """The rows, times and input indices of the fast path's events that pass the batch checks
    (`valid`, then the timestamp range); the others join `slow`, where pydantic words why they
    fail."""
    if not fast:
        return [], [], []
    at, structs = zip(*fast, strict=True)
    rows = list(map(msgspec.structs.astuple, structs))
    good = valid(rows)
    if not good.all():
        slow.extend(a for a, ok in zip(at, good, strict=True) if not ok)
        keep = np.flatnonzero(good)
        rows, at = [rows[i] for i in keep], [at[i] for i in keep]
    times = _epoch_seconds([row[2] for row in rows])
    if times is None:
        slow.extend(at)
        return [], [], []
    array = np.asarray(times)
    in_range = (array >= limits.earliest_timestamp.timestamp()) & (array < limits.latest_timestamp.timestamp())
    if in_range.all():
        return rows, times, list(at)
    slow.extend(a for a, ok in zip(at, in_range, strict=True) if not ok)
    keep = np.flatnonzero(in_range)
    return [rows[i] for i in keep], [times[i] for i in keep], [at[i] for i in keep]
