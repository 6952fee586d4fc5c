"""`ModelEvaluator`: one model's continuous evaluation, from its predictions and joined outcomes.

The monitor feeds it, in order, the model's predictions (`observe_predictions`) and the joined
records the `JoinStore` produced for the model (`observe_outcome`), and tells it when a window of
the model's prediction stream closes (`close_window`). It does not own the join store: in
streaming the join is partitioned by `prediction_id` and the evaluator by `model_id`.

What it keeps and checks
------------------------
* Metrics (`metrics.MetricsAccumulator`): all time per model, per model version and per slice
  value; and per window of prediction event time (overall and per version; the last
  `max_report_windows` windows). An outcome counts in the window its prediction belonged to.
* `performance_degradation`: the joined 0/1 errors, in arrival order, feed the `bernoulli_cusum`
  detector (absolute errors feed `cusum` for regression), fitted on the first `warmup_outcomes`
  joined outcomes unless `fit_reference` gave a labelled reference. Each alarm is a finding at the
  outcome that crossed the threshold, with the error rate of the reference and of the last window
  of outcomes as evidence.
* `estimated_performance_drop` (binary classifiers with probabilities): CBPE (`cbpe.CBPE`),
  calibrated on the same reference, estimates each closed window's accuracy from its predictions
  alone; estimate against realised accuracy is kept per window once labels arrive (`cbpe_report`).
* `canary_regression` and `slice_regression`: at each window close, on the outcomes joined during
  the last `check_windows` windows (`canary.compare_versions`, `slices.compare_slices`).
* `serving_degradation`: per version and window, latency p99 over `max_latency_ms_p99` or a
  request error rate significantly over `max_request_error_rate` (one-sided binomial test).
* `labels_missing`: label coverage of the windows that have become `label_coverage_horizon_seconds`
  old, significantly below `expected_label_coverage` (one-sided binomial test).

Each window check reports an inactive finding when it ran and found nothing (so alerts resolve),
and nothing when it could not run (too few samples, no threshold configured).

False alarms: the checks share `evaluation.budget_share` of the model's daily false-alarm budget
equally (6 checks). The error-stream detector is calibrated to a run length of
`events_per_model_per_day / its alarms per day` outcomes; window checks test at
alpha = its alarms per day / windows per day, split further over the versions or slices tested.

Calling it (one evaluator per model, in the worker that owns the model's partition):

* every batch of the model's predictions: `observe_predictions(batch)` (window counts for label
  coverage, CBPE, serving signals; without it, `labels_missing` and CBPE have nothing to judge);
* every `JoinedOutcome` of the model (from `JoinStore.add_outcome` or, for an outcome that came
  first, `JoinStore.add_prediction`): `observe_outcome(joined, offset)`;
* when the model's window closes (the drift monitor's window clock): `close_window(end, offset)`;
* on a timer, optionally: `flush()`; to checkpoint: `to_state()` / `ModelEvaluator.from_state()`.

Batching: outcomes and predictions are buffered and processed `batch_size` at a time (vectorised:
one `update_many` of the detector per batch instead of one per outcome), and always before a
window closes or state is read. A finding from a batch carries the offset and event time of the
outcome that decided it, but is returned by the call that processed the batch (at most
`batch_size - 1` outcomes later, or `flush()`/`close_window`).

>>> from datetime import UTC, datetime
>>> from monitor.contracts.config import MonitorConfig
>>> from monitor.evaluation.join import JoinedOutcome
>>> config = MonitorConfig.model_validate({"evaluation": {"warmup_outcomes": 50}})
>>> evaluator = ModelEvaluator("churn", config)
>>> for i in range(200):  # predicts 1 with p=0.8 on odd i, 0 with p=0.2 on even i; wrong when i % 10 == 0
...     label = 1 if i % 10 == 0 else i % 2
...     record = JoinedOutcome(f"p{i}", "churn", "v1", 1e9 + i, i % 2, 0.2 + 0.6 * (i % 2), (), label, 1e9 + i + 60)
...     _ = evaluator.observe_outcome(record, offset=i)
>>> _ = evaluator.close_window(datetime.fromtimestamp(1e9 + 200, UTC))
>>> m = evaluator.metrics()["overall"]
>>> m["count"], m["accuracy"], m["roc_auc"]
(200, 0.9, 0.9167)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np

import monitor.detectors  # noqa: F401  (registers the detectors)
from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import MonitorConfig
from monitor.core.finding import Finding
from monitor.detectors import registry
from monitor.detectors.base import SequentialDetector, TestResult
from monitor.evaluation.canary import compare_versions
from monitor.evaluation.cbpe import CBPE, CBPEWindow
from monitor.evaluation.join import JoinedOutcome
from monitor.evaluation.labels import (
    CLASSIFICATION,
    OTHER,
    REGRESSION,
    class_name,
    configured_task,
    infer_task,
    is_score,
    positive_probability,
)
from monitor.evaluation.metrics import MetricsAccumulator, OutcomeBatch, ServingStats
from monitor.evaluation.significance import LossStats, upper_tail, z_quantile
from monitor.evaluation.slices import compare_slices

N_CHECKS = 6
"""Checks sharing the evaluation's false-alarm budget: error stream, CBPE, canary, slices,
serving, labels."""

MAX_SLICE_NAMES = 16
MAX_TRACKED_WINDOWS = 100_000
"""Closed windows remembered for label coverage and CBPE estimate-vs-realised (a few numbers each)."""

OVERALL = ("all",)

MAX_SCORE_HISTORY = 20
"""Closed windows whose score each check remembers, and whose metric per version the evidence of
a performance alert carries (`recent_scores`, `metric_by_version`)."""

_NAN = math.nan
_TYPE_OF = np.frompyfunc(type, 1, 1)


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _iso(t: float) -> str:
    return _time(t).isoformat().replace("+00:00", "Z")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Window:
    """One window of prediction event time: counts for coverage and CBPE, metrics while recent."""

    __slots__ = ("index", "start", "end", "predictions", "labelled", "loss", "metrics", "cbpe", "estimate", "serving",
                 "judged")  # fmt: skip

    def __init__(self, index: int, start: float):
        self.index = index
        self.start = start
        self.end = math.inf
        self.predictions = 0
        self.labelled = 0
        self.loss = 0.0
        """Sum of the outcomes' losses (errors, or absolute errors)."""
        self.metrics: MetricsAccumulator | None = None
        """Overall (group 0) and per version (group 1 + version code); dropped when old."""
        self.cbpe: CBPEWindow | None = None
        self.estimate: dict[str, Any] | None = None
        self.serving: dict[int, ServingStats] = {}
        self.judged = False
        """Label coverage already judged (`labels_missing`)."""

    def to_state(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": _finite(self.start),
            "end": _finite(self.end),
            "predictions": self.predictions,
            "labelled": self.labelled,
            "loss": self.loss,
            "metrics": self.metrics.to_state() if self.metrics else None,
            "cbpe": self.cbpe.to_state() if self.cbpe else None,
            "estimate": self.estimate,
            "serving": [[v, s.to_state()] for v, s in self.serving.items()],
            "judged": self.judged,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Window:
        window = cls(state["index"], -math.inf if state["start"] is None else state["start"])
        window.end = math.inf if state["end"] is None else state["end"]
        window.predictions = state["predictions"]
        window.labelled = state["labelled"]
        window.loss = state["loss"]
        window.metrics = MetricsAccumulator.from_state(state["metrics"]) if state["metrics"] else None
        window.cbpe = CBPEWindow.from_state(state["cbpe"]) if state["cbpe"] else None
        window.estimate = state["estimate"]
        window.serving = {v: ServingStats.from_state(s) for v, s in state["serving"]}
        window.judged = state["judged"]
        return window


class ModelEvaluator:
    """Continuous evaluation of one model (see the module docstring).

    Parameters
    ----------
    model_id
        The model evaluated.
    config
        The monitor's configuration (`evaluation`, `caps`, `alerting`, the model's own settings).
    batch_size
        Outcomes (and predictions) buffered before they are processed together.
    max_report_windows
        Closed windows whose full metrics are kept for reports.
    """

    def __init__(
        self,
        model_id: str,
        config: MonitorConfig | None = None,
        *,
        batch_size: int = 1024,
        max_report_windows: int = 48,
    ):
        if batch_size < 1:
            raise ValueError(f"Invalid 'batch_size' {batch_size!r}. Valid values are: integers >= 1")
        if max_report_windows < 1:
            raise ValueError(f"Invalid 'max_report_windows' {max_report_windows!r}. Valid values are: integers >= 1")
        self.config = config = config or MonitorConfig()
        self.model_id = model_id
        self.model = model = config.model(model_id)
        self.evaluation = evaluation = config.evaluation
        self.caps = config.caps
        self.batch_size = batch_size
        self.max_report_windows = max_report_windows
        self.window_config = window = model.window
        assert window is not None
        self.min_events = window.min_events
        self.warmup = evaluation.warmup_outcomes or config.reference.warmup_events
        self.coverage_horizon = evaluation.label_coverage_horizon_seconds or evaluation.join_ttl_seconds
        # False-alarm budget: alarms per day for each check, then per outcome and per window.
        alerting = config.alerting
        alarms_per_day = alerting.false_alarms_per_model_per_day * evaluation.budget_share / N_CHECKS
        self.error_run_length = alerting.events_per_model_per_day / alarms_per_day
        if window.size_seconds:
            windows_per_day = 86400.0 / window.size_seconds
        else:
            windows_per_day = alerting.events_per_model_per_day / (window.size_events or 1000)
        self.window_alpha = min(0.5, alarms_per_day / windows_per_day)
        """Chance of a false alarm per window allowed to each window check."""
        self.recent_size = window.size_events or 1000
        self._init_state()

    def _init_state(self) -> None:
        self.task: str | None = configured_task(self.model.task)
        self.positive_name = class_name(self.model.positive_class)
        self.counters: dict[str, int] = {
            "predictions": 0,
            "outcomes": 0,
            "task_mismatches": 0,
            "versions_over_cap": 0,
            "slice_values_over_cap": 0,
            "classes_over_cap": 0,
            "outcomes_for_untracked_windows": 0,
            "error_alarms": 0,
        }
        # Interned versions, slice tuples, classes and scopes (metric groups).
        self._versions: list[str] = []
        self._version_code: dict[str, int] = {}
        self._version_scope: list[int] = []
        self._slice_tuples: list[tuple[tuple[str, str], ...]] = []
        self._slice_code: dict[tuple[tuple[str, str], ...], int] = {}
        self._slice_scopes: list[list[int]] = []
        self._slice_table = np.zeros((0, 0), dtype=np.int64)
        self._slice_values: dict[str, set[str]] = {}
        self._scopes: list[tuple[str, ...]] = []
        self._scope_index: dict[tuple[str, ...], int] = {}
        self._scope(OVERALL)
        self._classes: list[str] = []
        self._class_index: dict[str, int] = {}
        self._class_cache: dict[Any, int] = {}
        self._positive_code = self._intern_class(self.positive_name)
        self._negative_code = -1
        # Accumulators.
        self.cumulative: MetricsAccumulator | None = None
        self._serving: list[ServingStats] = []
        self._windows: deque[_Window] = deque()
        self._open = _Window(0, -math.inf)
        self._ends = np.zeros(0)
        self._tracked_from = -math.inf
        self._trimmed = 0
        """Windows below this index have had their metrics dropped."""
        self._first_time = math.inf
        """Earliest prediction time seen: the start of the first window."""
        self._cbpe_from = 0
        """Windows below this index are estimated already: late predictions no longer count in CBPE."""
        self._period = np.zeros((3, 1))
        self._ring: deque[np.ndarray] = deque(maxlen=self.evaluation.check_windows)
        # Reference: warm-up losses and CBPE samples.
        self._warm_loss: list[float] = []
        self._warm_prob: list[float] = []
        self._warm_actual: list[bool] = []
        self._warm_predicted: list[bool] = []
        self.detector: SequentialDetector | None = None
        self.detector_error: str | None = None
        self.reference_loss = _NAN
        self.reference_size = 0
        self.reference_version: str | None = None
        self.cbpe: CBPE | None = None
        self._recent = np.zeros(self.recent_size)
        self._recent_count = 0
        self._run = [0.0, 0.0, _NAN]  # outcomes, loss, first outcome time since the detector last restarted
        self._alarmed_since_close = False
        self._score_history: dict[str, list[list[float]]] = {}
        """Check (`error_stream`, `cbpe`, `canary:<version>`, `slice:<slice>`) -> [window end, score]
        of the last closed windows, for the evidence."""
        self._error_peak = 0.0
        """Highest error-stream statistic at an alarm since the last window closed."""
        # Buffers.
        self._o_rows: list[tuple[float, float, int, int, float, float, float, int]] = []
        """Buffered outcomes: prediction time, outcome time, version, slices, predicted, actual
        (class codes or values), positive-class probability, offset (-1: none)."""
        self._o_multi: list[tuple[int, dict[str, float], str]] = []
        self._p_time: list[float] = []
        self._p_prob: list[float] = []
        self._p_positive: list[bool] = []
        self._p_serving: list[tuple[int, float | None, str | None]] = []

    # ------------------------------------------------------------------ interning

    def _scope(self, scope: tuple[str, ...]) -> int:
        index = self._scope_index.get(scope)
        if index is None:
            index = self._scope_index[scope] = len(self._scopes)
            self._scopes.append(scope)
        return index

    def _version(self, name: str) -> int:
        code = self._version_code.get(name)
        if code is not None:
            return code
        if len(self._versions) >= self.caps.max_model_versions and name != OTHER:
            self.counters["versions_over_cap"] += 1
            return self._version(OTHER)
        code = self._version_code[name] = len(self._versions)
        self._versions.append(name)
        self._version_scope.append(self._scope(("version", name)))
        self._serving.append(ServingStats())
        return code

    def _slices(self, pairs: tuple[tuple[str, str], ...]) -> int:
        code = self._slice_code.get(pairs)
        if code is not None:
            return code
        allowed = set(self.model.slices) if self.model.slices else None
        capped = []
        over = False
        for name, value in pairs:
            if allowed is not None and name not in allowed:
                continue
            values = self._slice_values.get(name)
            if values is None:
                if len(self._slice_values) >= MAX_SLICE_NAMES:
                    over = True
                    continue
                values = self._slice_values[name] = set()
            if value not in values:
                if len(values) >= self.caps.max_slice_values and value != OTHER:
                    over = True
                    value = OTHER
                else:
                    values.add(value)
            capped.append((name, value))
        key = tuple(capped)
        if over:
            self.counters["slice_values_over_cap"] += 1
        code = self._slice_code.get(key)
        if code is None:
            code = self._slice_code[key] = len(self._slice_tuples)
            self._slice_tuples.append(key)
            self._slice_scopes.append([self._scope(("slice", name, value)) for name, value in key])
            self._slice_table = np.zeros((0, 0), dtype=np.int64)  # rebuilt on the next flush
        if not over:
            self._slice_code[pairs] = code
        return code

    def _intern_class(self, name: str) -> int:
        code = self._class_index.get(name)
        if code is None:
            if len(self._classes) >= self.caps.max_categories and name != OTHER:
                self.counters["classes_over_cap"] += 1
                return self._intern_class(OTHER)
            code = self._class_index[name] = len(self._classes)
            self._classes.append(name)
        return code

    def _class(self, value: Any) -> int:
        code = self._class_cache.get(value)
        if code is None:
            code = self._intern_class(class_name(value))
            if len(self._class_cache) < 4 * self.caps.max_categories and self._classes[code] != OTHER:
                self._class_cache[value] = code
        return code

    def _negative(self) -> int:
        """Class code of "not positive", for score predictions (a probability, no class)."""
        if self._negative_code < 0:
            self._negative_code = self._intern_class("0" if self.positive_name == "1" else f"not {self.positive_name}")
        return self._negative_code

    def _decide_task(self, prediction: Any, probability: float, probabilities: dict[str, float] | None) -> None:
        has_probability = bool(probabilities) or not math.isnan(probability)
        self.task = infer_task(prediction, probabilities or ({"p": probability} if has_probability else None))

    # ------------------------------------------------------------------ predictions

    def observe_predictions(self, batch: PredictionBatch) -> list[Finding]:
        """A batch of this model's predictions: serving signals, window counts, CBPE.

        Returns findings of a batch processed on the way (none today: the checks on predictions
        run when a window closes)."""
        n = len(batch)
        if n == 0:
            return []
        self.counters["predictions"] += n
        predictions = batch.predictions
        probabilities = batch.probabilities
        probability = np.full(n, _NAN)
        for i in np.flatnonzero(probabilities != None):  # noqa: E711 (elementwise)
            probability[i] = positive_probability(probabilities[i], self.positive_name)
        if self.task is None:
            self._decide_task(predictions[0], float(probability[0]), probabilities[0])
        positive = np.zeros(n, dtype=bool)
        if self.task == CLASSIFICATION:
            score = np.equal(_TYPE_OF(predictions), float)
            values = predictions[score].astype(float)
            in_unit = (values >= 0.0) & (values <= 1.0) & (values != np.floor(values))  # `is_score`
            score[score] = in_unit
            values = values[in_unit]
            positive[score] = values >= 0.5
            probability[score] = np.where(np.isnan(probability[score]), values, probability[score])
            classes = np.flatnonzero(~score)
            if len(classes):
                # True, 1 and 1.0 are one key here, and one class (`class_name`) too
                chosen = list(predictions[classes])
                is_positive = {value: self._class(value) == self._positive_code for value in dict.fromkeys(chosen)}
                positive[classes] = np.fromiter(map(is_positive.__getitem__, chosen), dtype=bool, count=len(chosen))
        self._p_time.extend(batch.timestamps.tolist())
        self._p_prob.extend(probability.tolist())
        self._p_positive.extend(positive.tolist())
        serving = (batch.latency_ms != None) | (batch.request_status != None)  # noqa: E711 (elementwise)
        for i in np.flatnonzero(serving):
            version = self._version_code.get(batch.model_versions[i])
            if version is None:
                version = self._version(batch.model_versions[i])
            self._p_serving.append((version, batch.latency_ms[i], batch.request_status[i]))
        if len(self._p_time) >= self.batch_size:
            self._flush_predictions()
        return []

    def _flush_predictions(self) -> None:
        if not self._p_time:
            return
        times = np.asarray(self._p_time)
        self._first_time = min(self._first_time, float(times.min()))
        windows = self._window_positions(times)
        probability = np.asarray(self._p_prob)
        positive = np.asarray(self._p_positive, dtype=bool)
        cbpe = self.cbpe if self.cbpe is not None and self.cbpe.fitted else None
        for position in np.unique(windows):
            mask = windows == position
            window = self._window_at(int(position))
            if window is None:
                continue
            window.predictions += int(mask.sum())
            if cbpe is not None and position >= self._cbpe_from:
                if window.cbpe is None:
                    window.cbpe = cbpe.new_window()
                cbpe.accumulate(window.cbpe, probability[mask], positive[mask])
        serving = self._open.serving
        for version, latency, status in self._p_serving:
            stats = serving.get(version)
            if stats is None:
                stats = serving[version] = ServingStats()
            stats.add(latency, status)  # folded into the all-time stats when the window closes
        self._p_time.clear()
        self._p_prob.clear()
        self._p_positive.clear()
        self._p_serving.clear()

    # ------------------------------------------------------------------ outcomes

    def observe_outcome(self, joined: JoinedOutcome, offset: int | None = None) -> list[Finding]:
        """A joined record of this model (prediction and its label).

        Returns `performance_degradation` findings of the batch processed by this call, if any."""
        prediction = joined.prediction
        probability = joined.probability
        if self.task is None:
            self._decide_task(prediction, probability, joined.probabilities)
        label = joined.label
        if self.task == CLASSIFICATION:
            cache = self._class_cache
            if type(prediction) is float and is_score(prediction):
                if math.isnan(probability):
                    probability = prediction
                predicted = self._positive_code if prediction >= 0.5 else self._negative()
            else:
                predicted = cache.get(prediction)
                if predicted is None:
                    predicted = self._class(prediction)
            actual = cache.get(label)
            if actual is None:
                actual = self._class(label)
            if joined.probabilities:
                self._o_multi.append((len(self._o_rows), joined.probabilities, self._classes[actual]))
        else:
            if isinstance(prediction, str | bool) or isinstance(label, str | bool):
                self.counters["task_mismatches"] += 1
                return []
            predicted = float(prediction)
            actual = float(label)
        version = self._version_code.get(joined.model_version)
        if version is None:
            version = self._version(joined.model_version)
        slices = self._slice_code.get(joined.slices)
        if slices is None:
            slices = self._slices(joined.slices)
        rows = self._o_rows
        rows.append((joined.prediction_time, joined.outcome_time, version, slices, predicted, actual, probability,
                     -1 if offset is None else offset))  # fmt: skip
        if len(rows) >= self.batch_size:
            return self._flush_outcomes()
        return []

    def observe_outcomes(
        self, records: Sequence[JoinedOutcome], offsets: Sequence[int | None] | None = None
    ) -> list[Finding]:
        """`observe_outcome` for a batch, in order."""
        findings: list[Finding] = []
        observe = self.observe_outcome
        if offsets is None:
            for record in records:
                findings += observe(record)
        else:
            for record, offset in zip(records, offsets, strict=True):
                findings += observe(record, offset)
        return findings

    def flush(self) -> list[Finding]:
        """Process everything buffered now (e.g. on a timer); returns the findings it produced."""
        self._flush_predictions()
        return self._flush_outcomes()

    def _scope_rows(self, versions: np.ndarray, slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(group, row) pairs: every row in the overall scope, its version's and its slices'."""
        n = len(versions)
        rows = np.arange(n)
        version_scope = np.asarray(self._version_scope, dtype=np.int64)
        groups = [np.zeros(n, dtype=np.int64), version_scope[versions]]
        row_parts = [rows, rows]
        width = max((len(s) for s in self._slice_scopes), default=0)
        if width:
            if self._slice_table.shape != (len(self._slice_scopes), width):
                table = np.full((len(self._slice_scopes), width), -1, dtype=np.int64)
                for code, scopes in enumerate(self._slice_scopes):
                    table[code, : len(scopes)] = scopes
                self._slice_table = table
            chosen = self._slice_table[slices]
            for column in range(width):
                scope = chosen[:, column]
                present = scope >= 0
                groups.append(scope[present])
                row_parts.append(rows[present])
        return np.concatenate(groups), np.concatenate(row_parts)

    def _flush_outcomes(self) -> list[Finding]:
        n = len(self._o_rows)
        if not n:
            return []
        table = np.fromiter(chain.from_iterable(self._o_rows), dtype=np.float64, count=8 * n).reshape(n, 8)
        self.counters["outcomes"] += n
        prediction_time = table[:, 0]
        self._first_time = min(self._first_time, float(prediction_time.min()))
        outcome_time = table[:, 1]
        versions = table[:, 2].astype(np.int64)
        slices = table[:, 3].astype(np.int64)
        offsets = table[:, 7].astype(np.int64)
        if self.task == CLASSIFICATION:
            predicted = table[:, 4].astype(np.int64)
            actual = table[:, 5].astype(np.int64)
            probability = table[:, 6].copy()
            multi_log_loss = multi_brier = None
            if self._o_multi:
                multi_log_loss = np.full(n, _NAN)
                multi_brier = np.full(n, _NAN)
                for row, probabilities, label_name in self._o_multi:
                    p_true = 0.0
                    brier = 0.0
                    for name, p in probabilities.items():
                        hit = class_name(name) == label_name
                        if hit:
                            p_true = p
                        brier += (p - (1.0 if hit else 0.0)) ** 2
                    multi_log_loss[row] = -math.log(min(max(p_true, 1e-15), 1 - 1e-15))
                    multi_brier[row] = brier
            batch = OutcomeBatch.classification(
                predicted, actual, probability, self._positive_code,
                multiclass_log_loss=multi_log_loss, multiclass_brier=multi_brier,
            )  # fmt: skip
        else:
            batch = OutcomeBatch.regression(table[:, 4], table[:, 5])
        n_classes = len(self._classes)
        if self.cumulative is None:
            self.cumulative = MetricsAccumulator(self.task or REGRESSION, len(self._scopes), n_classes)
        self.cumulative.ensure(len(self._scopes), n_classes)
        groups, rows = self._scope_rows(versions, slices)
        self.cumulative.update(groups, rows, batch)
        # Canary and slice checks: loss sums per scope for the current period.
        scopes = len(self._scopes)
        if self._period.shape[1] < scopes:
            self._period = np.pad(self._period, [(0, 0), (0, scopes - self._period.shape[1])])
        loss = batch.loss[rows]
        self._period[0] += np.bincount(groups, minlength=scopes)
        self._period[1] += np.bincount(groups, weights=loss, minlength=scopes)
        self._period[2] += np.bincount(groups, weights=loss * loss, minlength=scopes)
        # Windows of prediction time: counts, and metrics overall (group 0) and per version.
        positions = self._window_positions(prediction_time)
        version_groups = np.concatenate([np.zeros(n, dtype=np.int64), versions + 1])
        version_rows = np.concatenate([np.arange(n), np.arange(n)])
        for position in np.unique(positions):
            mask = positions == position
            window = self._window_at(int(position))
            if window is None:
                self.counters["outcomes_for_untracked_windows"] += int(mask.sum())
                continue
            window.labelled += int(mask.sum())
            window.loss += float(batch.loss[mask].sum())
            if position >= self._open.index - self.max_report_windows:
                if window.metrics is None:
                    window.metrics = MetricsAccumulator(batch.task, 1 + len(self._versions), n_classes)
                else:
                    window.metrics.ensure(1 + len(self._versions), n_classes)
                pick = np.concatenate([mask, mask])
                window.metrics.update(version_groups[pick], version_rows[pick], batch)
        self._clear_outcome_buffers()
        return self._error_stream(batch, outcome_time, offsets)

    def _clear_outcome_buffers(self) -> None:
        self._o_rows.clear()
        self._o_multi.clear()

    # ------------------------------------------------------------------ reference

    def fit_reference(
        self, labels: Sequence[Any], predictions: Sequence[Any], probabilities: Sequence[float] | None = None
    ) -> None:
        """Use labelled reference data (e.g. the validation set) instead of the warm-up:
        `probabilities` are positive-class probabilities (binary classifiers, for CBPE)."""
        if self.task is None and len(predictions):
            p0 = _NAN if probabilities is None else float(probabilities[0])
            self._decide_task(predictions[0], p0, None)
        if self.task == CLASSIFICATION:
            predicted = np.array([self._class(p) for p in predictions], dtype=np.int64)
            actual = np.array([self._class(y) for y in labels], dtype=np.int64)
            loss = (predicted != actual).astype(np.float64)
        else:
            loss = np.abs(np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64))
        self._warm_loss = []
        self._fit_detector(loss)
        if self.task == CLASSIFICATION and probabilities is not None:
            self._fit_cbpe(
                np.asarray(probabilities, dtype=np.float64),
                actual == self._positive_code,
                predicted == self._positive_code,
            )

    def _fit_detector(self, loss: np.ndarray) -> None:
        self.reference_size = len(loss)
        self.reference_loss = float(loss.mean()) if len(loss) else _NAN
        self.reference_version = hashlib.sha256(np.ascontiguousarray(loss).tobytes()).hexdigest()[:12]
        name = "bernoulli_cusum" if self.task == CLASSIFICATION else "cusum"
        params = (self.model.detectors.params if self.model.detectors else {}).get(name, {})
        try:
            detector = registry.create(name, **params)
            window_size = self.window_config.size_events or self.window_config.min_events
            detector.fit(loss, run_length=self.error_run_length, window_size=window_size, seed=0)
        except ValueError as exc:  # unknown detector, or a reference it cannot use
            self.detector_error = str(exc)
            self.detector = None
            return
        assert isinstance(detector, SequentialDetector)
        self.detector = detector
        self.detector_error = None
        self._run = [0.0, 0.0, _NAN]

    def _fit_cbpe(self, probability: np.ndarray, actual_positive: np.ndarray, predicted_positive: np.ndarray) -> None:
        keep = ~np.isnan(probability)
        if keep.sum() < max(100, self.min_events) or len(np.unique(actual_positive[keep])) < 2:
            return
        cbpe = CBPE(margin=self.evaluation.cbpe_margin, alpha=self.window_alpha, min_samples=self.min_events)
        self.cbpe = cbpe.fit(probability[keep], actual_positive[keep], predicted_positive[keep])

    # ------------------------------------------------------------------ error stream

    def _error_stream(self, batch: OutcomeBatch, outcome_time: np.ndarray, offsets: np.ndarray) -> list[Finding]:
        loss = batch.loss
        start = 0
        if self.detector is None and self.detector_error is None:
            take = min(len(loss), self.warmup - len(self._warm_loss))
            self._warm_loss.extend(loss[:take].tolist())
            if batch.task == CLASSIFICATION and batch.probability is not None:
                has = batch.has_probability[:take]
                self._warm_prob.extend(batch.probability[:take][has].tolist())
                self._warm_actual.extend((batch.actual[:take][has] == self._positive_code).tolist())
                self._warm_predicted.extend((batch.predicted[:take][has] == self._positive_code).tolist())
            start = take
            if len(self._warm_loss) >= self.warmup:
                self._fit_detector(np.asarray(self._warm_loss))
                if self.cbpe is None and self._warm_prob:
                    self._fit_cbpe(
                        np.asarray(self._warm_prob), np.asarray(self._warm_actual), np.asarray(self._warm_predicted)
                    )
                self._warm_loss, self._warm_prob, self._warm_actual, self._warm_predicted = [], [], [], []
        findings: list[Finding] = []
        detector = self.detector
        if detector is not None and start < len(loss):
            values = loss[start:]
            alarms = detector.update_many(values)
            if alarms:
                findings = self._alarm_findings(
                    values, alarms, detector.alarm_results, outcome_time[start:], offsets[start:]
                )
            else:
                run = self._run
                if run[0] == 0:
                    run[2] = float(outcome_time[start])
                run[0] += len(values)
                run[1] += float(values.sum())
        self._remember_recent(loss)
        return findings

    def _remember_recent(self, loss: np.ndarray) -> None:
        size = self.recent_size
        if len(loss) >= size:
            self._recent[:] = loss[-size:]
        else:
            self._recent = np.roll(self._recent, -len(loss))
            self._recent[-len(loss) :] = loss
        self._recent_count = min(size, self._recent_count + len(loss))

    def _alarm_findings(
        self,
        values: np.ndarray,
        alarms: list[int],
        results: list[TestResult],
        times: np.ndarray,
        offsets: np.ndarray,
    ) -> list[Finding]:
        """One finding per alarm, with the statistic where it crossed the threshold (`results`)."""
        detector = self.detector
        assert detector is not None
        history = np.concatenate([self._recent[self.recent_size - self._recent_count :], values])
        offset_in_history = self._recent_count
        findings = []
        previous = 0
        run = self._run
        for alarm, result in zip(alarms, results, strict=True):
            if run[0] == 0:
                run[2] = float(times[previous])
            run_n = run[0] + alarm - previous + 1
            run_loss = run[1] + float(values[previous : alarm + 1].sum())
            end = offset_in_history + alarm + 1
            recent = history[max(0, end - self.recent_size) : end]
            recent_loss = float(recent.mean())
            if recent_loss <= self.reference_loss and self.task == REGRESSION:
                # A two-sided CUSUM also alarms on an improvement; that is not a degradation.
                run[:] = [0.0, 0.0, _NAN]
                previous = alarm + 1
                continue
            score = result.score
            self._error_peak = max(self._error_peak, float(score))
            self.counters["error_alarms"] += 1
            self._alarmed_since_close = True
            metric = "error_rate" if self.task == CLASSIFICATION else "mae"
            details: dict[str, Any] = {
                f"{metric}_reference": round(self.reference_loss, 6),
                f"{metric}_recent": round(recent_loss, 6),
                "recent_outcomes": len(recent),
                f"{metric}_since_restart": round(run_loss / run_n, 6),
                "outcomes_since_restart": int(run_n),
                **result.details,
            }
            at = float(times[alarm])
            details.update(self._recent_scores("error_stream", (at, float(score))))
            details.update(self._metric_history())
            findings.append(
                self._active(
                    kind=AlertKind.performance_degradation,
                    at=_time(at),
                    evidence=Evidence(
                        detector=detector.name,
                        score=score,
                        threshold=float(detector.threshold),
                        window_start=_time(run[2]) if math.isfinite(run[2]) else None,
                        window_end=_time(at),
                        reference_size=self.reference_size,
                        current_size=int(run_n),
                        reference_version=self.reference_version,
                        settings_hash=detector.settings_hash(),
                        details=details,
                    ),
                    summary=f"{self.model_id}: {metric.replace('_', ' ')} rose from {self.reference_loss:.4g} "
                    f"(reference) to {recent_loss:.4g} over the last {len(recent)} outcomes "
                    f"({detector.name} {score:.3g} >= {detector.threshold:.3g})",
                    offset=int(offsets[alarm]) if offsets[alarm] >= 0 else None,
                )
            )
            run[:] = [0.0, 0.0, _NAN]
            previous = alarm + 1
        tail = values[previous:]
        if len(tail):
            if run[0] == 0:
                run[2] = float(times[previous])
            run[0] += len(tail)
            run[1] += float(tail.sum())
        return findings

    # ------------------------------------------------------------------ windows

    def _window_positions(self, times: np.ndarray) -> np.ndarray:
        """Window index (absolute) of each prediction time; -1 when older than every tracked window."""
        first = self._windows[0].index if self._windows else self._open.index
        positions = np.searchsorted(self._ends, times, side="left") + first
        if math.isfinite(self._tracked_from):
            positions[times <= self._tracked_from] = -1
        return positions

    def _window_at(self, position: int) -> _Window | None:
        if position < 0:
            return None
        if position >= self._open.index:
            return self._open
        first = self._windows[0].index if self._windows else self._open.index
        return self._windows[position - first] if position >= first else None

    def close_window(self, window_end: datetime, offset: int | None = None) -> list[Finding]:
        """The window of the model's predictions that ends at `window_end` (event time) closed:
        process what is buffered, then run the window checks. Returns every finding, active or not."""
        end = window_end.timestamp()
        closing = self._open
        if self._windows:
            end = max(end, self._windows[-1].end)
        closing.end = end
        if not math.isfinite(closing.start):
            closing.start = min(self._first_time, *self._p_time, *(row[0] for row in self._o_rows), end)
        self._windows.append(closing)
        self._open = _Window(closing.index + 1, end)
        self._ends = np.append(self._ends, end)
        # Buffered events now fall on the right side of the new boundary.
        self._cbpe_from = closing.index
        self._flush_predictions()
        self._cbpe_from = self._open.index
        findings = self._flush_outcomes()
        at = _time(end)
        findings += self._check_error_stream(at, offset)
        findings += self._check_cbpe(closing, at, offset)
        closing.cbpe = None  # estimated: the window's CBPE sums are no longer needed
        findings += self._check_serving(closing, at, offset)
        self._ring.append(self._period)
        self._period = np.zeros((3, len(self._scopes)))
        horizon = self._horizon()
        findings += self._check_canary(horizon, at, offset)
        findings += self._check_slices(horizon, at, offset)
        findings += self._check_labels(end, at, offset)
        for version, stats in closing.serving.items():
            self._serving[version].merge(stats)
        closing.serving = {}
        self._trim_windows(end)
        return findings

    def _trim_windows(self, now: float) -> None:
        """Drop the metrics of windows older than the last `max_report_windows`, and forget windows
        whose label coverage is final (older than the coverage horizon, and judged if judged at all)."""
        windows = self._windows
        old = self._open.index - self.max_report_windows
        first = windows[0].index if windows else self._open.index
        for index in range(max(self._trimmed, first), old):
            windows[index - first].metrics = None
        self._trimmed = max(self._trimmed, old)
        judging = self.evaluation.expected_label_coverage > 0
        dropped = 0
        while len(windows) > self.max_report_windows and (
            len(windows) > MAX_TRACKED_WINDOWS
            or ((windows[0].judged or not judging) and windows[0].end <= now - self.coverage_horizon)
        ):
            self._tracked_from = windows.popleft().end
            dropped += 1
        if dropped:
            self._ends = self._ends[dropped:]

    def _horizon(self) -> np.ndarray:
        scopes = len(self._scopes)
        total = np.zeros((3, scopes))
        for period in self._ring:
            total[:, : period.shape[1]] += period
        return total

    def _stats(self, horizon: np.ndarray, scope: int) -> LossStats:
        if scope >= horizon.shape[1]:
            return LossStats(0, 0, 0)
        n, total, total_sq = horizon[:, scope]
        return LossStats(float(n), float(total), float(total_sq))

    # ------------------------------------------------------------------ checks

    def _check_error_stream(self, at: datetime, offset: int | None) -> list[Finding]:
        if self.detector is None:
            return []
        self._remember_score("error_stream", at.timestamp(), max(self._error_peak, self.detector.score))
        self._error_peak = 0.0
        alarmed = self._alarmed_since_close
        self._alarmed_since_close = False
        if alarmed:
            return []
        return [self._clean(AlertKind.performance_degradation, at, offset)]

    def _check_cbpe(self, window: _Window, at: datetime, offset: int | None) -> list[Finding]:
        cbpe = self.cbpe
        if cbpe is None or window.cbpe is None or window.cbpe.n < cbpe.min_samples:
            return []
        estimate = cbpe.evaluate(window.cbpe)
        window.estimate = {
            "accuracy": _finite(estimate.accuracy),
            "f1": _finite(estimate.f1),
            "roc_auc": _finite(estimate.roc_auc),
            "n": estimate.n,
            "threshold": _finite(estimate.threshold),
        }
        self._remember_score("cbpe", at.timestamp(), estimate.accuracy)
        if not estimate.dropped:
            return [self._clean(AlertKind.estimated_performance_drop, at, offset)]
        quality = self.cbpe_report(last=10)
        details: dict[str, Any] = {
            "estimated_accuracy": round(estimate.accuracy, 6),
            "reference_estimated_accuracy": round(cbpe.reference_estimate, 6),
            "reference_accuracy": round(cbpe.reference_accuracy, 6),
            "margin_applied": round(estimate.margin_applied, 6),
            "estimated_f1": _finite(estimate.f1),
            "estimated_roc_auc": _finite(estimate.roc_auc),
            "reference_roc_auc": _finite(cbpe.reference_roc_auc),
            "estimator_bias": quality["estimator_bias"],
            "labelled_windows_compared": quality["windows_compared"],
            **self._recent_scores("cbpe"),
            **self._metric_history(),
        }
        return [
            self._active(
                kind=AlertKind.estimated_performance_drop,
                at=at,
                evidence=Evidence(
                    detector="cbpe_accuracy",
                    score=float(estimate.accuracy),
                    threshold=float(estimate.threshold),
                    window_start=_time(window.start) if math.isfinite(window.start) else None,
                    window_end=at,
                    reference_size=cbpe.reference_size,
                    current_size=estimate.n,
                    reference_version=self.reference_version,
                    settings_hash=_hash(cbpe.settings()),
                    details=details,
                ),
                summary=f"{self.model_id}: estimated accuracy {estimate.accuracy:.3f} (CBPE, before labels) is below "
                f"{estimate.threshold:.3f} (reference {cbpe.reference_estimate:.3f} - margin "
                f"{estimate.margin_applied:.3f})",
                offset=offset,
            )
        ]

    def _check_serving(self, window: _Window, at: datetime, offset: int | None) -> list[Finding]:
        max_p99 = self.evaluation.max_latency_ms_p99
        max_error_rate = self.evaluation.max_request_error_rate
        if (max_p99 is None and max_error_rate is None) or not window.serving:
            return []
        checked = False
        worst: tuple[float, Finding] | None = None
        level = self.window_alpha / max(1, len(window.serving))
        for version, stats in sorted(window.serving.items()):
            name = self._versions[version]
            if max_p99 is not None and stats.latency_count >= self.min_events:
                checked = True
                p99 = stats.latency_quantile(0.99)
                assert p99 is not None
                if p99 > max_p99:
                    severity = p99 / max_p99
                    if worst is None or severity > worst[0]:
                        text = f"latency p99 {p99:.1f} ms over {max_p99:.1f} ms"
                        finding = self._serving_finding(
                            window, at, offset, name, "latency_p99_bound", p99, max_p99, stats, text
                        )
                        worst = (severity, finding)
            if max_error_rate is not None and stats.requests >= self.min_events:
                checked = True
                rate = stats.errors / stats.requests
                p_value = _binomial_upper(stats.errors, stats.requests, max_error_rate)
                if rate > max_error_rate and p_value < level:
                    severity = rate / max_error_rate
                    if worst is None or severity > worst[0]:
                        text = f"request error rate {rate:.2%} over {max_error_rate:.2%} (p={p_value:.2g})"
                        finding = self._serving_finding(
                            window, at, offset, name, "request_error_rate_binomial", rate, max_error_rate, stats, text
                        )
                        worst = (severity, finding)
        if worst is not None:
            return [worst[1]]
        if checked:
            return [self._clean(AlertKind.serving_degradation, at, offset)]
        return []

    def _serving_finding(
        self, window: _Window, at: datetime, offset: int | None, version: str, rule: str, score: float,
        threshold: float, stats: ServingStats, text: str,
    ) -> Finding:  # fmt: skip
        summary = stats.summary()
        details = {k: v for k, v in summary.items() if v is not None}
        details["alpha"] = self.window_alpha
        return self._active(
            kind=AlertKind.serving_degradation,
            at=at,
            model_version=version,
            evidence=Evidence(
                detector=rule,
                score=float(score),
                threshold=float(threshold),
                window_start=_time(window.start) if math.isfinite(window.start) else None,
                window_end=at,
                current_size=max(stats.requests, stats.latency_count),
                settings_hash=_hash({"rule": rule, "threshold": threshold, "alpha": self.window_alpha}),
                details=details,
            ),
            summary=f"{self.model_id} version {version}: {text}",
            offset=offset,
        )

    def _check_canary(self, horizon: np.ndarray, at: datetime, offset: int | None) -> list[Finding]:
        stats = {
            name: self._stats(horizon, self._version_scope[code])
            for code, name in enumerate(self._versions)
            if name != OTHER and self._stats(horizon, self._version_scope[code]).n > 0
        }
        if len(stats) < 2:
            if not stats:
                return []
            return [self._clean(AlertKind.canary_regression, at, offset)]
        proportion = self.task == CLASSIFICATION
        results = compare_versions(
            stats,
            alpha=self.window_alpha,
            margin=self.evaluation.canary_margin,
            min_samples=self.evaluation.canary_min_samples,
            baseline=self.model.baseline_version,
            proportion=proportion,
        )
        if not results:
            return []
        for result in results:
            self._remember_score(f"canary:{result.canary}", at.timestamp(), result.z)
        regressed = [r for r in results if r.regressed]
        if not regressed:
            return [self._clean(AlertKind.canary_regression, at, offset)]
        worst = max(regressed, key=lambda r: r.difference)
        metric = "error_rate" if proportion else "mae"
        settings = {"test": "two_proportion_z" if proportion else "welch_z", "alpha": self.window_alpha,
                    "margin": self.evaluation.canary_margin, "min_samples": self.evaluation.canary_min_samples,
                    "check_windows": self.evaluation.check_windows}  # fmt: skip
        return [
            self._active(
                kind=AlertKind.canary_regression,
                at=at,
                model_version=worst.canary,
                evidence=Evidence(
                    detector=settings["test"],
                    score=float(worst.z),
                    threshold=z_quantile(worst.alpha),
                    window_end=at,
                    reference_size=worst.baseline_n,
                    current_size=worst.canary_n,
                    settings_hash=_hash(settings),
                    details={
                        "baseline_version": worst.baseline,
                        f"{metric}_baseline": round(worst.baseline_metric, 6),
                        f"{metric}_canary": round(worst.canary_metric, 6),
                        "difference": round(worst.difference, 6),
                        "margin": worst.margin,
                        "p_value": worst.p_value,
                        "alpha": worst.alpha,
                        "versions_regressed": [r.canary for r in regressed],
                        **self._recent_scores(f"canary:{worst.canary}"),
                        **self._metric_history(),
                    },
                ),
                summary=f"{self.model_id}: version {worst.canary} {metric.replace('_', ' ')} {worst.canary_metric:.4g} "
                f"vs {worst.baseline_metric:.4g} for baseline {worst.baseline} ({worst.canary_n} and "
                f"{worst.baseline_n} outcomes, p={worst.p_value:.2g})",
                offset=offset,
            )
        ]

    def _check_slices(self, horizon: np.ndarray, at: datetime, offset: int | None) -> list[Finding]:
        overall = self._stats(horizon, 0)
        slices = {
            f"{scope[1]}={scope[2]}": self._stats(horizon, index)
            for index, scope in enumerate(self._scopes)
            if scope[0] == "slice"
        }
        if not slices or overall.n == 0:
            return []
        proportion = self.task == CLASSIFICATION
        results = compare_slices(
            overall,
            slices,
            alpha=self.window_alpha,
            margin=self.evaluation.slice_margin,
            min_samples=self.evaluation.slice_min_samples,
            proportion=proportion,
        )
        metric = "error_rate" if proportion else "mae"
        settings = {"test": "two_proportion_z" if proportion else "welch_z", "alpha": self.window_alpha,
                    "margin": self.evaluation.slice_margin, "min_samples": self.evaluation.slice_min_samples,
                    "check_windows": self.evaluation.check_windows}  # fmt: skip
        findings = []
        for result in results:
            self._remember_score(f"slice:{result.slice}", at.timestamp(), result.z)
            if not result.regressed:
                findings.append(self._clean(AlertKind.slice_regression, at, offset, result.slice))
                continue
            findings.append(
                self._active(
                    kind=AlertKind.slice_regression,
                    slice=result.slice,
                    at=at,
                    evidence=Evidence(
                        detector=f"slice_{settings['test']}",
                        score=float(result.z),
                        threshold=z_quantile(result.alpha),
                        window_end=at,
                        reference_size=int(overall.n - result.n),
                        current_size=result.n,
                        settings_hash=_hash(settings),
                        details={
                            f"{metric}_slice": round(result.metric, 6),
                            f"{metric}_overall": round(result.overall_metric, 6),
                            f"{metric}_rest": round(result.rest_metric, 6),
                            "difference": round(result.difference, 6),
                            "margin": result.margin,
                            "p_value": result.p_value,
                            "alpha": result.alpha,
                            **self._recent_scores(f"slice:{result.slice}"),
                            **self._metric_history(),
                        },
                    ),
                    summary=f"{self.model_id}: slice {result.slice} {metric.replace('_', ' ')} {result.metric:.4g} vs "
                    f"{result.overall_metric:.4g} overall ({result.n} outcomes, p={result.p_value:.2g})",
                    offset=offset,
                )
            )
        return findings

    def _check_labels(self, now: float, at: datetime, offset: int | None) -> list[Finding]:
        expected = self.evaluation.expected_label_coverage
        if expected <= 0:
            return []
        matured = []
        for window in self._windows:
            if window.end > now - self.coverage_horizon:
                break
            if not window.judged:
                window.judged = True
                matured.append(window)
        predictions = sum(w.predictions for w in matured)
        if predictions < self.min_events:
            return []
        labelled = min(predictions, sum(w.labelled for w in matured))
        coverage = labelled / predictions
        if expected >= 1:
            low = coverage < 1
            p_value = 0.0 if low else 1.0
        else:
            z = (expected - coverage) / math.sqrt(expected * (1 - expected) / predictions)
            p_value = upper_tail(z)
            low = coverage < expected and p_value < self.window_alpha
        if not low:
            return [self._clean(AlertKind.labels_missing, at, offset)]
        return [
            self._active(
                kind=AlertKind.labels_missing,
                at=at,
                evidence=Evidence(
                    detector="label_coverage_binomial",
                    score=coverage,
                    threshold=expected,
                    window_start=_time(matured[0].start) if math.isfinite(matured[0].start) else None,
                    window_end=_time(matured[-1].end),
                    current_size=predictions,
                    settings_hash=_hash(
                        {"expected": expected, "horizon": self.coverage_horizon, "alpha": self.window_alpha}
                    ),  # fmt: skip
                    details={
                        "labelled": labelled,
                        "predictions": predictions,
                        "p_value": p_value,
                        "horizon_seconds": self.coverage_horizon,
                    },  # fmt: skip
                ),
                summary=f"{self.model_id}: {coverage:.1%} of predictions got a label within "
                f"{self.coverage_horizon / 3600:.3g} h, expected {expected:.1%}",
                offset=offset,
            )
        ]

    # ------------------------------------------------------------------ evidence history

    def _remember_score(self, check: str, end: float, score: float) -> None:
        """Append (window end, score) to a check's bounded history (a score that is not finite is skipped)."""
        if not math.isfinite(score):
            return
        series = self._score_history.setdefault(check, [])
        series.append([end, float(f"{score:.6g}")])
        del series[:-MAX_SCORE_HISTORY]

    def _recent_scores(self, check: str, extra: tuple[float, float] | None = None) -> dict[str, Any]:
        """Evidence details: a check's scores over the last closed windows and the window ends
        (oldest first), with `extra` (an alarm between window closes) last."""
        points = list(self._score_history.get(check, []))
        if extra is not None and math.isfinite(extra[1]):
            points = [*points[-(MAX_SCORE_HISTORY - 1) :], [extra[0], float(f"{extra[1]:.6g}")]]
        return {
            "recent_scores": [score for _, score in points],
            "recent_window_ends": [_iso(end) for end, _ in points],
        }

    def _metric_history(self) -> dict[str, Any]:
        """Evidence details: the error metric (error rate, or MAE for regression) of the last closed
        windows that have outcomes, overall (`all`) and per version, with the outcome counts."""
        if self.task is None:
            return {}
        windows = [w for w in self._windows if w.metrics is not None][-MAX_SCORE_HISTORY:]
        names: list[str] = []
        values: list[list[float | None]] = []
        counts: list[list[int]] = []
        groups = [(0, "all"), *((1 + code, name) for code, name in enumerate(self._versions))]
        for group, name in groups:
            row_counts = [int(w.metrics.count[group]) if group < w.metrics.n_groups else 0 for w in windows]  # type: ignore[union-attr]
            if not any(row_counts):
                continue
            names.append(name)
            counts.append(row_counts)
            values.append(
                [
                    round(float(w.metrics.loss[group]) / n, 6) if n else None
                    for w, n in zip(windows, row_counts, strict=True)
                ]  # type: ignore[union-attr]
            )
        return {
            "metric_name": "error_rate" if self.task == CLASSIFICATION else "mae",
            "metric_window_ends": [_iso(w.end) for w in windows],
            "metric_versions": names,
            "metric_by_version": values,  # type: ignore[dict-item]
            "metric_counts_by_version": counts,  # type: ignore[dict-item]
        }

    # ------------------------------------------------------------------ reports

    def _summary(self, acc: MetricsAccumulator | None, group: int, **options: Any) -> dict[str, Any]:
        if acc is None:
            return {"count": 0}
        positive = self._positive_code if self.task == CLASSIFICATION else None
        return acc.summary(group, self._classes, positive, self.model.cost, **options)

    def _active(
        self,
        *,
        kind: AlertKind,
        at: datetime,
        evidence: Evidence,
        summary: str,
        offset: int | None = None,
        slice: str | None = None,
        model_version: str = "all",
    ) -> Finding:
        """A condition found by one of this model's checks (model-level: no feature)."""
        return Finding(kind, self.model_id, None, slice, True, at, model_version, evidence, summary, offset)

    def _clean(self, kind: AlertKind, at: datetime, offset: int | None, slice: str | None = None) -> Finding:
        """A check that ran and found nothing, so an alert of its kind can resolve."""
        return Finding(kind, self.model_id, None, slice, False, at, offset=offset)

    def metrics(self) -> dict[str, Any]:
        """All-time metrics: overall, per version, per slice value; serving per version; counters."""
        self.flush()
        acc = self.cumulative
        return {
            "model_id": self.model_id,
            "task": self.task,
            "overall": self._summary(acc, 0),
            "versions": {
                name: self._summary(acc, self._version_scope[code]) for code, name in enumerate(self._versions)
            },
            "slices": {
                f"{scope[1]}={scope[2]}": self._summary(acc, index, reliability=False, per_class=False)
                for index, scope in enumerate(self._scopes)
                if scope[0] == "slice"
            },
            "serving": {name: self._serving_summary(code) for code, name in enumerate(self._versions)},
            "counters": dict(self.counters),
            "error_detector": self.detector.name if self.detector else self.detector_error,
        }

    def _serving_summary(self, version: int) -> dict[str, Any]:
        """All-time serving stats of a version, including the open window's."""
        total = ServingStats()
        total.merge(self._serving[version])
        if version in self._open.serving:
            total.merge(self._open.serving[version])
        return total.summary()

    def window_metrics(self, last: int | None = None) -> list[dict[str, Any]]:
        """Per closed window of prediction time (newest last): counts, label coverage so far,
        metrics overall and per version, CBPE estimate."""
        self.flush()
        windows = [w for w in self._windows if w.metrics is not None or w.estimate is not None]
        if last is not None:
            windows = windows[-last:]
        return [
            {
                "window": w.index,
                "start": _finite(w.start),
                "end": _finite(w.end),
                "predictions": w.predictions,
                "labelled": w.labelled,
                "label_coverage": round(min(1.0, w.labelled / w.predictions), 6) if w.predictions else None,
                "overall": self._summary(w.metrics, 0, reliability=False),
                "versions": {
                    name: self._summary(w.metrics, 1 + code, reliability=False, per_class=False)
                    for code, name in enumerate(self._versions)
                    if w.metrics is not None and 1 + code < w.metrics.n_groups and w.metrics.count[1 + code]
                },
                "cbpe": w.estimate,
            }
            for w in windows
        ]

    def cbpe_report(self, last: int | None = None, min_coverage: float = 0.9) -> dict[str, Any]:
        """CBPE estimate against realised accuracy per window, and the estimator's bias (mean of
        estimate - realised) over windows at least `min_coverage` labelled."""
        rows = []
        for w in self._windows:
            if w.estimate is None or w.estimate.get("accuracy") is None:
                continue
            realised = 1.0 - w.loss / w.labelled if w.labelled else None
            coverage = min(1.0, w.labelled / w.predictions) if w.predictions else 0.0
            rows.append({"window": w.index, "end": _finite(w.end), "estimated_accuracy": w.estimate["accuracy"],
                         "realised_accuracy": None if realised is None else round(realised, 6),
                         "label_coverage": round(coverage, 6)})  # fmt: skip
        compared = [r for r in rows if r["realised_accuracy"] is not None and r["label_coverage"] >= min_coverage]
        if last is not None:
            compared = compared[-last:]
        errors = [r["estimated_accuracy"] - r["realised_accuracy"] for r in compared]
        return {
            "windows": rows,
            "windows_compared": len(compared),
            "estimator_bias": round(float(np.mean(errors)), 6) if errors else None,
            "mean_absolute_error": round(float(np.mean(np.abs(errors))), 6) if errors else None,
        }

    def nbytes(self) -> int:
        """Approximate bytes of the numeric state (accumulators), for capacity planning."""
        total = self.cumulative.nbytes() if self.cumulative else 0
        for w in self._windows:
            if w.metrics is not None:
                total += w.metrics.nbytes()
            if w.cbpe is not None:
                total += w.cbpe.auc.nbytes
        return total + sum(p.nbytes for p in self._ring)

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume, JSON-safe (no pickle); buffered events included."""
        return {
            "version": 1,
            "model_id": self.model_id,
            "config": self.config.model_dump(mode="json"),
            "batch_size": self.batch_size,
            "max_report_windows": self.max_report_windows,
            "task": self.task,
            "counters": dict(self.counters),
            "versions": self._versions,
            "slice_tuples": [[list(p) for p in pairs] for pairs in self._slice_tuples],
            "slice_values": {name: sorted(values) for name, values in self._slice_values.items()},
            "scopes": [list(s) for s in self._scopes],
            "classes": self._classes,
            "negative_code": self._negative_code,
            "cumulative": self.cumulative.to_state() if self.cumulative else None,
            "serving": [s.to_state() for s in self._serving],
            "windows": [w.to_state() for w in self._windows],
            "open": self._open.to_state(),
            "tracked_from": _finite(self._tracked_from),
            "trimmed": self._trimmed,
            "first_time": _finite(self._first_time),
            "period": self._period.tolist(),
            "ring": [p.tolist() for p in self._ring],
            "warm": [self._warm_loss, self._warm_prob, self._warm_actual, self._warm_predicted],
            "detector": self.detector.to_state() if self.detector else None,
            "detector_error": self.detector_error,
            "reference": [_finite(self.reference_loss), self.reference_size, self.reference_version],
            "cbpe": self.cbpe.to_state() if self.cbpe else None,
            "recent": [self._recent.tolist(), self._recent_count],
            "run": [self._run[0], self._run[1], _finite(self._run[2])],
            "alarmed_since_close": self._alarmed_since_close,
            "score_history": self._score_history,
            "error_peak": self._error_peak,
            "outcome_buffer": [[*row[:6], _finite(row[6]), row[7]] for row in self._o_rows],
            "outcome_multi": [[row, probs, label] for row, probs, label in self._o_multi],
            "prediction_buffer": [
                self._p_time,
                [None if math.isnan(p) else p for p in self._p_prob],
                self._p_positive,
                [list(s) for s in self._p_serving],
            ],  # fmt: skip
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: MonitorConfig | None = None) -> ModelEvaluator:
        """Rebuild from `to_state`; with `config` None, the configuration saved in the state."""
        if config is None:
            config = MonitorConfig.model_validate(state["config"])
        evaluator = cls(
            state["model_id"], config, batch_size=state["batch_size"], max_report_windows=state["max_report_windows"]
        )
        evaluator._restore(state)
        return evaluator

    def _restore(self, state: dict[str, Any]) -> None:
        self.task = state["task"]
        self.counters.update(state["counters"])
        self._versions, self._version_code, self._version_scope, self._serving = [], {}, [], []
        self._scopes, self._scope_index = [], {}
        for scope in state["scopes"]:
            self._scope(tuple(scope))
        for name in state["versions"]:
            self._version(name)
        self._serving = [ServingStats.from_state(s) for s in state["serving"]]
        self._slice_values = {name: set(values) for name, values in state["slice_values"].items()}
        for pairs in state["slice_tuples"]:
            key = tuple((name, value) for name, value in pairs)
            self._slice_code[key] = len(self._slice_tuples)
            self._slice_tuples.append(key)
            self._slice_scopes.append([self._scope(("slice", name, value)) for name, value in key])
        self._classes, self._class_index, self._class_cache = [], {}, {}
        for name in state["classes"]:
            self._intern_class(name)
        self._positive_code = self._class_index[self.positive_name]
        self._negative_code = state["negative_code"]
        self.cumulative = MetricsAccumulator.from_state(state["cumulative"]) if state["cumulative"] else None
        self._windows = deque(_Window.from_state(w) for w in state["windows"])
        self._open = _Window.from_state(state["open"])
        self._ends = np.asarray([w.end for w in self._windows], dtype=np.float64)
        self._tracked_from = -math.inf if state["tracked_from"] is None else state["tracked_from"]
        self._trimmed = state["trimmed"]
        self._cbpe_from = self._open.index
        self._first_time = math.inf if state["first_time"] is None else state["first_time"]
        self._period = np.asarray(state["period"], dtype=np.float64).reshape(3, -1)
        self._ring = deque((np.asarray(p, dtype=np.float64).reshape(3, -1) for p in state["ring"]),
                           maxlen=self.evaluation.check_windows)  # fmt: skip
        self._warm_loss, self._warm_prob, self._warm_actual, self._warm_predicted = (list(x) for x in state["warm"])
        detector_state = state["detector"]
        self.detector = None
        if detector_state:
            self.detector = registry.DETECTORS[detector_state["name"]].from_state(detector_state)  # type: ignore[assignment]
        self.detector_error = state["detector_error"]
        loss, self.reference_size, self.reference_version = state["reference"]
        self.reference_loss = _NAN if loss is None else loss
        self.cbpe = CBPE.from_state(state["cbpe"]) if state["cbpe"] else None
        recent, self._recent_count = state["recent"]
        self._recent = np.asarray(recent, dtype=np.float64)
        run = state["run"]
        self._run = [run[0], run[1], _NAN if run[2] is None else run[2]]
        self._alarmed_since_close = state["alarmed_since_close"]
        self._score_history = {
            name: [list(p) for p in points] for name, points in state.get("score_history", {}).items()
        }
        self._error_peak = state.get("error_peak", 0.0)
        self._o_rows = [(*row[:6], _NAN if row[6] is None else row[6], row[7]) for row in state["outcome_buffer"]]
        self._o_multi = [(row, probs, label) for row, probs, label in state["outcome_multi"]]
        pb = state["prediction_buffer"]
        self._p_time = list(pb[0])
        self._p_prob = [_NAN if p is None else p for p in pb[1]]
        self._p_positive = list(pb[2])
        self._p_serving = [(v, latency, status) for v, latency, status in pb[3]]


def _binomial_upper(errors: int, n: int, rate: float) -> float:
    """P(X >= errors) for X ~ Binomial(n, rate): chance of this many errors at the allowed rate."""
    from scipy.stats import binom

    return float(binom.sf(errors - 1, n, rate))
