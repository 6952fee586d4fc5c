"""`DriftMonitor`: the drift side of one model: reference, windows, detectors, data quality.

For each batch of the model's predictions, in order:

1. until a reference exists, the events warm it up (`reference.warmup_events`), then every
   detector is fitted and calibrated on it;
2. each event is assigned to its event-time window (`core.windows`); late ones are counted;
3. per feature, values become typed columns (`columns`); window statistics are updated;
   sequential detectors see every value and alarm at the exact event;
4. when a window closes, window tests compare it with the reference, data-quality rules check
   nulls, types, ranges, unseen categories and cardinality, and every check that found nothing
   reports a clean finding, so alerts can resolve.

The false-alarm budget (`alerting.false_alarms_per_model_per_day` over
`alerting.events_per_model_per_day`) is split between evaluation (`evaluation.budget_share`) and
drift (the rest), and the drift share equally among the model's detectors: each one is calibrated
to a run length of `run_length_events / (1 - budget_share) * number_of_detectors` values.
"""

from __future__ import annotations

import hashlib
import logging
import math
import operator
from array import array as FloatArray
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import numpy as np

from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import FeatureType, ModelConfig, MonitorConfig
from monitor.core.feature_stats import CategoryStats, NumericStats
from monitor.core.finding import Finding
from monitor.core.reference import PREDICTION, ReferenceBuilder, ReferenceProfile
from monitor.core.windows import WindowClock
from monitor.detectors import registry
from monitor.detectors._common import update_together
from monitor.detectors._window import test_windows
from monitor.detectors.base import Detector, SequentialDetector, TestResult, WindowTest
from monitor.monitoring.change import (
    SHIFTED_SD,
    categorical_change,
    describe,
    mean_moved,
    numeric_change,
    spread_moved,
    tripped_component,
)
from monitor.monitoring.columns import category_codes, category_column, numeric_column
from monitor.monitoring.signals import signal_detectors

log = logging.getLogger(__name__)

MAX_WINDOW_VALUES = 10_000
"""Values per feature a window keeps for its tests; beyond, a systematic sample (time windows)."""

MAX_SCORE_HISTORY = 20
"""Closed windows whose score each check remembers, for the evidence (`recent_scores`)."""


SMALL_REFERENCE_RATE_FACTOR = 10.0
"""How much the luck of the reference may move a detector's false-alarm rate (`reference_rows_needed`)."""


def detector_run_length(config: MonitorConfig, n_detectors: int) -> float:
    """The run length each of a model's `n_detectors` drift detectors is calibrated to: the drift
    side spends what evaluation leaves of the model's budget, equally per detector."""
    return config.alerting.run_length_events / (1.0 - config.evaluation.budget_share) * max(n_detectors, 1)


def feature_detectors(model: ModelConfig, feature_types: dict[str, FeatureType]) -> int:
    """Univariate drift detectors of a model whose reference has these features (`PREDICTION`:
    the score): one set per feature, by its type."""
    detectors = model.detectors
    assert detectors is not None, "use MonitorConfig.model()"
    count = 0
    for name, kind in feature_types.items():
        if name == PREDICTION:
            count += len(detectors.prediction)
        else:
            count += len(detectors.numeric if kind == FeatureType.numeric else detectors.categorical)
    return count


def count_detectors(model: ModelConfig, feature_types: dict[str, FeatureType]) -> int:
    """Drift detectors of a model whose reference has these features (`PREDICTION`: the score),
    with those of the optional signals it asks for (`signals.signal_detectors`)."""
    detectors = model.detectors
    assert detectors is not None, "use MonitorConfig.model()"
    count = feature_detectors(model, feature_types)
    numeric = [name for name, kind in feature_types.items() if kind == FeatureType.numeric and name != PREDICTION]
    count += len(detectors.multivariate) if len(numeric) >= 2 else 0
    return count + signal_detectors(model, feature_types)


def reference_rows_needed(
    config: MonitorConfig, model: ModelConfig, feature_types: dict[str, FeatureType]
) -> tuple[int, int]:
    """(reference rows the model's calibration needs, number of its drift detectors).

    The rule is the most sensitive detector's, the `cusum` on a numeric feature or the score,
    the one that false-alarms first on a small reference (a 200-row reference raised cusum and
    category_cusum alerts on 4,000 events of its own distribution; 1,000 and 5,000 rows, none):

    * each detector is calibrated to a run length R = `alerting.run_length_events` /
      (1 - `evaluation.budget_share`) x the number of the model's drift detectors (`detector_run_length`);
    * a CUSUM with allowance k (half the smallest of `cusum`'s `mean_shifts`: 0.25 / 2) on
      standardised values reaches its limit h about once in R values when 2 k h = ln R
      (Siegmund's approximation, Gaussian values);
    * a reference whose mean is off by d standard deviations turns one side's drift from -k
      to -(k - d), multiplying its false-alarm rate by about exp(2 h d) = R^(d / k); with n rows,
      d is about 1 / sqrt(n) (one standard error: a third of references are further off);
    * that factor stays within `SMALL_REFERENCE_RATE_FACTOR` (10) when
      n >= (ln R / (k ln 10))^2.

    With the defaults and three numeric features and one categorical (12 detectors, R = 2.4e8),
    that is about 4,500 rows, in line with the 5,000 the calibration was measured on
    (`monitor.detectors.calibration`); 200 rows make a one-standard-error reference alarm ~50,000
    times too often. The bootstrap calibration already averages over what the reference could
    have been, so this bounds the spread between deployments, not the average. Calibration
    uses at most `reference.sample_size` rows of a reference, whatever its size."""
    count = count_detectors(model, feature_types)
    params = model.detectors.params.get("cusum", {})  # type: ignore[union-attr]
    allowance = min(registry.create("cusum", **params).params["mean_shifts"]) / 2
    run_length = detector_run_length(config, count)
    needed = (math.log(run_length) / (allowance * math.log(SMALL_REFERENCE_RATE_FACTOR))) ** 2
    return int(math.ceil(needed / 100) * 100), count


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), UTC)


