"""Drift per slice: the model's drift detectors on each of its largest slices (`country=DE`).

A change in one country or one customer segment can vanish in the total: a shift of one standard
deviation in a tenth of the traffic moves the all-traffic mean by a tenth of one, under what the
all-traffic detectors can tell from noise. For the keys named in `slice_drift.keys`:

1. Choice. Over the model's first `selection_events` events, each key's values are counted
   (`ValueCounts`: `CANDIDATES_PER_SLICE` x `max_slices` counters and a distinct-count sketch,
   bounded however many distinct values arrive). The `max_slices` largest are watched; the rest
   are left out, and counted (values, events since the choice) in every slice alert's evidence.
2. Watch. Each watched slice has a `DriftMonitor` of its own: its reference is its first
   `reference_events` events after the choice, and the model's numeric, categorical and
   prediction detectors are fitted on it. Not per slice: the multivariate test and data-quality
   alerts; the all-traffic checks cover those (a slice's broken data still keeps its own drift
   tests from judging, as on all traffic).
3. Alerts. Findings are the all-traffic kinds (`feature_drift`, `prediction_drift`) with the
   slice as `key=value`: their own fingerprint, and a summary naming the slice and its share of
   the traffic. While the same alert fires on all traffic, the slice's is muted
   (`alerts.lifecycle`): a change everywhere is the all-traffic alert's to report.

Windows. With count windows a slice counts its own events, `max(min_events, share x the model's
window)` of them, so a slice of 5% is tested on windows of enough events rather than never; with
time windows it has the model's windows, which the model's clock closes (`close_window`).

Budget. Every slice detector shares the model's false-alarm budget: the signal counts
`len(keys) x max_slices` times the model's univariate detectors (`drift.feature_detectors`), known
from the configuration, so the all-traffic calibration does not depend on the traffic; each slice
detector is calibrated to the same per-detector run length as every other detector of the model.

Cost: a watched slice's fit is a model's fit without the multivariate test (CPU when its reference
completes, once), and its state is a model's drift state (a reference sample while it warms up).

>>> from monitor.contracts.config import MonitorConfig
>>> config = MonitorConfig.model_validate({"models": [{"model_id": "fraud", "slice_drift": {"keys": ["country"]}}]})
>>> signal = SliceDrift(config.model("fraud"), config)
>>> signal.observe(PredictionBatch.empty()), signal.watched
([], {})
"""

from __future__ import annotations

import base64
import heapq
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np
from datasketches import hll_sketch

from monitor.contracts.alert import AlertKind
from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import FeatureType, ModelConfig, MonitorConfig, SliceDriftConfig
from monitor.core.finding import Finding
from monitor.monitoring.drift import DriftMonitor, feature_detectors
from monitor.monitoring.signals import SignalType

CANDIDATES_PER_SLICE = 4
"""Counters per watched slice kept while choosing: a value with more than 1 / (4 x `max_slices`
+ 1) of the choice's events is sure to be counted, whatever else arrives."""

DISTINCT_LG_K = 10
"""log2 of the HyperLogLog sketch's buckets counting a key's distinct values while choosing (~3%)."""

SLICE_KINDS = (AlertKind.feature_drift, AlertKind.prediction_drift)
"""What a slice reports; its data-quality findings are the all-traffic monitor's to report."""

LEFT_OUT = -1
"""Code of an event whose value of a key is not watched."""
MISSING = -2
"""Code of an event without a value for a key."""

_NO_SLICES = np.empty(1, dtype=object)
_NO_SLICES[0] = {}


def slice_values(slices: np.ndarray, key: str) -> list[str | None]:
    """Each event's value of slice `key` (None where it has none), from a batch's `slices` column."""
    mappings = np.where(np.equal(slices, None), _NO_SLICES, slices)
    return list(map(dict.get, mappings, repeat(key)))


