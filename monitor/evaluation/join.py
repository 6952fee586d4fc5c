"""`JoinStore`: predictions wait here, keyed by `prediction_id`, until their outcome arrives.

Outcomes arrive hours or days after their prediction. The store keeps a compact record of each
pending prediction (model, version, event time, prediction, positive-class probability, slices;
never its features) and hands back a `JoinedOutcome` when the outcome comes. In streaming it is
partitioned by `prediction_id` (co-partitioned with the outcomes topic); joined records are
re-keyed by `model_id` for the per-model `ModelEvaluator`, so they serialise (`to_dict`).

Policies, each with a counter (`counters()`):

* `duplicate_predictions`: a second prediction with a pending or recently joined id; the first wins.
* `predictions_over_capacity`: refused because `max_pending` predictions are waiting.
* `early_outcomes`: an outcome before its prediction is held until the predictions' event time
  (of the slowest model) passes the outcome's by `early_ttl_seconds` (`early_outcomes_joined` when its prediction comes,
  `early_outcomes_unmatched` when it expires: an unknown id, or a prediction that expired before
  the outcome came and was already forgotten).
* `duplicate_outcomes`: a second outcome for a pending, held or recently joined id; the first wins.
* `outcomes_after_expiry`: the outcome came more than `ttl_seconds` after its prediction, or after
  the prediction had expired (remembered for `tombstone_seconds`); dropped.
* `expired`: predictions never labelled within `ttl_seconds` (the complement of label coverage).
* `negative_delays`: outcomes stamped before their prediction (delay counted as 0).

Time is event time: the store's watermark is the latest timestamp it has seen (predictions and
outcomes), and a prediction expires when the watermark passes its time plus the TTL. Expiry is
cheap: predictions are queued in time buckets (`ttl / 64` wide) and a whole bucket is dropped at
once, so memory is freed at most one bucket width late; the TTL itself is applied exactly when an
outcome comes.

Memory (see `bench/evaluation_throughput.py`): a pending prediction costs its id string (kept as
the dict key), one dict entry, one int (its slot) and ~30 bytes in parallel typed arrays (time,
key, prediction, kind, probability, queue entry), about 180-190 bytes with 20-36 character ids.
Model, version and slices are interned as one tuple per distinct combination (capped).
Multiclass probabilities cost more (a side table, ~150 bytes + 4 per class).

>>> store = JoinStore(ttl_seconds=3600)
>>> store.add_prediction_fields("p1", "fraud", "v1", 1000.0, 1, {"0": 0.2, "1": 0.8}, {"country": "DE"})
>>> joined = store.add_outcome_fields("p1", True, 1060.0)
>>> joined.model_id, joined.prediction, joined.probability, joined.slices, joined.label_delay
('fraud', 1, 0.8, (('country', 'DE'),), 60.0)
>>> store.add_outcome_fields("p1", False, 1070.0) is None, store.counters()["duplicate_outcomes"]
(True, 1)
>>> store.add_prediction_fields("p2", "fraud", "v1", 2000.0, 0)
>>> store.advance(2000.0 + 3600 * 1.1)
>>> store.counters()["expired"], store.label_coverage("fraud")
(1, 0.5)
"""

from __future__ import annotations

import base64
import heapq
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from monitor.contracts.batch import OutcomeBatch, PredictionBatch
from monitor.evaluation.labels import OTHER, class_name, positive_probability

KLL_K = 200
"""KLL accuracy parameter for label-delay quantiles: rank error about 1.3%."""

UNKNOWN_MODEL = "unknown"
"""Model of an outcome whose prediction was never seen and that names no model."""

COUNTERS = (
    "predictions",
    "duplicate_predictions",
    "predictions_over_capacity",
    "outcomes",
    "joined",
    "early_outcomes",
    "early_outcomes_joined",
    "early_outcomes_unmatched",
    "early_outcomes_over_capacity",
    "duplicate_outcomes",
    "outcomes_after_expiry",
    "expired",
    "negative_delays",
    "slice_values_over_cap",
    "probabilities_without_positive_class",
)
"""Per-model counters of the join store (see the module docstring for each policy)."""

(
    _PREDICTIONS,
    _DUP_PRED,
    _OVER_CAP,
    _OUTCOMES,
    _JOINED,
    _EARLY,
    _EARLY_JOINED,
    _EARLY_UNMATCHED,
    _EARLY_OVER_CAP,
    _DUP_OUT,
    _AFTER_EXPIRY,
    _EXPIRED,
    _NEG_DELAY,
    _SLICE_OVER,
    _NO_POSITIVE,
) = range(len(COUNTERS))

# Kinds of stored prediction values, so the original Python type comes back exactly.
_FLOAT, _INT, _BOOL, _STR = 0, 1, 2, 3

_TOMB_JOINED, _TOMB_EXPIRED = 1, 2

_NAN = math.nan
_TYPE_OF = np.frompyfunc(type, 1, 1)
_ARRAY_DTYPES = {"d": np.float64, "i": np.int32, "b": np.int8}
"""numpy's view of each typed column (`array` type code)."""