def _what_tripped(result: TestResult, verb: str) -> str:
    """`statistic 1.2 reached its calibrated limit 1.1`, naming the component of a detector with
    several (a CUSUM's mean up, mean down, spread) that crossed its own limit."""
    component = tripped_component(result.details)
    if component is None:
        return f"statistic {result.score:.3g} {verb} its calibrated threshold {result.threshold:.3g}"
    name, value, limit = component
    return f"component {name} {value:.4g} {verb} its calibrated limit {limit:.4g}"


def _most_moved(moved: list[list[Any]]) -> str:
    """`most in 'amount' (+0.82 sd) and 'age' (spread x1.4)`, or that no feature moved alone."""
    parts = []
    for name, smd, spread in moved:
        if mean_moved(smd):
            parts.append(f"{name!r} ({smd:+.2g} sd)")
        elif spread_moved(spread):
            parts.append(f"{name!r} (spread x{spread:.3g})")
    if not parts:
        return f"though no feature moved alone by {SHIFTED_SD:g} sd: the change is in how they vary together"
    return "most in " + ", ".join(parts)


def remember_score(history: dict[str, list[list[float]]], name: str, end: datetime, score: float) -> None:
    """Append (window end, score) to a check's bounded history (a score that is not finite is skipped)."""
    if not math.isfinite(score):
        return
    series = history.setdefault(name, [])
    series.append([end.timestamp(), float(f"{score:.6g}")])
    del series[:-MAX_SCORE_HISTORY]


def last_score(history: dict[str, list[list[float]]], name: str) -> float:
    """The score check `name` had at the last closed window (`remember_score`), NaN before one."""
    series = history.get(name)
    return series[-1][1] if series else math.nan


def recent_scores(history: list[list[float]], extra: tuple[datetime, float] | None = None) -> dict[str, Any]:
    """Evidence details from a check's history: its scores and the window ends they were taken at
    (oldest first), with `extra` (an alarm inside the open window) last."""
    points = [(datetime.fromtimestamp(end, UTC), score) for end, score in history]
    if extra is not None:
        points = [*points[-(MAX_SCORE_HISTORY - 1) :], (extra[0], float(f"{extra[1]:.6g}"))]
    return {
        "recent_scores": [score for _, score in points],
        "recent_window_ends": [end.isoformat().replace("+00:00", "Z") for end, _ in points],
    }


class ValueSample:
    """At most `capacity` values (or rows) of a window, evenly spread: every `stride`-th value is
    kept, and when full, every other kept value is dropped and the stride doubles."""

    def __init__(self, capacity: int = MAX_WINDOW_VALUES):
        self.capacity = capacity
        self.stride = 1
        self.seen = 0
        self.chunks: list[np.ndarray] = []
        self.kept = 0

    def add(self, values: np.ndarray) -> None:
        start = (-self.seen) % self.stride
        self.seen += len(values)
        chosen = values[start :: self.stride]
        self.chunks.append(chosen)
        self.kept += len(chosen)
        if self.kept > self.capacity:
            merged = np.concatenate(self.chunks)[::2]
            self.chunks, self.kept, self.stride = [merged], len(merged), self.stride * 2

    def values(self) -> np.ndarray:
        if not self.chunks:
            return np.empty(0)
        return np.concatenate(self.chunks)

    def to_state(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "stride": self.stride, "seen": self.seen, "values": self.values().tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ValueSample:
        sample = cls(state["capacity"])
        sample.stride, sample.seen = state["stride"], state["seen"]
        raw = state["values"]
        # Category codes stay integers; numbers are floats, NaN (saved as null) included.
        values = np.array(raw, dtype=np.int64 if raw and all(type(v) is int for v in raw) else float)
        if len(values):
            sample.chunks, sample.kept = [values], len(values)
        return sample


@dataclass
class FeatureMonitor:
    """One monitored column: its reference, detectors, and the open window's statistics."""

    name: str
    type: FeatureType
    kind: AlertKind
    sequential: list[SequentialDetector]
    tests: list[WindowTest]
    codes: dict[str, int] = field(default_factory=dict)
    """Category -> code (categorical only); unseen values get `len(codes)`."""
    stats: NumericStats | CategoryStats | None = None
    sample: ValueSample = field(default_factory=ValueSample)
    unseen: int = 0
    out_of_range: int = 0
    alarmed: bool = False
    """A sequential detector alarmed during the open window."""
    history: dict[str, list[list[float]]] = field(default_factory=dict)
    """Check name -> [window end (epoch seconds), score] of the last closed windows (evidence)."""
    peaks: dict[str, float] = field(default_factory=dict)
    """Sequential detector -> highest statistic at an alarm in the open window."""

    @property
    def alert_feature(self) -> str | None:
        return None if self.name == PREDICTION else self.name

    def to_state(self) -> dict[str, Any]:
        assert self.stats is not None
        return {
            "type": self.type.value,
            "kind": self.kind.value,
            "sequential": [detector_state(d) for d in self.sequential],
            "tests": [detector_state(d) for d in self.tests],
            "codes": self.codes,
            "stats": self.stats.to_state(),
            "sample": self.sample.to_state(),
            "unseen": self.unseen,
            "out_of_range": self.out_of_range,
            "alarmed": self.alarmed,
            "history": self.history,
            "peaks": self.peaks,
        }

    @classmethod
    def from_state(cls, name: str, state: dict[str, Any]) -> FeatureMonitor:
        kind_of_data = FeatureType(state["type"])
        stats_cls = NumericStats if kind_of_data is FeatureType.numeric else CategoryStats
        return cls(
            name=name,
            type=kind_of_data,
            kind=AlertKind(state["kind"]),
            sequential=[restore_detector(d) for d in state["sequential"]],  # type: ignore[misc]
            tests=[restore_detector(d) for d in state["tests"]],  # type: ignore[misc]
            codes=dict(state["codes"]),
            stats=stats_cls.from_state(state["stats"]),
            sample=ValueSample.from_state(state["sample"]),
            unseen=state["unseen"],
            out_of_range=state["out_of_range"],
            alarmed=state["alarmed"],
            history={name: [list(point) for point in points] for name, points in state.get("history", {}).items()},
            peaks=dict(state.get("peaks", {})),
        )


def detector_state(detector: Detector) -> dict[str, Any]:
    return {"name": detector.name, "state": detector.to_state()}


def restore_detector(state: dict[str, Any]) -> Detector:
    return registry.DETECTORS[state["name"]].from_state(state["state"])


def detector_seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:4], "little")