class ValueCounts:
    """One key's values while the slices are chosen: the largest, counted in `capacity` counters
    (Misra-Gries: when more values are counted, every count drops by the (capacity + 1)-th largest
    and those left at zero go, so a count is low by at most events / (capacity + 1)), and how many
    distinct values there were (a HyperLogLog sketch: a few percent off, 1 KB, whatever the flood).

    >>> counts = ValueCounts(capacity=2)
    >>> counts.add(["DE", "DE", "FR", "IT", "ES", None])
    >>> counts.counts, counts.distinct()
    ({'DE': 1}, 4)
    """

    def __init__(self, capacity: int, counts: dict[str, int] | None = None, sketch: hll_sketch | None = None):
        self.capacity = capacity
        self.counts: dict[str, int] = counts or {}
        self.sketch = sketch or hll_sketch(DISTINCT_LG_K)

    def add(self, values: list[str | None]) -> None:
        """Count a batch's values of the key (None: events without one)."""
        batch = Counter(values)
        batch.pop(None, None)
        for value in batch:  # per distinct value of the batch, while choosing only
            self.sketch.update(value)
        merged = Counter(self.counts)
        merged.update(batch)
        if len(merged) > self.capacity:
            cut = heapq.nlargest(self.capacity + 1, merged.values())[-1]
            merged = Counter({value: count - cut for value, count in merged.items() if count > cut})
        self.counts = dict(merged)

    def distinct(self) -> int:
        """Distinct values counted (estimated beyond a few hundred)."""
        return max(len(self.counts), round(self.sketch.get_estimate()))

    def to_state(self) -> dict[str, Any]:
        return {"counts": self.counts, "sketch": base64.b64encode(self.sketch.serialize_compact()).decode("ascii")}

    @classmethod
    def from_state(cls, capacity: int, state: dict[str, Any]) -> ValueCounts:
        return cls(capacity, dict(state["counts"]), hll_sketch.deserialize(base64.b64decode(state["sketch"])))


@dataclass
class WatchedKey:
    """One slice key after the choice: its watched values and what the cap left out."""

    shares: dict[str, float]
    """Watched value -> its share of the model's events while choosing (largest first)."""
    values_left_out: int
    """Distinct values seen while choosing and not watched (estimated beyond a few hundred)."""
    events: int = 0
    """Events since the choice."""
    events_left_out: int = 0
    """Events since the choice with a value that is not watched."""
    codes: dict[str | None, int] = field(init=False)

    def __post_init__(self) -> None:
        self.codes = {value: j for j, value in enumerate(self.shares)} | {None: MISSING}

    def code(self, values: list[str | None]) -> np.ndarray:
        """Index in `shares` of each value; `LEFT_OUT` or `MISSING` for the others."""
        return np.fromiter(map(self.codes.get, values, repeat(LEFT_OUT)), dtype=np.int64, count=len(values))

    def to_state(self) -> dict[str, Any]:
        return {"shares": self.shares, "values_left_out": self.values_left_out, "events": self.events,
                "events_left_out": self.events_left_out}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WatchedKey:
        return cls(dict(state["shares"]), state["values_left_out"], state["events"], state["events_left_out"])


