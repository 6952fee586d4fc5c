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
window closes. A finding from a batch carries the offset and event time of the outcome that
decided it, but is returned by the call that processed the batch (at most `batch_size - 1`
outcomes later, or `flush()`/`close_window`). Reading reports (`metrics`, `window_metrics`,
`cbpe_report`) includes the buffered events but processes nothing: no finding is consumed by a read.

Where each job lives: this module only coordinates. `interning` (codes under caps), `buffers`,
`reference` (the warm-up), `ledger` (windows of prediction time), `checks/` (one module per
alert kind), `evidence` (how findings are worded, score history), `reports`.

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

import copy
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

import monitor.detectors  # noqa: F401  (registers the detectors)
from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import MonitorConfig
from monitor.core.finding import Finding
from monitor.detectors.base import SequentialDetector
from monitor.evaluation import reports
from monitor.evaluation.buffers import OutcomeBuffer, Outcomes, PredictionBuffer, Predictions
from monitor.evaluation.cbpe import CBPE
from monitor.evaluation.checks import N_CHECKS
from monitor.evaluation.checks.canary_check import check_canary
from monitor.evaluation.checks.cbpe_check import CBPECheck
from monitor.evaluation.checks.error_stream import ErrorStream
from monitor.evaluation.checks.labels_check import check_labels
from monitor.evaluation.checks.periods import LossPeriods
from monitor.evaluation.checks.serving import ServingCheck
from monitor.evaluation.checks.slice_check import check_slices
from monitor.evaluation.evidence import ScoreHistory, finite, metric_history, to_time
from monitor.evaluation.interning import Interner
from monitor.evaluation.join import JoinedOutcome
from monitor.evaluation.labels import CLASSIFICATION, REGRESSION, configured_task, infer_task, is_score
from monitor.evaluation.labels import positive_probability as _positive_probability
from monitor.evaluation.ledger import MAX_TRACKED_WINDOWS, WindowLedger
from monitor.evaluation.metrics import MetricsAccumulator, ServingStats
from monitor.evaluation.reference import Warmup

__all__ = ["MAX_TRACKED_WINDOWS", "N_CHECKS", "ModelEvaluator"]