@dataclass(slots=True)
class JoinedOutcome:
    """One prediction with its outcome: what the per-model evaluator consumes.

    Times are event times in seconds since the epoch. `probability` is the positive-class
    probability (NaN when the prediction carried none); `probabilities` is only set for
    multiclass predictions (more than two classes)."""

    prediction_id: str
    model_id: str
    model_version: str
    prediction_time: float
    prediction: Any
    probability: float
    slices: tuple[tuple[str, str], ...]
    label: Any
    outcome_time: float
    probabilities: dict[str, float] | None = None

    @property
    def label_delay(self) -> float:
        return max(0.0, self.outcome_time - self.prediction_time)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for the joined topic (re-keyed by `model_id`)."""
        return {
            "prediction_id": self.prediction_id,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "prediction_time": self.prediction_time,
            "prediction": self.prediction,
            "probability": None if math.isnan(self.probability) else self.probability,
            "slices": [list(pair) for pair in self.slices],
            "label": self.label,
            "outcome_time": self.outcome_time,
            "probabilities": self.probabilities,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinedOutcome:
        probability = data.get("probability")
        return cls(
            prediction_id=data["prediction_id"],
            model_id=data["model_id"],
            model_version=data["model_version"],
            prediction_time=float(data["prediction_time"]),
            prediction=data["prediction"],
            probability=_NAN if probability is None else float(probability),
            slices=tuple((str(name), str(value)) for name, value in data.get("slices") or ()),
            label=data["label"],
            outcome_time=float(data["outcome_time"]),
            probabilities=data.get("probabilities"),
        )


def prediction_fields(event: Any) -> tuple[Any, ...]:
    """The arguments of `JoinStore.add_prediction_fields` for a `PredictionEvent`: what the
    stream worker sends to the join (`monitor.stream.records.prediction_item`)."""
    return (
        event.prediction_id,
        event.model_id,
        event.model_version,
        event.timestamp.timestamp(),
        event.prediction,
        event.probabilities,
        event.slices,
    )


def outcome_fields(event: Any) -> tuple[Any, ...]:
    """The arguments of `JoinStore.add_outcome_fields` for an `OutcomeEvent`."""
    return (event.prediction_id, event.label, event.timestamp.timestamp(), event.model_id)


class JoinStore:
    """Pending predictions by id, joined to outcomes as they arrive (see the module docstring).

    Parameters are the `evaluation` and `caps` settings of `MonitorConfig` (`from_config`);
    `positive_classes` and `slice_names` come from the per-model settings."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 7 * 86400,
        early_ttl_seconds: float = 3600,
        max_pending: int = 10_000_000,
        max_early_outcomes: int = 1_000_000,
        tombstone_seconds: float | None = None,
        max_tombstones: int = 1_000_000,
        max_slice_values: int = 50,
        max_slice_names: int = 16,
        slice_names: Mapping[str, Sequence[str]] | None = None,
        positive_classes: Mapping[str, Any] | None = None,
        max_models: int = 1000,
        max_keys: int = 100_000,
        buckets_per_ttl: int = 64,
    ):
        for name, value in (
            ("ttl_seconds", ttl_seconds),
            ("early_ttl_seconds", early_ttl_seconds),
            ("max_pending", max_pending),
            ("max_slice_values", max_slice_values),
            ("max_models", max_models),
            ("max_keys", max_keys),
            ("buckets_per_ttl", buckets_per_ttl),
        ):
            if not value > 0:
                raise ValueError(f"Invalid {name!r}: {value!r}. Valid values are: numbers > 0")
        if max_early_outcomes < 0 or max_tombstones < 0 or max_slice_names < 0:
            raise ValueError("Invalid caps. Valid values are: max_early_outcomes, max_tombstones, max_slice_names >= 0")
        self.ttl = float(ttl_seconds)
        self.early_ttl = float(early_ttl_seconds)
        self.tombstone_seconds = float(early_ttl_seconds if tombstone_seconds is None else tombstone_seconds)
        self.max_pending = max_pending
        self.max_early_outcomes = max_early_outcomes
        self.max_tombstones = max_tombstones
        self.max_slice_values = max_slice_values
        self.max_slice_names = max_slice_names
        self.slice_names = {m: frozenset(names) for m, names in (slice_names or {}).items() if names}
        self.positive_classes = {m: class_name(c) for m, c in (positive_classes or {}).items()}
        self.max_models = max_models
        self.max_keys = max_keys
        self.buckets_per_ttl = buckets_per_ttl
        self._bucket_width = self.ttl / buckets_per_ttl
        self._early_width = self.early_ttl / 8
        self._tomb_width = self.tombstone_seconds / 8 if self.tombstone_seconds > 0 else 1.0
        self._init_state()

    @classmethod
    def from_config(cls, config: Any) -> JoinStore:
        """From a `MonitorConfig`: TTLs from `evaluation`, caps from `caps`, per-model slices and
        positive classes from `models`."""
        return cls(
            ttl_seconds=config.evaluation.join_ttl_seconds,
            early_ttl_seconds=config.evaluation.early_outcome_ttl_seconds,
            max_pending=config.caps.max_pending_predictions,
            max_slice_values=config.caps.max_slice_values,
            max_models=config.caps.max_models,
            slice_names={m.model_id: m.slices for m in config.models},
            positive_classes={m.model_id: m.positive_class for m in config.models},
        )

    def _init_state(self) -> None:
        # Pending predictions: id -> slot; one entry per slot in each parallel column.
        self._index: dict[str, int] = {}
        self._pid: list[str | None] = []
        self._time = array("d")
        self._key = array("i")
        self._pred = array("d")
        self._kind = array("b")
        self._prob = array("d")
        self._free = array("i")
        self._multi: dict[int, tuple[int, bytes]] = {}
        """Multiclass probabilities by slot: (interned class-names tuple, float32 bytes)."""
        self._class_sets: list[tuple[str, ...]] = []
        self._class_set_index: dict[tuple[str, ...], int] = {}
        self._strings: list[str] = []
        self._string_index: dict[str, int] = {}
        """Interned string predictions (classes)."""
        # Expiry queues: bucket id -> slots, and a heap of bucket ids.
        self._buckets: dict[int, array] = {}
        self._bucket_heap: list[int] = []
        self._watermark = -math.inf
        self._prediction_watermark = -math.inf
        """Latest prediction time of any model."""
        self._next_expiry = math.inf
        # Interned (model, version, slices) keys.
        self._keys: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []
        self._key_index: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
        self._key_model: list[int] = []
        self._key_info: list[tuple[str, str, tuple[tuple[str, str], ...], int, list[int], list[float]]] = []
        """Per key: model, version, slices, model index, the model's counters and delay buffer."""
        self._raw_keys: dict[tuple, int] = {}
        """Cache: (model, version, slices items as given) -> key."""
        self._slice_values: dict[tuple[str, str], set[str]] = {}
        self._slice_names_seen: dict[str, set[str]] = {}
        # Models: name -> index; counters and label-delay sketches per model.
        self._models: list[str] = []
        self._model_time: list[float] = []
        """Latest prediction time per model: early outcomes wait on the slowest (see `_early_clock`)."""
        self._model_index: dict[str, int] = {}
        self._counters: list[list[int]] = []
        self._delays: list[kll_doubles_sketch] = []
        self._delay_buffer: list[list[float]] = []
        # Outcomes waiting for their prediction: id -> (label, time, model or None).
        self._early: dict[str, tuple[Any, float, str | None]] = {}
        self._early_buckets: dict[int, list[str]] = {}
        self._early_heap: list[int] = []
        # Recently joined or expired ids, to tell duplicates and late outcomes apart.
        self._tombs: dict[str, int] = {}
        self._tomb_buckets: dict[int, list[str]] = {}
        self._tomb_heap: list[int] = []
        self._tomb_current: list[str] = []
        self._tomb_current_start = math.inf
        self._tomb_current_end = -math.inf

    # ------------------------------------------------------------------ batches

    def add_batch(self, predictions: PredictionBatch, outcomes: OutcomeBatch) -> list[tuple[int, JoinedOutcome]]:
        """Every prediction and outcome of a batch, in the order of their input positions;
        returns (position of the event that completed it, record) for each join."""
        if not len(outcomes) and self._add_pending_predictions(predictions):
            return []
        p = predictions
        rows = [
            *zip(p.prediction_ids, p.model_ids, p.model_versions, p.timestamps.tolist(), p.predictions,
                 p.probabilities, p.slices, strict=True),
            *zip(outcomes.prediction_ids, outcomes.labels, outcomes.timestamps.tolist(), outcomes.model_ids,
                 strict=True),
        ]  # fmt: skip
        adds = [self.add_prediction_fields] * len(p) + [self.add_outcome_fields] * len(outcomes)
        positions = np.concatenate([p.positions, outcomes.positions])
        joined = []
        for i in np.argsort(positions, kind="stable").tolist():
            record = adds[i](*rows[i])
            if record is not None:
                joined.append((int(positions[i]), record))
        return joined

    def _add_pending_predictions(self, batch: PredictionBatch) -> bool:
        """Store a batch of predictions at once, in the common case where each simply waits: new
        ids (in the batch, the store, the tombstones and the held outcomes), keys and classes
        already known, at most two classes of probabilities, room left, nothing expiring. Per
        distinct value and per bucket, not per event; the same state as one
        `add_prediction_fields` each (`tests/evaluation/test_join.py` compares them). Returns
        False, having changed nothing, when the batch needs the per-event rules."""
        n = len(batch)
        ids = batch.prediction_ids.tolist()
        wanted = set(ids)
        if (
            n < 16
            or len(wanted) < n
            or len(self._index) + n > self.max_pending
            # keys().isdisjoint walks the smaller side; set.isdisjoint(dict) would walk the whole store
            or not self._index.keys().isdisjoint(wanted)
            or not self._tombs.keys().isdisjoint(wanted)
            or not self._early.keys().isdisjoint(wanted)
        ):
            return False
        # Keys: every (model, version, slices) already interned and cached, so no cap is counted.
        raws = [
            (m, v, tuple(given.items()) if given else None)
            for m, v, given in zip(batch.model_ids, batch.model_versions, batch.slices, strict=True)
        ]
        key_of = {}
        for raw in dict.fromkeys(raws):
            key = self._raw_keys.get(raw) if raw[2] else self._key_index.get((raw[0], raw[1], ()))
            if key is None:
                return False
            key_of[raw] = key
        keys = np.fromiter(map(key_of.__getitem__, raws), dtype=np.int64, count=n)
        times = batch.timestamps
        watermark = max(self._watermark, float(times.max()))
        running = np.maximum.accumulate(np.maximum(times, self._watermark))
        if (times + self.ttl <= running).any():
            return False  # some arrive past their TTL
        width = self._bucket_width
        buckets = np.floor_divide(times, width).astype(np.int64)
        new_buckets = [int(b) for b in np.unique(buckets) if int(b) not in self._buckets]
        next_expiry = min([self._next_expiry, *((b + 1) * width + self.ttl for b in new_buckets)])
        if watermark >= next_expiry:
            return False  # something expires on the way
        # Predictions and probabilities, encoded as `add_prediction_fields` does.
        kinds, values = self._encoded_predictions(batch.predictions)
        if kinds is None:
            return False
        models = np.asarray(self._key_model, dtype=np.int64)[keys]
        given = np.flatnonzero(batch.probabilities != None)  # noqa: E711 (elementwise)
        if any(len(batch.probabilities[i]) > 2 for i in given):
            return False  # multiclass: a side table per slot
        # Nothing can fail from here on.
        probability = np.full(n, _NAN)
        for i in given:
            if batch.probabilities[i]:
                probability[i] = self._positive_probability(int(models[i]), batch.probabilities[i])
        if kinds.dtype == object:
            strings = kinds == _STR
            values[strings] = [float(self._intern_string(str(v))) for v in values[strings]]
            kinds = kinds.astype(np.int8)
        self._watermark = watermark
        self._prediction_watermark = max(self._prediction_watermark, float(times.max()))
        for m in np.unique(models).tolist():
            mine = models == m
            self._counters[m][_PREDICTIONS] += int(mine.sum())
            self._model_time[m] = max(self._model_time[m], float(times[mine].max()))
        reused = min(len(self._free), n)
        slots = np.empty(n, dtype=np.int64)
        slots[:reused] = self._free[len(self._free) - reused :][::-1]  # popped from the end, as one at a time
        slots[reused:] = np.arange(len(self._pid), len(self._pid) + n - reused)
        del self._free[len(self._free) - reused :]
        for slot, prediction_id in zip(slots[:reused].tolist(), ids[:reused], strict=True):
            self._pid[slot] = prediction_id
        self._pid.extend(ids[reused:])
        for column, data in ((self._time, times), (self._key, keys), (self._pred, values), (self._kind, kinds),
                             (self._prob, probability)):  # fmt: skip
            typed = np.asarray(data).astype(_ARRAY_DTYPES[column.typecode])
            if reused:
                np.frombuffer(column, dtype=typed.dtype)[slots[:reused]] = typed[:reused]
            column.frombytes(typed[reused:].tobytes())
        self._index.update(zip(ids, slots.tolist(), strict=True))
        order = np.argsort(buckets, kind="stable")
        bounds = np.flatnonzero(np.diff(buckets[order])) + 1
        for chunk in np.split(order, bounds):
            bucket_id = int(buckets[chunk[0]])
            bucket = self._buckets.get(bucket_id)
            if bucket is None:
                bucket = self._buckets[bucket_id] = array("i")
                heapq.heappush(self._bucket_heap, bucket_id)
            bucket.frombytes(slots[chunk].astype(np.int32).tobytes())
        self._next_expiry = next_expiry
        return True

    def _encoded_predictions(self, predictions: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Kind codes and values of predictions as stored (strings still raw: interned last)."""
        types = _TYPE_OF(predictions)
        kinds = np.full(len(predictions), -1, dtype=object)
        for kind, tp in ((_FLOAT, float), (_INT, int), (_BOOL, bool), (_STR, str)):
            kinds[np.equal(types, tp)] = kind
        if (kinds == -1).any():
            return None, predictions
        values = predictions.copy()
        if not (kinds == _STR).any():
            kinds = kinds.astype(np.int8)
            values = values.astype(np.float64)  # bools as 1.0 and 0.0, ints as floats
        return kinds, values

    # ------------------------------------------------------------------ predictions

    def add_prediction(self, event: Any) -> JoinedOutcome | None:
        """Store a `PredictionEvent`; returns the joined record if its outcome came first."""
        return self.add_prediction_fields(*prediction_fields(event))

    def add_prediction_fields(
        self,
        prediction_id: str,
        model_id: str,
        model_version: str,
        timestamp: float,
        prediction: Any,
        probabilities: Mapping[str, float] | None = None,
        slices: Mapping[str, str] | None = None,
    ) -> JoinedOutcome | None:
        """The same from plain values (`timestamp` in seconds since the epoch)."""
        if timestamp > self._prediction_watermark:
            self._prediction_watermark = timestamp
        if slices:
            raw = (model_id, model_version, tuple(slices.items()))
            key = self._raw_keys.get(raw)
            if key is None:
                key = self._intern_key(model_id, model_version, slices, raw)
        else:
            key = self._key_index.get((model_id, model_version, ()))
            if key is None:
                key = self._intern_key(model_id, model_version, None, None)
        m = self._key_model[key]
        if timestamp > self._model_time[m]:
            self._model_time[m] = timestamp
        if timestamp > self._watermark:
            self._watermark = timestamp
            if timestamp >= self._next_expiry:
                self._expire()
        counters = self._counters[m]
        counters[_PREDICTIONS] += 1
        if prediction_id in self._index or (self._tombs and prediction_id in self._tombs):
            counters[_DUP_PRED] += 1
            return None
        # Encode the prediction.
        tp = type(prediction)
        if tp is float:
            kind, value = _FLOAT, prediction
        elif tp is int:
            kind, value = _INT, float(prediction)
        elif tp is bool:
            kind, value = _BOOL, 1.0 if prediction else 0.0
        else:
            kind, value = _STR, float(self._intern_string(str(prediction)))
        probability = _NAN
        multi = None
        if probabilities:
            if len(probabilities) <= 2:
                probability = self._positive_probability(m, probabilities)
            else:
                names = tuple(class_name(k) for k in probabilities)
                multi = (self._intern_class_set(names), array("f", probabilities.values()).tobytes())
        if self._early and prediction_id in self._early:
            label, outcome_time, _ = self._early.pop(prediction_id)
            counters[_EARLY_JOINED] += 1
            probs = self._decode_multi(multi) if multi is not None else None
            return self._joined(prediction_id, key, timestamp, kind, value, probability, probs, label, outcome_time)
        if timestamp + self.ttl <= self._watermark:
            # Already past its TTL when it arrives (a lagging prediction stream).
            counters[_EXPIRED] += 1
            self._tombstone(prediction_id, m * 4 + _TOMB_EXPIRED)
            return None
        if len(self._index) >= self.max_pending:
            counters[_OVER_CAP] += 1
            return None
        if self._free:
            slot = self._free.pop()
            self._pid[slot] = prediction_id
            self._time[slot] = timestamp
            self._key[slot] = key
            self._pred[slot] = value
            self._kind[slot] = kind
            self._prob[slot] = probability
        else:
            slot = len(self._pid)
            self._pid.append(prediction_id)
            self._time.append(timestamp)
            self._key.append(key)
            self._pred.append(value)
            self._kind.append(kind)
            self._prob.append(probability)
        if multi is not None:
            self._multi[slot] = multi
        self._index[prediction_id] = slot
        bucket_id = int(timestamp // self._bucket_width)
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = self._buckets[bucket_id] = array("i")
            heapq.heappush(self._bucket_heap, bucket_id)
            self._next_expiry = min(self._next_expiry, (self._bucket_heap[0] + 1) * self._bucket_width + self.ttl)
        bucket.append(slot)
        return None

    def _positive_probability(self, m: int, probabilities: Mapping[str, float]) -> float:
        p = positive_probability(probabilities, self.positive_classes.get(self._models[m], "1"))
        if p != p:
            self._counters[m][_NO_POSITIVE] += 1
        return p

    # ------------------------------------------------------------------ outcomes

    def add_outcome(self, event: Any) -> JoinedOutcome | None:
        """Join an `OutcomeEvent` to its pending prediction; None when held, late or a duplicate."""
        return self.add_outcome_fields(*outcome_fields(event))

    def add_outcome_fields(
        self, prediction_id: str, label: Any, timestamp: float, model_id: str | None = None
    ) -> JoinedOutcome | None:
        """The same from plain values (`timestamp` in seconds since the epoch)."""
        if timestamp > self._watermark:
            self._watermark = timestamp
            if timestamp >= self._next_expiry:
                self._expire()
        slot = self._index.pop(prediction_id, None)
        if slot is None:
            return self._unmatched_outcome(prediction_id, label, timestamp, model_id)
        # The hot path, inlined: read the slot, free it, count, remember the id, build the record.
        key = self._key[slot]
        prediction_time = self._time[slot]
        self._pid[slot] = None
        self._free.append(slot)
        model, version, slices, m, counters, delays = self._key_info[key]
        counters[_OUTCOMES] += 1
        delay = timestamp - prediction_time
        if delay > self.ttl:
            counters[_EXPIRED] += 1
            counters[_AFTER_EXPIRY] += 1
            if self._multi:
                self._multi.pop(slot, None)
            self._tombstone(prediction_id, m * 4 + _TOMB_EXPIRED)
            return None
        counters[_JOINED] += 1
        if delay < 0:
            counters[_NEG_DELAY] += 1
            delay = 0.0
        delays.append(delay)
        if len(delays) >= 4096:
            self._flush_delays(m)
        if self.max_tombstones:
            self._tombs[prediction_id] = m * 4 + _TOMB_JOINED
            if self._tomb_current_end > self._watermark >= self._tomb_current_start:
                self._tomb_current.append(prediction_id)
            else:
                self._tomb_bucket_of_now().append(prediction_id)
            if len(self._tombs) > self.max_tombstones and len(self._tomb_heap) > 1:
                self._drop_tomb_bucket(heapq.heappop(self._tomb_heap))
        prediction = self._decode_prediction(self._kind[slot], self._pred[slot])
        multi = self._multi.pop(slot, None) if self._multi else None
        return JoinedOutcome(
            prediction_id,
            model,
            version,
            prediction_time,
            prediction,
            self._prob[slot],
            slices,
            label,
            timestamp,
            None if multi is None else self._decode_multi(multi),
        )

    def _decode_prediction(self, kind: int, value: float) -> Any:
        """The prediction as the event carried it, from its stored kind and number."""
        if kind == _INT:
            return int(value)
        if kind == _FLOAT:
            return value
        if kind == _BOOL:
            return value != 0.0
        return self._strings[int(value)]

    def _joined(
        self,
        prediction_id: str,
        key: int,
        prediction_time: float,
        kind: int,
        value: float,
        probability: float,
        probabilities: dict[str, float] | None,
        label: Any,
        outcome_time: float,
    ) -> JoinedOutcome:
        model, version, slices, m, counters, buffer = self._key_info[key]
        counters[_JOINED] += 1
        delay = outcome_time - prediction_time
        if delay < 0:
            counters[_NEG_DELAY] += 1
            delay = 0.0
        buffer.append(delay)
        if len(buffer) >= 4096:
            self._flush_delays(m)
        if self.max_tombstones:
            self._tombstone(prediction_id, m * 4 + _TOMB_JOINED)
        prediction = self._decode_prediction(kind, value)
        return JoinedOutcome(
            prediction_id,
            model,
            version,
            prediction_time,
            prediction,
            probability,
            slices,
            label,
            outcome_time,
            probabilities,
        )

    def _unmatched_outcome(self, prediction_id: str, label: Any, timestamp: float, model_id: str | None) -> None:
        tomb = self._tombs.get(prediction_id) if self._tombs else None
        if tomb is not None:
            # The tombstone remembers the prediction's model: tomb = model index * 4 + code.
            counters = self._counters[tomb >> 2]
            counters[_OUTCOMES] += 1
            counters[_DUP_OUT if tomb & 3 == _TOMB_JOINED else _AFTER_EXPIRY] += 1
            return None
        early = self._early.get(prediction_id)
        counters = self._counters[self._model((early[2] if early else model_id) or UNKNOWN_MODEL)]
        counters[_OUTCOMES] += 1
        if early is not None:
            counters[_DUP_OUT] += 1
            return None
        if len(self._early) >= self.max_early_outcomes:
            counters[_EARLY_OVER_CAP] += 1
            return None
        counters[_EARLY] += 1
        self._early[prediction_id] = (label, timestamp, model_id)
        bucket_id = int(timestamp // self._early_width)
        bucket = self._early_buckets.get(bucket_id)
        if bucket is None:
            bucket = self._early_buckets[bucket_id] = []
            heapq.heappush(self._early_heap, bucket_id)
            self._next_expiry = min(self._next_expiry, (self._early_heap[0] + 1) * self._early_width + self.early_ttl)
        bucket.append(prediction_id)
        return None

    # ------------------------------------------------------------------ expiry

    def advance(self, timestamp: float) -> None:
        """Move event time forward without an event (a timer), expiring what is due."""
        self._prediction_watermark = max(self._prediction_watermark, timestamp)
        self._model_time = [max(t, timestamp) for t in self._model_time]
        if timestamp > self._watermark:
            self._watermark = timestamp
            if timestamp >= self._next_expiry:
                self._expire()

    def _expire(self) -> None:
        watermark = self._watermark
        width = self._bucket_width
        heap = self._bucket_heap
        while heap and (heap[0] + 1) * width + self.ttl <= watermark:
            bucket_id = heapq.heappop(heap)
            for slot in self._buckets.pop(bucket_id):
                prediction_id = self._pid[slot]
                if prediction_id is None or int(self._time[slot] // width) != bucket_id:
                    continue  # joined since, or the slot now holds a later prediction
                del self._index[prediction_id]
                self._pid[slot] = None
                self._free.append(slot)
                if self._multi:
                    self._multi.pop(slot, None)
                m = self._key_model[self._key[slot]]
                self._counters[m][_EXPIRED] += 1
                self._tombstone(prediction_id, m * 4 + _TOMB_EXPIRED)
        early_heap = self._early_heap
        early_clock = self._early_clock() if early_heap else -math.inf
        while early_heap and (early_heap[0] + 1) * self._early_width + self.early_ttl <= early_clock:
            bucket_id = heapq.heappop(early_heap)
            for prediction_id in self._early_buckets.pop(bucket_id):
                held = self._early.get(prediction_id)
                if held is None or int(held[1] // self._early_width) != bucket_id:
                    continue
                del self._early[prediction_id]
                self._counters[self._model(held[2] or UNKNOWN_MODEL)][_EARLY_UNMATCHED] += 1
        tomb_heap = self._tomb_heap
        while tomb_heap and (
            (tomb_heap[0] + 1) * self._tomb_width + self.tombstone_seconds <= watermark
            or len(self._tombs) > self.max_tombstones
        ):
            self._drop_tomb_bucket(heapq.heappop(tomb_heap))
        self._next_expiry = min(
            (heap[0] + 1) * width + self.ttl if heap else math.inf,
            (early_heap[0] + 1) * self._early_width + self.early_ttl if early_heap else math.inf,
            (tomb_heap[0] + 1) * self._tomb_width + self.tombstone_seconds if tomb_heap else math.inf,
        )

    def _early_clock(self) -> float:
        """Event time early outcomes expire on: the latest prediction time of the slowest model.

        In streaming the outcomes' path runs ahead of the predictions' by hours of event time
        (labels are stamped later), and one model's partitions ahead of another's, even before a
        model's first prediction arrives: an outcome held for its prediction must not expire on a
        faster clock. A model with no prediction for a TTL (retired, or not started) holds the
        clock back by at most the TTL, so nothing waits forever."""
        floor = self._prediction_watermark - self.ttl
        return min((max(t, floor) for t in self._model_time), default=self._prediction_watermark)

    def _tombstone(self, prediction_id: str, code: int) -> None:
        if not self.max_tombstones or self._watermark == -math.inf:
            return
        self._tombs[prediction_id] = code
        if self._tomb_current_end > self._watermark >= self._tomb_current_start:
            self._tomb_current.append(prediction_id)  # the common case: the bucket of "now"
        else:
            self._tomb_bucket_of_now().append(prediction_id)
        if len(self._tombs) > self.max_tombstones and len(self._tomb_heap) > 1:
            self._drop_tomb_bucket(heapq.heappop(self._tomb_heap))

    def _tomb_bucket_of_now(self) -> list[str]:
        bucket_id = int(self._watermark // self._tomb_width)
        bucket = self._tomb_buckets.get(bucket_id)
        if bucket is None:
            bucket = self._tomb_buckets[bucket_id] = []
            heapq.heappush(self._tomb_heap, bucket_id)
            self._next_expiry = min(
                self._next_expiry, (self._tomb_heap[0] + 1) * self._tomb_width + self.tombstone_seconds
            )
        self._tomb_current = bucket
        self._tomb_current_start = bucket_id * self._tomb_width
        self._tomb_current_end = (bucket_id + 1) * self._tomb_width
        return bucket

    def _drop_tomb_bucket(self, bucket_id: int) -> None:
        tombs = self._tombs
        bucket = self._tomb_buckets.pop(bucket_id)
        if bucket is self._tomb_current:
            self._tomb_current_start, self._tomb_current_end = math.inf, -math.inf
        for prediction_id in bucket:
            tombs.pop(prediction_id, None)

    # ------------------------------------------------------------------ interning

    def _model(self, model_id: str) -> int:
        m = self._model_index.get(model_id)
        if m is None:
            if len(self._models) >= self.max_models and model_id != OTHER:
                return self._model(OTHER)
            m = self._model_index[model_id] = len(self._models)
            self._models.append(model_id)
            self._model_time.append(-math.inf)
            self._counters.append([0] * len(COUNTERS))
            self._delays.append(kll_doubles_sketch(KLL_K))
            self._delay_buffer.append([])
        return m

    def _intern_key(
        self, model_id: str, model_version: str, slices: Mapping[str, str] | None, raw: tuple | None
    ) -> int:
        """The key of (model, version, slices) after the caps; cached by the raw slices when no cap
        applied, so the common case is one dict lookup."""
        m = self._model(model_id)
        over = self._counters[m][_SLICE_OVER]
        model_id = self._models[m]
        pairs: tuple[tuple[str, str], ...] = ()
        if slices:
            allowed = self.slice_names.get(model_id)
            items = []
            names_seen = self._slice_names_seen.setdefault(model_id, set())
            for name, value in slices.items():
                if allowed is not None and name not in allowed:
                    continue
                if name not in names_seen:
                    if len(names_seen) >= self.max_slice_names:
                        self._counters[m][_SLICE_OVER] += 1
                        continue
                    names_seen.add(name)
                values = self._slice_values.setdefault((model_id, name), set())
                if value not in values:
                    if len(values) >= self.max_slice_values:
                        self._counters[m][_SLICE_OVER] += 1
                        value = OTHER
                    else:
                        values.add(value)
                items.append((name, value))
            items.sort()
            pairs = tuple(items)
        full = (model_id, model_version, pairs)
        key = self._key_index.get(full)
        if key is None:
            if len(self._keys) >= self.max_keys:
                # Too many distinct combinations: keep the model and version, drop the slices.
                self._counters[m][_SLICE_OVER] += 1
                fallback = (model_id, model_version, ())
                key = self._key_index.get(fallback)
                if key is not None:
                    return key
                full = fallback
                raw = None
            key = self._key_index[full] = len(self._keys)
            self._keys.append(full)
            self._key_model.append(m)
            self._key_info.append((*full, m, self._counters[m], self._delay_buffer[m]))
        if raw is not None and self._counters[m][_SLICE_OVER] == over and self._models[m] == raw[0]:
            if len(self._raw_keys) >= 2 * self.max_keys:
                self._raw_keys.clear()
            self._raw_keys[raw] = key
        return key

    def _intern_string(self, text: str) -> int:
        code = self._string_index.get(text)
        if code is None:
            code = self._string_index[text] = len(self._strings)
            self._strings.append(text)
        return code

    def _intern_class_set(self, names: tuple[str, ...]) -> int:
        code = self._class_set_index.get(names)
        if code is None:
            code = self._class_set_index[names] = len(self._class_sets)
            self._class_sets.append(names)
        return code

    def _decode_multi(self, multi: tuple[int, bytes]) -> dict[str, float]:
        values = array("f")
        values.frombytes(multi[1])
        return dict(zip(self._class_sets[multi[0]], (float(v) for v in values), strict=True))

    # ------------------------------------------------------------------ metrics

    @property
    def pending(self) -> int:
        """Predictions waiting for their outcome."""
        return len(self._index)

    @property
    def watermark(self) -> float:
        return self._watermark

    def _flush_delays(self, m: int) -> None:
        buffer = self._delay_buffer[m]
        if buffer:
            self._delays[m].update(array("d", buffer))
            buffer.clear()

    def counters(self, model_id: str | None = None) -> dict[str, int]:
        """Counters of one model, or summed over all models."""
        if model_id is not None:
            m = self._model_index.get(model_id)
            return dict(zip(COUNTERS, self._counters[m] if m is not None else [0] * len(COUNTERS), strict=True))
        totals = [sum(column) for column in zip(*self._counters, strict=True)] if self._counters else []
        totals = totals or [0] * len(COUNTERS)
        return dict(zip(COUNTERS, totals, strict=True))

    def label_coverage(self, model_id: str) -> float | None:
        """Share of the model's decided predictions (joined or expired) that got their label."""
        counts = self.counters(model_id)
        decided = counts["joined"] + counts["expired"]
        return counts["joined"] / decided if decided else None

    def label_delay_quantiles(self, model_id: str, ranks: Sequence[float] = (0.5, 0.9, 0.99)) -> dict[str, float]:
        """Label delay (seconds from prediction to outcome) at the given ranks, from a KLL sketch."""
        m = self._model_index.get(model_id)
        if m is None:
            return {}
        self._flush_delays(m)
        sketch = self._delays[m]
        if sketch.is_empty():
            return {}
        quantiles = sketch.get_quantiles(list(ranks))
        return {f"p{round(r * 100, 3):g}": float(q) for r, q in zip(ranks, quantiles, strict=True)}

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per model: counters, pending predictions, label coverage and label delay quantiles."""
        pending = [0] * len(self._models)
        for slot in self._index.values():
            pending[self._key_model[self._key[slot]]] += 1
        return {
            model: {
                **self.counters(model),
                "pending": pending[m],
                "label_coverage": self.label_coverage(model),
                "label_delay_seconds": self.label_delay_quantiles(model),
            }
            for m, model in enumerate(self._models)
        }

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume, JSON-safe (pending predictions as parallel columns).

        For a large store in streaming, keep pending predictions in a changelog-backed table by
        id instead; this form is for replay checkpoints and tests."""
        for m in range(len(self._models)):
            self._flush_delays(m)
        live = sorted(self._index.values())
        return {
            "version": 1,
            "watermark": None if self._watermark == -math.inf else self._watermark,
            "prediction_watermark": None if self._prediction_watermark == -math.inf else self._prediction_watermark,
            "model_times": [None if t == -math.inf else t for t in self._model_time],
            "models": self._models,
            "counters": self._counters,
            "delays": [base64.b64encode(s.serialize()).decode("ascii") for s in self._delays],
            "keys": [[model, version, [list(p) for p in pairs]] for model, version, pairs in self._keys],
            "strings": self._strings,
            "class_sets": [list(names) for names in self._class_sets],
            "slice_values": [[model, name, sorted(values)] for (model, name), values in self._slice_values.items()],
            "slice_names_seen": {model: sorted(names) for model, names in self._slice_names_seen.items()},
            "pending": {
                "id": [self._pid[s] for s in live],
                "time": [self._time[s] for s in live],
                "key": [self._key[s] for s in live],
                "value": [self._pred[s] for s in live],
                "kind": [self._kind[s] for s in live],
                "probability": [None if math.isnan(self._prob[s]) else self._prob[s] for s in live],
                "multi": [self._multi_state(s) for s in live],
            },
            "early": [[pid, label, t, model] for pid, (label, t, model) in self._early.items()],
            "tombstones": [[pid, code] for pid, code in self._tombs.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a state written by `to_state` (this store's settings apply)."""
        self._init_state()
        for model in state["models"]:
            self._model(model)
        for m, counts in enumerate(state["counters"]):
            self._counters[m][:] = counts
        self._delays = [kll_doubles_sketch.deserialize(base64.b64decode(s)) for s in state["delays"]]
        for m, (model, version, pairs) in enumerate(state["keys"]):
            full = (model, version, tuple((name, value) for name, value in pairs))
            self._key_index[full] = m
            self._keys.append(full)
            m_index = self._model_index[model]
            self._key_model.append(m_index)
            self._key_info.append((*full, m_index, self._counters[m_index], self._delay_buffer[m_index]))
        for text in state["strings"]:
            self._intern_string(text)
        for names in state["class_sets"]:
            self._intern_class_set(tuple(names))
        for model, name, values in state["slice_values"]:
            self._slice_values[(model, name)] = set(values)
        self._slice_names_seen = {model: set(names) for model, names in state["slice_names_seen"].items()}
        watermark = state["watermark"]
        self._watermark = -math.inf if watermark is None else watermark
        prediction_watermark = state.get("prediction_watermark", watermark)  # states before it existed
        self._prediction_watermark = -math.inf if prediction_watermark is None else prediction_watermark
        for m, t in enumerate(state.get("model_times", [prediction_watermark] * len(self._models))):
            self._model_time[m] = -math.inf if t is None else t
        pending = state["pending"]
        for i, prediction_id in enumerate(pending["id"]):
            slot = len(self._pid)
            t = pending["time"][i]
            self._pid.append(prediction_id)
            self._time.append(t)
            self._key.append(pending["key"][i])
            self._pred.append(pending["value"][i])
            self._kind.append(pending["kind"][i])
            p = pending["probability"][i]
            self._prob.append(_NAN if p is None else p)
            multi = pending["multi"][i]
            if multi is not None:
                self._multi[slot] = (multi[0], base64.b64decode(multi[1]))
            self._index[prediction_id] = slot
            bucket_id = int(t // self._bucket_width)
            if bucket_id not in self._buckets:
                self._buckets[bucket_id] = array("i")
                heapq.heappush(self._bucket_heap, bucket_id)
            self._buckets[bucket_id].append(slot)
        for prediction_id, label, t, model in state["early"]:
            self._early[prediction_id] = (label, t, model)
            bucket_id = int(t // self._early_width)
            if bucket_id not in self._early_buckets:
                self._early_buckets[bucket_id] = []
                heapq.heappush(self._early_heap, bucket_id)
            self._early_buckets[bucket_id].append(prediction_id)
        # Tombstones restart their horizon from the restored watermark.
        for prediction_id, code in state["tombstones"]:
            self._tombstone(prediction_id, code)
        self._next_expiry = -math.inf
        if self._watermark > -math.inf:
            self._expire()
        else:
            self._next_expiry = math.inf

    def _multi_state(self, slot: int) -> list[Any] | None:
        multi = self._multi.get(slot)
        return None if multi is None else [multi[0], base64.b64encode(multi[1]).decode("ascii")]

    @classmethod
    def from_state(cls, state: dict[str, Any], **settings: Any) -> JoinStore:
        store = cls(**settings)
        store.restore(state)
        return store