def _numbers(values: Sequence[Any]) -> np.ndarray | None:
    """`values` as float64 when every one is a number (an int or a float; not a bool, None or
    text), else None: then `numeric_column` sorts them out, segment by segment, as before."""
    try:
        array = np.frombuffer(FloatArray("d", values))  # takes ints, floats and bools; raises on the rest
    except (TypeError, OverflowError):
        return None
    maybe_bool = np.flatnonzero((array == 0.0) | (array == 1.0))
    if len(maybe_bool) and any(type(values[i]) is bool for i in maybe_bool):
        return None
    return array


class BatchColumns:
    """A batch's feature values, taken out of its events once for every window segment of it.

    When every event carries every feature of the reference (one `itemgetter` per event), each
    feature becomes a column; the numeric features whose values are all numbers become the rows
    of one float matrix (`numeric`, in the monitor's feature order), which the segment's
    statistics, range checks and CUSUMs take whole. A feature missing from an event, a null, a
    bool or a text in a numeric column: that feature (or, for a missing one, every feature) is
    taken per segment as before (`numeric_column`, `category_column`), with the same results."""

    def __init__(self, monitor: DriftMonitor, batch: PredictionBatch):
        names = [name for name in monitor.features if name != PREDICTION]
        self.size = len(batch)
        self.raw: dict[str, Sequence[Any]] = {}
        self.unknown = True
        """Whether an event may carry a feature the monitor does not know."""
        if names:
            try:
                rows = list(map(itemgetter(*names), batch.features))
            except KeyError:
                rows = None
            if rows is not None:
                self.unknown = set(map(len, batch.features)) != {len(names)}
                self.raw = dict(zip(names, zip(*rows, strict=True) if len(names) > 1 else [rows], strict=True))
        else:
            self.unknown = not all(map(operator.not_, batch.features))
        if PREDICTION in monitor.features:
            self.raw[PREDICTION] = batch.predictions.tolist()
        numbers: dict[str, np.ndarray] = {}
        for name, feature in monitor.features.items():
            if feature.type is FeatureType.numeric and name in self.raw:
                array = _numbers(self.raw[name])
                if array is not None:
                    numbers[name] = array
        self.numeric = tuple(numbers)
        self.matrix = np.vstack(list(numbers.values())) if numbers else np.empty((0, self.size))
        self._part: slice | np.ndarray = slice(0, self.size)
        self.everyone = np.arange(self.size)
        """Positions of the values of a numeric row in the segment: all of them."""

    def select(self, accepted: np.ndarray) -> None:
        """The segment: the events at `accepted` (indices into the batch, in order)."""
        contiguous = len(accepted) and int(accepted[-1]) - int(accepted[0]) + 1 == len(accepted)
        self._part = slice(int(accepted[0]), int(accepted[-1]) + 1) if contiguous else accepted
        self.everyone = np.arange(len(accepted))

    def segment(self, name: str) -> Sequence[Any]:
        """Feature `name`'s values in the segment (None where an event lacks it)."""
        raw = self.raw[name]
        if isinstance(self._part, slice):
            return raw[self._part]
        return [raw[i] for i in self._part]

    def numeric_segment(self) -> np.ndarray:
        """The rows of `numeric` in the segment (features x events)."""
        return self.matrix[:, self._part]