_NAN = math.nan
_TYPE_OF = np.frompyfunc(type, 1, 1)


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
        self.history = ScoreHistory()
        self.serving = ServingCheck(self.model_id, self.evaluation, alpha=self.window_alpha, min_events=self.min_events)
        self.interner = Interner(self.model, self.caps, self.counters, self.serving.add_version)
        self.cumulative: MetricsAccumulator | None = None
        self.ledger = WindowLedger()
        self.periods = LossPeriods(self.evaluation.check_windows)
        self.reference = Warmup()
        self.error_stream = ErrorStream(
            self.model_id,
            self.model,
            run_length=self.error_run_length,
            window_size=self.window_config.size_events or self.window_config.min_events,
            recent_size=self.recent_size,
            history=self.history,
            counters=self.counters,
        )
        self.cbpe_check = CBPECheck(
            self.model_id,
            margin=self.evaluation.cbpe_margin,
            alpha=self.window_alpha,
            min_events=self.min_events,
            history=self.history,
        )
        self._outcomes = OutcomeBuffer()
        self._predictions = PredictionBuffer()

    # ------------------------------------------------------------------ read-only attributes

    @property
    def detector(self) -> SequentialDetector | None:
        """The error-stream detector (None during the warm-up)."""
        return self.error_stream.detector

    @property
    def detector_error(self) -> str | None:
        return self.error_stream.detector_error

    @property
    def reference_size(self) -> int:
        return self.error_stream.reference_size

    @property
    def reference_loss(self) -> float:
        return self.error_stream.reference_loss

    @property
    def reference_version(self) -> str | None:
        return self.error_stream.reference_version

    @property
    def cbpe(self) -> CBPE | None:
        return self.cbpe_check.cbpe

    @property
    def _slice_values(self) -> dict[str, set[str]]:
        """Kept slice values per slice name (read by `bench/cardinality.py`)."""
        return self.interner.slice_values

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
        interner = self.interner
        predictions = batch.predictions
        probabilities = batch.probabilities
        probability = np.full(n, _NAN)
        positive_name = interner.positive_name
        for i in np.flatnonzero(probabilities != None):  # noqa: E711 (elementwise)
            probability[i] = _positive_probability(probabilities[i], positive_name)
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
                positive_code = interner.positive_code
                is_positive = {value: interner.klass(value) == positive_code for value in dict.fromkeys(chosen)}
                positive[classes] = np.fromiter(map(is_positive.__getitem__, chosen), dtype=bool, count=len(chosen))
        buffer = self._predictions
        buffer.time.extend(batch.timestamps.tolist())
        buffer.prob.extend(probability.tolist())
        buffer.positive.extend(positive.tolist())
        serving = (batch.latency_ms != None) | (batch.request_status != None)  # noqa: E711 (elementwise)
        for i in np.flatnonzero(serving):
            version = interner.version_code.get(batch.model_versions[i])
            if version is None:
                version = interner.version(batch.model_versions[i])
            buffer.serving.append((version, batch.latency_ms[i], batch.request_status[i]))
        if len(buffer) >= self.batch_size:
            self._flush_predictions()
        return []

    def _flush_predictions(self) -> None:
        predictions = self._predictions.predictions()
        if predictions is None:
            return
        self._count_predictions(self.ledger, predictions, self.cbpe_check.fitted)
        ServingCheck.add(self.ledger.open, predictions.serving)  # folded into all-time stats at the close
        self._predictions.clear()

    @staticmethod
    def _count_predictions(ledger: WindowLedger, predictions: Predictions, cbpe: CBPE | None) -> None:
        """Window counts (and CBPE sums, with `cbpe`) of a batch of predictions."""
        times = predictions.times
        ledger.first_time = min(ledger.first_time, float(times.min()))
        positions = ledger.positions(times)
        for position in np.unique(positions):
            mask = positions == position
            window = ledger.at(int(position))
            if window is None:
                continue
            window.predictions += int(mask.sum())
            if cbpe is not None and window.index >= ledger.cbpe_from:
                if window.cbpe is None:
                    window.cbpe = cbpe.new_window()
                cbpe.accumulate(window.cbpe, predictions.probability[mask], predictions.positive[mask])

    # ------------------------------------------------------------------ outcomes

    def observe_outcome(self, joined: JoinedOutcome, offset: int | None = None) -> list[Finding]:
        """A joined record of this model (prediction and its label).

        Returns `performance_degradation` findings of the batch processed by this call, if any."""
        prediction = joined.prediction
        probability = joined.probability
        if self.task is None:
            self._decide_task(prediction, probability, joined.probabilities)
        label = joined.label
        interner = self.interner
        buffer = self._outcomes
        if self.task == CLASSIFICATION:
            cache = interner.class_cache
            if type(prediction) is float and is_score(prediction):
                if math.isnan(probability):
                    probability = prediction
                predicted = interner.positive_code if prediction >= 0.5 else interner.negative()
            else:
                predicted = cache.get(prediction)
                if predicted is None:
                    predicted = interner.klass(prediction)
            actual = cache.get(label)
            if actual is None:
                actual = interner.klass(label)
            if joined.probabilities:
                buffer.multi.append((len(buffer.rows), joined.probabilities, interner.classes[actual]))
        else:
            if isinstance(prediction, str | bool) or isinstance(label, str | bool):
                self.counters["task_mismatches"] += 1
                return []
            predicted = float(prediction)
            actual = float(label)
        version = interner.version_code.get(joined.model_version)
        if version is None:
            version = interner.version(joined.model_version)
        slices = interner.slice_code.get(joined.slices)
        if slices is None:
            slices = interner.slices(joined.slices)
        rows = buffer.rows
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

    def _flush_outcomes(self) -> list[Finding]:
        outcomes = self._outcomes.outcomes(self.task, self.interner.positive_code)
        if outcomes is None:
            return []
        self.cumulative = self._count_outcomes(self.ledger, outcomes, self.cumulative, self.counters, self.periods)
        self._outcomes.clear()
        batch = outcomes.batch
        start = 0
        if not self.error_stream.fitted_or_failed:
            start = self.reference.take(batch, self.warmup, self.interner.positive_code)
            if len(self.reference.loss) >= self.warmup:
                self.error_stream.fit(np.asarray(self.reference.loss), self.task)
                if self.cbpe_check.cbpe is None and self.reference.prob:
                    self.cbpe_check.fit(*self.reference.cbpe_samples())
                self.reference.clear()
        return self.error_stream.update(
            batch.loss, start, outcomes.outcome_time, outcomes.offsets, self.task, self._metric_history
        )

    def _count_outcomes(
        self,
        ledger: WindowLedger,
        outcomes: Outcomes,
        cumulative: MetricsAccumulator | None,
        counters: dict[str, int],
        periods: LossPeriods | None,
    ) -> MetricsAccumulator:
        """Fold a batch of outcomes into the all-time metrics (returned), the canary and slice
        periods (with `periods`) and the windows of their predictions' time."""
        n = len(outcomes)
        batch = outcomes.batch
        interner = self.interner
        counters["outcomes"] += n
        prediction_time = outcomes.prediction_time
        ledger.first_time = min(ledger.first_time, float(prediction_time.min()))
        n_classes = len(interner.classes)
        scopes = len(interner.scopes)
        if cumulative is None:
            cumulative = MetricsAccumulator(self.task or REGRESSION, scopes, n_classes)
        cumulative.ensure(scopes, n_classes)
        groups, rows = interner.scope_rows(outcomes.versions, outcomes.slices)
        cumulative.update(groups, rows, batch)
        if periods is not None:
            periods.add(groups, batch.loss[rows], scopes)
        # Windows of prediction time: counts, and metrics overall (group 0) and per version.
        positions = ledger.positions(prediction_time)
        version_groups = np.concatenate([np.zeros(n, dtype=np.int64), outcomes.versions + 1])
        version_rows = np.concatenate([np.arange(n), np.arange(n)])
        recent_from = ledger.open.index - self.max_report_windows
        for position in np.unique(positions):
            mask = positions == position
            window = ledger.at(int(position))
            if window is None:
                counters["outcomes_for_untracked_windows"] += int(mask.sum())
                continue
            window.labelled += int(mask.sum())
            window.loss += float(batch.loss[mask].sum())
            if window.index >= recent_from:
                if window.metrics is None:
                    window.metrics = MetricsAccumulator(batch.task, 1 + len(interner.versions), n_classes)
                else:
                    window.metrics.ensure(1 + len(interner.versions), n_classes)
                pick = np.concatenate([mask, mask])
                window.metrics.update(version_groups[pick], version_rows[pick], batch)
        return cumulative

    # ------------------------------------------------------------------ reference

    def fit_reference(
        self, labels: Sequence[Any], predictions: Sequence[Any], probabilities: Sequence[float] | None = None
    ) -> None:
        """Use labelled reference data (e.g. the validation set) instead of the warm-up:
        `probabilities` are positive-class probabilities (binary classifiers, for CBPE)."""
        if self.task is None and len(predictions):
            p0 = _NAN if probabilities is None else float(probabilities[0])
            self._decide_task(predictions[0], p0, None)
        interner = self.interner
        if self.task == CLASSIFICATION:
            predicted = np.array([interner.klass(p) for p in predictions], dtype=np.int64)
            actual = np.array([interner.klass(y) for y in labels], dtype=np.int64)
            loss = (predicted != actual).astype(np.float64)
        else:
            loss = np.abs(np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64))
        self.reference.loss = []
        self.error_stream.fit(loss, self.task)
        if self.task == CLASSIFICATION and probabilities is not None:
            self.cbpe_check.fit(
                np.asarray(probabilities, dtype=np.float64),
                actual == interner.positive_code,
                predicted == interner.positive_code,
            )

    # ------------------------------------------------------------------ windows

    def close_window(self, window_end: datetime, offset: int | None = None) -> list[Finding]:
        """The window of the model's predictions that ends at `window_end` (event time) closed:
        process what is buffered, then run the window checks. Returns every finding, active or not."""
        ledger = self.ledger
        pending = [*self._predictions.time, *(row[0] for row in self._outcomes.rows)]
        closing = ledger.close(window_end.timestamp(), pending)
        end = closing.end
        # Buffered events now fall on the right side of the new boundary.
        ledger.cbpe_from = closing.index
        self._flush_predictions()
        ledger.cbpe_from = ledger.open.index
        findings = self._flush_outcomes()
        at = to_time(end)
        findings += self.error_stream.check(at, offset)
        findings += self.cbpe_check.check(
            closing, at, offset, reference_version=self.error_stream.reference_version,
            quality=lambda: self.cbpe_report(last=10), metric_history=self._metric_history,
        )  # fmt: skip
        closing.cbpe = None  # estimated: the window's CBPE sums are no longer needed
        interner = self.interner
        findings += self.serving.check(closing, interner.versions, at, offset)
        horizon = self.periods.close(len(interner.scopes))
        proportion = self.task == CLASSIFICATION
        findings += check_canary(
            self.model_id, horizon, interner.versions, interner.version_scope, at, offset,
            proportion=proportion, alpha=self.window_alpha, evaluation=self.evaluation,
            baseline=self.model.baseline_version, history=self.history, metric_history=self._metric_history,
        )  # fmt: skip
        findings += check_slices(
            self.model_id, horizon, interner.slice_scope_items(), at, offset,
            proportion=proportion, alpha=self.window_alpha, evaluation=self.evaluation,
            history=self.history, metric_history=self._metric_history,
        )  # fmt: skip
        findings += check_labels(
            self.model_id, ledger.windows, end, at, offset,
            expected=self.evaluation.expected_label_coverage, horizon=self.coverage_horizon,
            alpha=self.window_alpha, min_events=self.min_events,
        )  # fmt: skip
        self.serving.fold(closing)
        ledger.trim(end, self.max_report_windows, self.coverage_horizon, self.evaluation.expected_label_coverage > 0)
        return findings

    def _metric_history(self) -> dict[str, Any]:
        return metric_history(self.task, self.ledger.windows, self.interner.versions)

    # ------------------------------------------------------------------ reports (read-only)

    def _view(self) -> tuple[MetricsAccumulator | None, WindowLedger, dict[str, int], dict[int, ServingStats]]:
        """All-time metrics, ledger, counters and serving stats of the buffered predictions,
        with the buffered events counted in, and nothing consumed: the buffers stay as they are
        (and so do the findings they will give), the accumulators are copied where written."""
        predictions = self._predictions.predictions()
        outcomes = self._outcomes.outcomes(self.task, self.interner.positive_code)
        if predictions is None and outcomes is None:
            return self.cumulative, self.ledger, self.counters, {}
        ledger = self.ledger.view()
        counters = dict(self.counters)
        cumulative = self.cumulative
        serving: dict[int, ServingStats] = {}
        if predictions is not None:
            self._count_predictions(ledger, predictions, None)
            for version, latency, status in predictions.serving:
                serving.setdefault(version, ServingStats()).add(latency, status)
        if outcomes is not None:
            cumulative = self._count_outcomes(ledger, outcomes, copy.deepcopy(cumulative), counters, None)
        return cumulative, ledger, counters, serving

    def metrics(self) -> dict[str, Any]:
        """All-time metrics: overall, per version, per slice value; serving per version; counters.
        Buffered events count; nothing is processed (no finding is consumed by reading)."""
        cumulative, ledger, counters, buffered_serving = self._view()
        interner, task, cost = self.interner, self.task, self.model.cost
        open_serving = ledger.open.serving
        return {
            "model_id": self.model_id,
            "task": task,
            "overall": reports.summary(cumulative, 0, interner, task, cost),
            "versions": {
                name: reports.summary(cumulative, interner.version_scope[code], interner, task, cost)
                for code, name in enumerate(interner.versions)
            },
            "slices": {
                name: reports.summary(cumulative, index, interner, task, cost, reliability=False, per_class=False)
                for index, name in interner.slice_scope_items()
            },
            "serving": {
                name: self.serving.summary(code, open_serving.get(code), buffered_serving.get(code))
                for code, name in enumerate(interner.versions)
            },
            "counters": counters if counters is not self.counters else dict(counters),
            "error_detector": self.detector.name if self.detector else self.detector_error,
        }

    def window_metrics(self, last: int | None = None) -> list[dict[str, Any]]:
        """Per closed window of prediction time (newest last): counts, label coverage so far,
        metrics overall and per version, CBPE estimate. Read-only, buffered events included."""
        _, ledger, _, _ = self._view()
        return reports.window_report(ledger.windows, self.interner, self.task, self.model.cost, last)

    def cbpe_report(self, last: int | None = None, min_coverage: float = 0.9) -> dict[str, Any]:
        """CBPE estimate against realised accuracy per window, and the estimator's bias (mean of
        estimate - realised) over windows at least `min_coverage` labelled. Read-only."""
        _, ledger, _, _ = self._view()
        return reports.cbpe_report(ledger.windows, last, min_coverage)

    def nbytes(self) -> int:
        """Approximate bytes of the numeric state (accumulators), for capacity planning."""
        total = self.cumulative.nbytes() if self.cumulative else 0
        for w in self.ledger.windows:
            if w.metrics is not None:
                total += w.metrics.nbytes()
            if w.cbpe is not None:
                total += w.cbpe.auc.nbytes
        return total + self.periods.nbytes()

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume, JSON-safe (no pickle); buffered events included.

        The keys and their order are a format: workers restore states saved by the previous
        release (`tests/evaluation/test_state_format.py` holds it byte for byte)."""
        interned = self.interner.state()
        ledger = self.ledger.state()
        periods = self.periods.state()
        errors = self.error_stream
        return {
            "version": 1,
            "model_id": self.model_id,
            "config": self.config.model_dump(mode="json"),
            "batch_size": self.batch_size,
            "max_report_windows": self.max_report_windows,
            "task": self.task,
            "counters": dict(self.counters),
            "versions": interned["versions"],
            "slice_tuples": interned["slice_tuples"],
            "slice_values": interned["slice_values"],
            "scopes": interned["scopes"],
            "classes": interned["classes"],
            "negative_code": interned["negative_code"],
            "cumulative": self.cumulative.to_state() if self.cumulative else None,
            "serving": [s.to_state() for s in self.serving.all_time],
            "windows": ledger["windows"],
            "open": ledger["open"],
            "tracked_from": ledger["tracked_from"],
            "trimmed": ledger["trimmed"],
            "first_time": ledger["first_time"],
            "period": periods["period"],
            "ring": periods["ring"],
            "warm": self.reference.state(),
            "detector": errors.detector.to_state() if errors.detector else None,
            "detector_error": errors.detector_error,
            "reference": errors.reference_state(),
            "cbpe": self.cbpe_check.cbpe.to_state() if self.cbpe_check.cbpe else None,
            "recent": [errors.recent.tolist(), errors.recent_count],
            "run": [errors.run[0], errors.run[1], finite(errors.run[2])],
            "alarmed_since_close": errors.alarmed_since_close,
            "score_history": self.history.series,
            "error_peak": errors.peak,
            **self._outcomes.state(),
            "prediction_buffer": self._predictions.state(),
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
        self.serving.all_time = []
        self.interner.restore(state)
        self.serving.all_time = [ServingStats.from_state(s) for s in state["serving"]]
        self.cumulative = MetricsAccumulator.from_state(state["cumulative"]) if state["cumulative"] else None
        self.ledger.restore(state)
        self.periods.restore(state)
        self.reference.restore(state["warm"])
        self.error_stream.restore(state)
        self.cbpe_check.cbpe = CBPE.from_state(state["cbpe"]) if state["cbpe"] else None
        self.history.series = {
            name: [list(p) for p in points] for name, points in state.get("score_history", {}).items()
        }
        self._outcomes.restore(state)
        self._predictions.restore(state["prediction_buffer"])