class SliceDrift:
    """The `slice_drift` signal of one model (see the module's docstring)."""

    def __init__(self, model: ModelConfig, config: MonitorConfig):
        assert model.slice_drift is not None and model.window is not None
        self.model = model
        self.settings: SliceDriftConfig = model.slice_drift
        self.selection_events = self.settings.selection_events or config.reference.warmup_events
        reference_events = self.settings.reference_events or config.reference.warmup_events
        self.slice_config = config.model_copy(
            update={"reference": config.reference.model_copy(update={"warmup_events": reference_events})}
        )
        """The model's settings, but for the warm-up: a slice's reference is its first `reference_events`."""
        self.chosen_after = 0
        """Events counted for the choice (the choice is made at `selection_events`)."""
        capacity = CANDIDATES_PER_SLICE * self.settings.max_slices
        self.candidates = {key: ValueCounts(capacity) for key in self.settings.keys}
        """Per key, its values counted while choosing; emptied by the choice."""
        self.watched: dict[str, WatchedKey] = {}
        self.monitors: dict[tuple[str, str], DriftMonitor] = {}
        """(key, value) -> the watched slice's drift monitor."""

    # -- choosing -------------------------------------------------------------------------------

    def _count(self, predictions: PredictionBatch) -> None:
        for key, counts in self.candidates.items():
            counts.add(slice_values(predictions.slices, key))
        self.chosen_after += len(predictions)

    def _choose(self) -> None:
        for key, counts in self.candidates.items():
            ranked = sorted(counts.counts.items(), key=lambda item: (-item[1], item[0]))
            largest = ranked[: self.settings.max_slices]
            shares = {value: count / self.chosen_after for value, count in largest}
            self.watched[key] = WatchedKey(shares, counts.distinct() - len(largest))
            for value, share in self.watched[key].shares.items():
                self.monitors[key, value] = self._monitor(key, value, share)
        self.candidates = {}

    def _monitor(self, key: str, value: str, share: float, state: dict[str, Any] | None = None) -> DriftMonitor:
        """The drift monitor of the slice `key`=`value`: with count windows, of `share` of the
        model's window."""
        window = self.model.window
        assert window is not None
        if window.size_seconds is None and window.size_events is not None:
            size = max(window.min_events, round(share * window.size_events))
            window = window.model_copy(update={"size_events": size})
        model = self.model.model_copy(update={"window": window})
        label = f"{key}={value}"
        if state is None:
            return DriftMonitor(model, self.slice_config, slice_label=label)
        return DriftMonitor.from_state(model, self.slice_config, state, slice_label=label)

    # -- the signal -----------------------------------------------------------------------------

    def observe(self, predictions: PredictionBatch) -> list[Finding]:
        if self.candidates:
            counted = min(len(predictions), self.selection_events - self.chosen_after)
            self._count(predictions.take(slice(0, counted)))
            if self.chosen_after < self.selection_events:
                return []
            self._choose()
            predictions = predictions.take(slice(counted, None))
        findings: list[Finding] = []
        if not len(predictions):
            return findings
        for key, watched in self.watched.items():
            codes = watched.code(slice_values(predictions.slices, key))
            watched.events += len(codes)
            watched.events_left_out += int((codes == LEFT_OUT).sum())
            for j, value in enumerate(watched.shares):
                index = np.flatnonzero(codes == j)
                if len(index):
                    monitor = self.monitors[key, value]
                    findings += self._for_slice(key, value, monitor, monitor.observe(predictions.take(index)))
                    monitor.closed_windows.clear()
        return findings

    def close_window(self, at: datetime, offset: int | None) -> list[Finding]:
        """Time windows close with the model's (count windows: a slice counts its own events)."""
        findings: list[Finding] = []
        for (key, value), monitor in self.monitors.items():
            findings += self._for_slice(key, value, monitor, monitor.advance_to(at, offset))
            monitor.closed_windows.clear()
        return findings

    def _for_slice(self, key: str, value: str, monitor: DriftMonitor, findings: list[Finding]) -> list[Finding]:
        """A slice monitor's drift findings, labelled with its slice; the active ones worded for
        it, with what the cap left out of this key in the evidence."""
        label = monitor.slice_label
        watched = self.watched[key]
        share = watched.shares[value]
        labelled = []
        for finding in findings:
            if finding.kind not in SLICE_KINDS:
                continue
            if not finding.active or finding.evidence is None:
                labelled.append(replace(finding, slice=label))
                continue
            details = {
                "slice": label,
                "slice_share": round(share, 6),
                "slices_watched": len(watched.shares),
                "slice_values_left_out": watched.values_left_out,
                "slice_events_left_out": watched.events_left_out,
                "slice_share_left_out": round(watched.events_left_out / max(watched.events, 1), 6),
            }
            evidence = finding.evidence.model_copy(update={"details": {**finding.evidence.details, **details}})
            model_id = self.model.model_id
            summary = (
                f"{model_id}, slice {label} ({100 * share:.3g}% of its traffic): "
                f"{finding.summary.removeprefix(f'{model_id}: ')}"
            )
            labelled.append(replace(finding, slice=label, evidence=evidence, summary=summary))
        return labelled

    # -- state ----------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "max_slices": self.settings.max_slices,
            "chosen_after": self.chosen_after,
            "candidates": {key: counts.to_state() for key, counts in self.candidates.items()},
            "watched": {key: watched.to_state() for key, watched in self.watched.items()},
            "monitors": {key: {value: monitor.to_state() for (k, value), monitor in self.monitors.items() if k == key}
                         for key in self.watched},
        }  # fmt: skip

    @classmethod
    def restore(cls, model: ModelConfig, config: MonitorConfig, state: dict[str, Any]) -> SliceDrift:
        """Resume from `to_state`; a state chosen under other keys or another cap starts afresh,
        choosing again (the slices it watched are not the ones the configuration asks for)."""
        signal = cls(model, config)
        chosen_under = (sorted({*state["candidates"], *state["watched"]}), state.get("max_slices"))
        if chosen_under != (sorted(signal.settings.keys), signal.settings.max_slices):
            return signal
        signal.chosen_after = state["chosen_after"]
        capacity = CANDIDATES_PER_SLICE * signal.settings.max_slices
        signal.candidates = {key: ValueCounts.from_state(capacity, c) for key, c in state["candidates"].items()}
        signal.watched = {key: WatchedKey.from_state(watched) for key, watched in state["watched"].items()}
        signal.monitors = {
            (key, value): signal._monitor(key, value, signal.watched[key].shares[value], monitor)
            for key, monitors in state["monitors"].items()
            for value, monitor in monitors.items()
        }
        return signal


def _detectors(model: ModelConfig, feature_types: dict[str, FeatureType]) -> int:
    """Each key watches up to `max_slices` slices, each with the model's univariate detectors."""
    settings = model.slice_drift
    assert settings is not None
    return len(settings.keys) * settings.max_slices * feature_detectors(model, feature_types)


SLICE_DRIFT = SignalType(
    wanted=lambda model: model.slice_drift is not None,
    detectors=_detectors,
    create=lambda model, config, drift: SliceDrift(model, config),
    restore=lambda model, config, drift, state: SliceDrift.restore(model, config, state),
)