class DriftMonitor:
    def __init__(
        self,
        model: ModelConfig,
        config: MonitorConfig,
        reference: ReferenceProfile | None = None,
        *,
        slice_label: str | None = None,
    ):
        self.model = model
        self.config = config
        self.slice_label = slice_label
        """The slice this monitor watches for `slice_drift` (e.g. "country=C3"), or None for all the
        model's traffic. A slice's monitor has no multivariate test (the model's all-traffic
        monitor has one; its detectors still count in the budget), and its reference is its first
        `slice_drift.reference_events` events."""
        assert model.window is not None and model.detectors is not None, "use MonitorConfig.model()"
        self.clock = WindowClock(model.window)
        self.events = 0
        self.extra_fields = 0
        """Unknown top-level fields seen on events (kept out of state, counted)."""
        self.unknown_features = 0
        """Feature values whose name is not in the reference (not monitored, counted)."""
        self.vector_features = frozenset(
            name for name, spec in model.features.items() if spec.type is FeatureType.vector
        )
        """Declared embeddings: known, but left to the embedding signal (`monitoring.embeddings`)."""
        self.reference: ReferenceProfile | None = None
        self.features: dict[str, FeatureMonitor] = {}
        self.multivariate: list[WindowTest] = []
        self.multivariate_names: list[str] = []
        self.multivariate_sample = ValueSample()
        self.multivariate_history: dict[str, list[list[float]]] = {}
        """Multivariate test -> [window end, score] of the last closed windows (evidence)."""
        self._builder: ReferenceBuilder | None = None
        self._window_start: datetime | None = None
        self._window_end: datetime | None = None
        self.unfitted: dict[str, str] = {}
        """`feature/detector` -> why its reference could not fit it (state, reported)."""
        self._bounds: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        """Numeric features -> their out-of-range bounds (`_range_bounds`), for this reference."""
        self.closed_windows: list[tuple[datetime, int | None, int]] = []
        """(event time, offset, events before the close in the batch `observe` was given) of
        windows closed since the owner last drained this list: other per-window checks
        (evaluation) close on the same clock, after the same events."""
        if reference is not None:
            self._start(reference)

    # -- reference and calibration -------------------------------------------------------------

    def _start(self, reference: ReferenceProfile) -> None:
        """Fit every detector on the reference; each gets an equal share of the false-alarm budget."""
        detectors = self.model.detectors
        assert detectors is not None
        plan: dict[str, tuple[FeatureType, AlertKind, list[Detector]]] = {}
        for name, ref in reference.features.items():
            declared = self.model.features.get(name)
            kind_of_data = declared.type if declared else ref.type
            if name == PREDICTION:
                names, alert_kind = detectors.prediction, AlertKind.prediction_drift
            else:
                names = detectors.numeric if kind_of_data is FeatureType.numeric else detectors.categorical
                alert_kind = AlertKind.feature_drift
            plan[name] = (kind_of_data, alert_kind, [self._create(n) for n in names])
        numeric = [n for n, (t, _, _) in plan.items() if t is FeatureType.numeric and n != PREDICTION]
        wanted = len(numeric) >= 2 and self.slice_label is None
        multivariate = [self._create(n) for n in detectors.multivariate] if wanted else []
        types = {n: t for n, (t, _, _) in plan.items()}
        run_length = detector_run_length(self.config, count_detectors(self.model, types))
        needed, _ = reference_rows_needed(self.config, self.model, types)
        used = min(reference.n_rows, self.config.reference.sample_size)
        if used < needed:
            log.warning(
                "model %s%s: its reference of %d rows is too small for the false-alarm budget; about %d rows would "
                "do (a larger reference, or %s%s): expect more false alarms than declared",
                self.model.model_id,
                "" if self.slice_label is None else f", slice {self.slice_label}",
                used,
                needed,
                "reference.warmup_events" if self.slice_label is None else "slice_drift.reference_events",
                ", and reference.sample_size as many" if needed > self.config.reference.sample_size else "",
            )
        window_size = self.model.window.size_events or self.model.window.min_events  # type: ignore[union-attr]

        self.reference = reference
        self._bounds = {}
        for name, (kind_of_data, alert_kind, dets) in plan.items():
            ref = reference.features[name]
            codes = {c: i for i, c in enumerate(ref.categories)}
            if kind_of_data is FeatureType.numeric:
                sample = reference.numeric_sample(name)
                context: dict[str, Any] = {}
            else:
                sample, _, _ = category_codes(reference.sample.get(name, []), codes)
                context = {"n_categories": len(codes) + 1}
            fitted: list[Detector] = []
            for d in dets:
                settings = {"run_length": run_length, "window_size": window_size, "seed": detector_seed(name, d.name)}
                detector = self._fit(d, name, sample, **settings, **context)
                if detector is not None:
                    fitted.append(detector)
            self.features[name] = FeatureMonitor(
                name=name,
                type=kind_of_data,
                kind=alert_kind,
                sequential=[d for d in fitted if isinstance(d, SequentialDetector)],
                tests=[d for d in fitted if isinstance(d, WindowTest)],
                codes=codes,
            )
        if multivariate:
            matrix = np.column_stack(
                [np.array([np.nan if v is None else v for v in reference.sample[n]], dtype=float) for n in numeric]
            )
            self.multivariate_names = numeric
            fits = [
                self._fit(d, "multivariate", matrix, run_length=run_length, window_size=window_size,
                          seed=detector_seed("multivariate", d.name))
                for d in multivariate
            ]  # fmt: skip
            self.multivariate = [d for d in fits if d is not None]  # type: ignore[misc]
        self._open_window()

    def run_length(self) -> float | None:
        """The run length each detector of the model is calibrated to, its signals' included
        (`detector_run_length`); None until the reference is known (its features set the count)."""
        if self.reference is None:
            return None
        types = {name: feature.type for name, feature in self.features.items()}
        return detector_run_length(self.config, count_detectors(self.model, types))

    def _fit(self, detector: Detector, subject: str, sample: Any, **settings: Any) -> Detector | None:
        """The detector fitted on the reference, or None when the reference cannot support it
        (too few values: a feature mostly null in the warm-up). The feature keeps its other
        detectors and its data-quality checks; `unfitted` says what is not watched and why."""
        try:
            return detector.fit(sample, **settings)
        except ValueError as error:
            self.unfitted[f"{subject}/{detector.name}"] = str(error)
            log.warning("model %s: %s not watched by %s: %s", self.model.model_id, subject, detector.name, error)
            return None

    def _create(self, name: str) -> Detector:
        params = self.model.detectors.params.get(name, {})  # type: ignore[union-attr]
        return registry.create(name, **params)

    def _warm_up(self, batch: PredictionBatch) -> int:
        """Feed the reference builder; returns how many events it took."""
        if self._builder is None:
            caps = self.config.caps
            self._builder = ReferenceBuilder(
                self.model.model_id,
                {name: spec.type for name, spec in self.model.features.items()},
                max_categories=caps.max_categories,
                max_features=caps.max_features_per_model,
                sample_size=self.config.reference.sample_size,
                source="warm-up",
            )
        needed = self.config.reference.warmup_events - self._builder.n_rows
        taken = min(needed, len(batch))
        for features, prediction in zip(batch.features[:taken], batch.predictions[:taken], strict=True):
            self._builder.add(features, prediction)
        if self._builder.n_rows >= self.config.reference.warmup_events:
            reference, self._builder = self._builder.build(), None
            self._start(reference)
        return taken

    # -- events ---------------------------------------------------------------------------------

    def observe(self, batch: PredictionBatch) -> list[Finding]:
        """Process a batch of this model's predictions in order; findings in order of the events."""
        self.events += len(batch)
        self.extra_fields += int(batch.extra_fields.sum())
        warm = self._warm_up(batch) if self.reference is None else 0
        batch = batch.take(slice(warm, None))
        findings: list[Finding] = []
        columns = BatchColumns(self, batch) if self.reference is not None and len(batch) else None
        for segment in self.clock.segments(batch.timestamps):
            if len(segment.accepted):
                if columns is not None:
                    columns.select(segment.accepted)
                findings += self._observe_segment(batch.take(segment.accepted), columns)
            if segment.closes_at is not None:
                at = _time(batch.timestamps[segment.closes_at])
                offset = int(batch.positions[segment.closes_at])
                for _ in segment.closed:
                    findings += self._close_window(at, offset)
                    self.closed_windows.append((at, offset, warm + segment.closes_at + 1))
        return findings

    def advance_to(self, at: datetime, offset: int | None = None) -> list[Finding]:
        """Close the time windows that event time `at` (the stream's, not this model's) has
        passed: without it a model that goes quiet never reports its last window. The streaming
        worker calls it on a timer; count windows are unaffected."""
        findings: list[Finding] = []
        for _ in self.clock.advance_to(at.timestamp()):
            if self.reference is not None:
                findings += self._close_window(at, offset)
                self.closed_windows.append((at, offset, 0))
        return findings

    def _observe_segment(self, batch: PredictionBatch, columns: BatchColumns | None = None) -> list[Finding]:
        """The events of one window in a batch. `columns`: the batch's values taken once
        (`BatchColumns`), `batch.rows` of them; without, each feature's column is taken here."""
        if self._window_start is None:
            self._window_start = _time(batch.timestamps[0])
        self._window_end = _time(batch.timestamps[-1])
        findings: list[Finding] = []
        known = self.features.keys() | self.vector_features if self.vector_features else self.features.keys()
        if (columns is None or columns.unknown) and not batch.feature_names() <= known:
            self.unknown_features += sum(len(names - known) for names in map(dict.keys, batch.features))
        numeric_columns: dict[str, np.ndarray] = {}
        sequential: list[tuple[FeatureMonitor, SequentialDetector, np.ndarray, np.ndarray]] = []
        together = self._observe_numeric(columns) if columns is not None and columns.numeric else {}
        for name, feature in self.features.items():
            if name in together:
                values = together[name]
                if name in self.multivariate_names:
                    numeric_columns[name] = values
                sequential += [(feature, detector, values, columns.everyone) for detector in feature.sequential]  # type: ignore[union-attr]
                continue
            if columns is not None and name in columns.raw:
                raw = columns.segment(name)
            else:
                raw = list(batch.predictions) if name == PREDICTION else batch.column(name)
            if feature.type is FeatureType.numeric:
                column = numeric_column(raw)
                values, positions = column.values, column.positions
                feature.stats.update(values, nulls=column.nulls, mismatches=column.mismatches)  # type: ignore[union-attr]
                feature.out_of_range += self._out_of_range(name, values)
                if name in self.multivariate_names:
                    full = np.full(len(batch), np.nan)
                    full[positions] = values
                    numeric_columns[name] = full
            else:
                column = category_column(raw, feature.codes)
                values, positions = column.codes, column.positions
                feature.unseen += column.unseen
                feature.stats.add_counts(column.counts)  # type: ignore[union-attr]
            feature.sample.add(values)
            sequential += [(feature, detector, values, positions) for detector in feature.sequential]
        detectors = [detector for _, detector, _, _ in sequential]
        found = update_together(detectors, [values for _, _, values, _ in sequential])
        for (feature, detector, _, positions), alarms in zip(sequential, found, strict=True):
            for alarm, result in zip(alarms, detector.alarm_results, strict=True):
                position = int(positions[alarm])
                feature.alarmed = True
                feature.peaks[detector.name] = max(feature.peaks.get(detector.name, 0.0), float(result.score))
                findings.append(self._sequential_finding(feature, detector, result, batch, position))
        if self.multivariate:
            self.multivariate_sample.add(np.column_stack([numeric_columns[n] for n in self.multivariate_names]))
        findings.sort(key=lambda f: f.offset if f.offset is not None else -1)
        return findings

    def _observe_numeric(self, columns: BatchColumns) -> dict[str, np.ndarray]:
        """The numeric features whose every value in the batch is a number, as rows of one matrix:
        the window's statistics with one numpy call each for all of them (row by row: the same
        sums as `NumericStats.update` takes of each), then each feature's own bookkeeping.
        Returns each one's values in the segment."""
        matrix = columns.numeric_segment()
        means = matrix.mean(axis=1)
        m2s = ((matrix - means[:, None]) ** 2).sum(axis=1)
        lows, highs = matrix.min(axis=1), matrix.max(axis=1)
        below, above = self._range_bounds(columns.numeric)
        outside = ((matrix < below[:, None]) | (matrix > above[:, None])).sum(axis=1)
        rows = {}
        for j, name in enumerate(columns.numeric):
            feature = self.features[name]
            values = rows[name] = matrix[j]
            stats = feature.stats
            assert isinstance(stats, NumericStats)
            stats.add_summary(values, float(means[j]), float(m2s[j]), float(lows[j]), float(highs[j]))
            feature.out_of_range += int(outside[j])
            feature.sample.add(values)
        return rows

    def _range_bounds(self, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Per numeric feature, the values under the first or over the second are out of range
        (`_out_of_range`); infinite bounds for a feature with no reference values."""
        key = names
        cached = self._bounds.get(key)
        if cached is None:
            assert self.reference is not None
            below, above = [], []
            for name in names:
                stats = self.reference.features[name].stats
                if not isinstance(stats, NumericStats) or stats.values_count == 0:
                    below.append(-math.inf)
                    above.append(math.inf)
                    continue
                margin = (stats.maximum - stats.minimum) * self.config.data_quality.range_margin
                below.append(stats.minimum - margin)
                above.append(stats.maximum + margin)
            cached = self._bounds[key] = (np.array(below), np.array(above))
        return cached

    def _out_of_range(self, name: str, values: np.ndarray) -> int:
        assert self.reference is not None
        stats = self.reference.features[name].stats
        if not isinstance(stats, NumericStats) or stats.values_count == 0 or len(values) == 0:
            return 0
        margin = (stats.maximum - stats.minimum) * self.config.data_quality.range_margin
        return int(((values < stats.minimum - margin) | (values > stats.maximum + margin)).sum())

    # -- findings -------------------------------------------------------------------------------

    def _evidence(self, detector: Detector, score: float, current_size: int, details: dict[str, Any]) -> Evidence:
        assert self.reference is not None
        return Evidence(
            detector=detector.name,
            score=float(score),
            threshold=float(detector.threshold),
            window_start=self._window_start,
            window_end=self._window_end,
            reference_size=detector.reference_size or self.reference.n_rows,
            current_size=current_size,
            reference_version=self.reference.version,
            settings_hash=detector.settings_hash(),
            details=details,
        )

    def _subject(self, feature: FeatureMonitor) -> str:
        return "the model's predictions" if feature.name == PREDICTION else f"feature {feature.name!r}"

    def _sequential_finding(
        self,
        feature: FeatureMonitor,
        detector: SequentialDetector,
        result: TestResult,
        batch: PredictionBatch,
        position: int,
    ) -> Finding:
        at = _time(batch.timestamps[position])
        return Finding(
            kind=feature.kind,
            model_id=self.model.model_id,
            feature=feature.alert_feature,
            slice=None,
            active=True,
            at=at,
            model_version=batch.model_versions[position],
            evidence=self._evidence(
                detector,
                result.score,
                feature.stats.count,  # type: ignore[union-attr]
                {
                    **result.details,
                    **(change := self._change(feature)),
                    **self._distributions(feature),
                    **recent_scores(feature.history.get(detector.name, []), (at, result.score)),
                },
            ),
            summary=f"{self.model.model_id}: {describe(change, self._subject(feature))}; {detector.name} "
            + _what_tripped(result, "reached"),
            offset=int(batch.positions[position]),
        )

    def _change(self, feature: FeatureMonitor) -> dict[str, Any]:
        """How the open window differs from the reference, in the feature's units (`change`)."""
        assert self.reference is not None and feature.stats is not None
        reference = self.reference.features[feature.name].stats
        if isinstance(feature.stats, NumericStats) and isinstance(reference, NumericStats):
            return numeric_change(reference, feature.stats)
        return categorical_change(reference, feature.stats)  # type: ignore[arg-type]

    def _close_window(self, at: datetime, offset: int | None = None) -> list[Finding]:
        """The open window's findings; `offset`: the input position of the event that closed it."""
        findings: list[Finding] = []
        tested = self._window_tests()
        for feature in self.features.values():
            findings += self._close_feature(feature, at, offset, tested)
        if self.multivariate:
            findings += self._close_multivariate(at, offset)
        self._open_window()
        return findings

    def _window_tests(self) -> dict[tuple[str, int], TestResult]:
        """(feature, index of its test) -> the test on the open window, for every feature with
        enough events, the numeric ones binned and compared together (`test_windows`). Tests
        change nothing; a feature whose data quality fails does not use its results."""
        keys: list[tuple[str, int]] = []
        tests: list[WindowTest] = []
        windows: list[np.ndarray] = []
        for name, feature in self.features.items():
            if feature.tests and feature.stats.count >= self.model.window.min_events:  # type: ignore[union-attr]
                values = feature.sample.values()
                for j, test in enumerate(feature.tests):
                    keys.append((name, j))
                    tests.append(test)
                    windows.append(values)
        return dict(zip(keys, test_windows(tests, windows), strict=True))

    def _close_feature(
        self, feature: FeatureMonitor, at: datetime, offset: int | None, tested: dict[tuple[str, int], TestResult]
    ) -> list[Finding]:
        stats = feature.stats
        assert stats is not None
        findings: list[Finding] = []
        quality = self._data_quality(feature, offset)
        if feature.name != PREDICTION:
            findings.append(quality)
        drifted = feature.alarmed
        end = self._window_end or at
        for detector in feature.sequential:
            remember_score(
                feature.history, detector.name, end, max(feature.peaks.get(detector.name, 0.0), detector.score)
            )
        if stats.count >= self.model.window.min_events and not quality.active:  # type: ignore[union-attr]
            for j, test in enumerate(feature.tests):
                result = tested[feature.name, j]
                remember_score(feature.history, test.name, end, result.score)
                if result.drifted:
                    drifted = True
                    findings.append(
                        Finding(
                            kind=feature.kind,
                            model_id=self.model.model_id,
                            feature=feature.alert_feature,
                            slice=None,
                            active=True,
                            at=at,
                            evidence=self._evidence(
                                test,
                                result.score,
                                stats.count,
                                {
                                    **result.details,
                                    **(change := self._change(feature)),
                                    **self._distributions(feature),
                                    **recent_scores(feature.history[test.name]),
                                },
                            ),
                            summary=f"{self.model.model_id}: {describe(change, self._subject(feature))}; "
                            f"{test.name} = {result.score:.3g} over its threshold {result.threshold:.3g}",
                            offset=offset,
                        )
                    )
        if not drifted:
            findings.append(
                Finding(feature.kind, self.model.model_id, feature.alert_feature, None, False, at, offset=offset)
            )
        return findings

    def _distributions(self, feature: FeatureMonitor) -> dict[str, Any]:
        """The reference's and the window's summaries side by side, for the person reading the alert."""
        assert feature.stats is not None and self.reference is not None
        reference = self.reference.features[feature.name].stats.summary()
        current = feature.stats.summary()
        return {f"reference_{k}": v for k, v in reference.items()} | {f"current_{k}": v for k, v in current.items()}

    def _data_quality(self, feature: FeatureMonitor, offset: int | None = None) -> Finding:
        """Rules, not statistics: each rate against its configured bound."""
        stats = feature.stats
        assert stats is not None and self.reference is not None
        rules = self.config.data_quality
        ref_stats = self.reference.features[feature.name].stats
        count = max(stats.count, 1)
        ref_null_rate = ref_stats.nulls / max(ref_stats.count, 1)
        checks: list[tuple[str, float, float]] = [
            ("null_rate", stats.nulls / count, ref_null_rate + rules.max_null_rate_increase),
        ]
        if feature.type is FeatureType.numeric:
            checks.append(("type_mismatch_rate", stats.mismatches / count, rules.max_type_mismatch_rate))
            checks.append(("out_of_range_rate", feature.out_of_range / count, rules.max_out_of_range_rate))
        else:
            checks.append(("unseen_category_rate", feature.unseen / count, rules.max_unseen_category_rate))
            overflow = stats.overflow_count if isinstance(stats, CategoryStats) else 0
            checks.append(("cardinality_overflow", float(overflow), 0.0))
        failing = [(name, value, bound) for name, value, bound in checks if value > bound]
        at = self._window_end or datetime.now(UTC)
        if stats.count >= self.model.window.min_events:  # type: ignore[union-attr]
            for name, value, _ in checks:
                remember_score(feature.history, f"data_quality.{name}", at, value)
        if not failing or stats.count < self.model.window.min_events:  # type: ignore[union-attr]
            return Finding(AlertKind.data_quality, self.model.model_id, feature.name, None, False, at, offset=offset)
        rule, value, bound = max(failing, key=lambda item: item[1] - item[2])
        evidence = Evidence(
            detector=f"data_quality.{rule}",
            score=value,
            threshold=bound,
            window_start=self._window_start,
            window_end=self._window_end,
            reference_size=ref_stats.count,
            current_size=stats.count,
            reference_version=self.reference.version,
            settings_hash=hashlib.sha256(rules.model_dump_json().encode()).hexdigest()[:12],
            details={
                **{name: round(v, 6) for name, v, _ in checks},
                "reference_null_rate": round(ref_null_rate, 6),
                **recent_scores(feature.history.get(f"data_quality.{rule}", [])),
            },
        )
        return Finding(
            AlertKind.data_quality,
            self.model.model_id,
            feature.name,
            None,
            True,
            at,
            evidence=evidence,
            summary=f"{self.model.model_id}: feature {feature.name!r} {rule.replace('_', ' ')} is {value:.3g}, "
            f"over its bound {bound:.3g}",
            offset=offset,
        )

    def _close_multivariate(self, at: datetime, offset: int | None) -> list[Finding]:
        width = len(self.multivariate_names)
        rows = self.multivariate_sample.values()
        findings = []
        drifted = False
        if len(rows) >= self.model.window.min_events:  # type: ignore[union-attr]
            for test in self.multivariate:
                result = test.test(rows)
                remember_score(self.multivariate_history, test.name, self._window_end or at, result.score)
                if result.drifted:
                    drifted = True
                    findings.append(
                        Finding(
                            AlertKind.multivariate_drift,
                            self.model.model_id,
                            None,
                            None,
                            True,
                            at,
                            evidence=self._evidence(
                                test,
                                result.score,
                                len(rows),
                                {
                                    **result.details,
                                    "features_moved": (moved := self._features_moved()),
                                    **recent_scores(self.multivariate_history[test.name]),
                                },
                            ),
                            summary=f"{self.model.model_id}: the joint distribution of its {width} numeric features "
                            f"changed, {_most_moved(moved)}; {test.name} = {result.score:.3g} over its threshold "
                            f"{result.threshold:.3g}",
                            offset=offset,
                        )
                    )
        if not drifted:
            findings.append(
                Finding(AlertKind.multivariate_drift, self.model.model_id, None, None, False, at, offset=offset)
            )
        return findings

    def _features_moved(self, top: int = 3) -> list[list[Any]]:
        """[feature, standardised mean difference, spread ratio] of the multivariate test's
        features that moved most in the window, largest first."""
        moves = []
        for name in self.multivariate_names:
            change = self._change(self.features[name])
            smd, spread = change["standardised_mean_difference"], change["spread_ratio"]
            size = max(abs(smd) if math.isfinite(smd) else 0.0, abs(math.log(spread)) if spread > 0 else 0.0)
            moves.append((size, [name, round(smd, 4), round(spread, 4)]))
        moves.sort(key=lambda move: -move[0])
        return [move for _, move in moves[:top]]

    def _open_window(self) -> None:
        max_categories = self.config.caps.max_categories
        for feature in self.features.values():
            feature.stats = NumericStats() if feature.type is FeatureType.numeric else CategoryStats(max_categories)
            feature.sample = ValueSample()
            feature.unseen = feature.out_of_range = 0
            feature.alarmed = False
            feature.peaks = {}
        self.multivariate_sample = ValueSample()
        self._window_start = self._window_end = None

    # -- state ----------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume, JSON-safe. The reference travels without its sample:
        detectors are already fitted, and the profile's statistics are all the checks need."""
        return {
            "events": self.events,
            "extra_fields": self.extra_fields,
            "unknown_features": self.unknown_features,
            "clock": self.clock.to_state(),
            "reference": None if self.reference is None else {**self.reference.to_dict(), "sample": {}},
            "builder": None if self._builder is None else self._builder.to_state(),
            "features": {name: feature.to_state() for name, feature in self.features.items()},
            "multivariate": [detector_state(d) for d in self.multivariate],
            "multivariate_names": self.multivariate_names,
            "multivariate_sample": self.multivariate_sample.to_state(),
            "multivariate_history": self.multivariate_history,
            "unfitted": self.unfitted,
            "window_start": None if self._window_start is None else self._window_start.isoformat(),
            "window_end": None if self._window_end is None else self._window_end.isoformat(),
        }

    @classmethod
    def from_state(
        cls, model: ModelConfig, config: MonitorConfig, state: dict[str, Any], *, slice_label: str | None = None
    ) -> DriftMonitor:
        monitor = cls(model, config, slice_label=slice_label)
        monitor.events, monitor.extra_fields = state["events"], state["extra_fields"]
        monitor.unknown_features = state["unknown_features"]
        monitor.clock.restore(state["clock"])
        if state["reference"] is not None:
            monitor.reference = ReferenceProfile.from_dict(state["reference"])
        if state["builder"] is not None:
            monitor._builder = ReferenceBuilder.from_state(state["builder"])
        monitor.features = {name: FeatureMonitor.from_state(name, f) for name, f in state["features"].items()}
        monitor.multivariate = [restore_detector(d) for d in state["multivariate"]]  # type: ignore[misc]
        monitor.multivariate_names = list(state["multivariate_names"])
        sample = ValueSample.from_state(state["multivariate_sample"])
        if sample.kept:
            sample.chunks = [sample.chunks[0].reshape(-1, len(monitor.multivariate_names))]
        monitor.multivariate_sample = sample
        monitor.multivariate_history = {
            name: [list(point) for point in points] for name, points in state.get("multivariate_history", {}).items()
        }
        monitor.unfitted = dict(state.get("unfitted", {}))
        for name in ("window_start", "window_end"):
            value = state[name]
            setattr(monitor, f"_{name}", None if value is None else datetime.fromisoformat(value))
        return monitor
