"""Attribution drift: what drives a model's predictions, against what drove them at first.

Events may carry per-feature attributions beside the features (`PredictionEvent.attributions`,
e.g. SHAP values): how much each feature moved that prediction, in the prediction's units. A
feature's *influence* is its mean |attribution|. A model whose inputs look as they always did
can still change what it bases its predictions on (a retrained or hot-swapped model, a feature
silently zeroed upstream and compensated by others, a broken feature pipeline the model leans
away from); no feature or prediction drift test sees that, this signal does.

How it works, for a model whose configuration has an `attribution` section (opt-in, so the
model's false-alarm budget is known from its configuration alone, before any event):

* **Reference**: the model's first `reference.warmup_events` events that carry attributions (at
  most `reference.sample_size`, and at most `MAX_REFERENCE_VALUES` rows x features), in time
  order. The features are those their attributions name (at most `caps.max_features_per_model`);
  a feature an event leaves out counts as 0 there (producers often send only the largest).
* **Window**: per feature, two sums of |attribution| (as it is, for the evidence; capped, for the
  test) and one count of events: O(features) state, whatever the traffic; the attributions to
  features the reference never named are summed apart (`unreferenced_share` in the evidence).
  Events without attributions are counted, not used.
* **Test** (`InfluenceShiftTest`, one per model, `SignalType.detectors` = 1): the largest
  standardised change of a feature's influence, max_j |m_j - mu_j| / (sd_j sqrt(1/n + 1/N)),
  with m the window's mean |attribution|, mu and sd the reference's, n and N the events, each
  |attribution| capped at its feature's 99th reference percentile (heavy tails). Its
  threshold comes from block-bootstrap windows of the reference rows, each against a profile
  re-estimated from another resample (`CalibratedWindowTest`), at the run length every detector
  of the model gets (`drift.detector_run_length` of `drift.count_detectors`), so the model's
  false-alarm rate stays the declared one. Measured at 1% and 0.1% per window (20-40 references
  of 2,000 rows, windows of 500): 0.75-1.25x the declared rate on Gaussian, |Student-t(3)| and
  sparse attributions; 1.7x on AR(1) attributions with phi = 0.5 (the block bootstrap sees most,
  not all, of the dependence).
* **Budget**: the run length is the drift monitor's (`DriftMonitor.run_length`), counted on its
  reference's features: the test is calibrated once both references are there.
* **Finding**: `attribution_drift` (model-level), ranking the features whose influence changed
  most in the prediction's units (attributions of all features share those units, so an absolute
  change compares across features; a ratio would rank noise on features that hardly matter):
  reference mean |attribution| -> current, ratio, share of the total before -> after.

>>> from monitor.contracts.config import MonitorConfig
>>> config = MonitorConfig.model_validate({"models": [{"model_id": "fraud", "attribution": {}}]})
>>> ATTRIBUTION.wanted(config.model("fraud")), ATTRIBUTION.wanted(config.model("other"))
(True, False)
"""

from __future__ import annotations

import hashlib
import logging
import math
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np

from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import AttributionConfig, ModelConfig, MonitorConfig
from monitor.core.finding import Finding
from monitor.detectors import calibration
from monitor.detectors._window import CalibratedWindowTest
from monitor.detectors.base import DataKind, TestResult
from monitor.monitoring.drift import DriftMonitor, detector_seed, last_score, recent_scores, remember_score
from monitor.monitoring.signals import SignalType

log = logging.getLogger(__name__)

MAX_REFERENCE_VALUES = 250_000
"""Reference rows x features kept while the reference fills (2 MB; it is state until then)."""

CAP_QUANTILE = 0.99
"""Each feature's |attribution| counts up to this quantile of its reference values (`clip`)."""

SD_FLOOR_SHARE = 1e-3
"""A feature whose |attribution| hardly varies in the reference is standardised by this share of
the reference's total influence at least: a feature that never mattered and starts to is found,
rounding noise on a constant one is not."""

ATTRIBUTIONS = "__attributions__"
"""The `feature` label of the signal's score in the drift metrics (as `__prediction__` is the score's)."""

SUMMARY_FEATURES = 3
"""Features the summary names (the evidence ranks `attribution.top_features`)."""


class InfluenceShiftTest(CalibratedWindowTest):
    """The largest standardised change of a feature's mean |attribution| between a window and the
    reference rows (events x features of attributions, 0 where an event names no value).

    Each |attribution| is capped at its feature's `CAP_QUANTILE` in the reference first (`clip`),
    as the standardising detectors clip what the reference never showed: attributions are often
    heavy-tailed, and a few values beyond anything in the reference would otherwise decide a
    window on their own (uncapped, |Student-t(3)| attributions raised 2.5-7 times the declared
    false alarms; capped, 0.8-1.3 times). A change of influence moves the capped means too.

    >>> rng = np.random.default_rng(0)
    >>> reference = np.abs(rng.normal(size=(3000, 3)) * [1.0, 0.5, 0.2])
    >>> test = InfluenceShiftTest().fit(reference, run_length=1e6, window_size=500)
    >>> test.test(np.abs(rng.normal(size=(500, 3)) * [1.0, 0.5, 0.2])).drifted
    False
    >>> test.test(np.abs(rng.normal(size=(500, 3)) * [0.6, 0.9, 0.2])).drifted
    True
    """

    name = "influence_shift"
    accepts = frozenset({DataKind.multivariate})
    spread_power = 0.0
    """Standardised by the two-sample standard error: its null distribution keeps its scale
    whatever the window's size."""

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.caps = np.zeros(0)
        """Per feature, the largest |attribution| counted as it is (`clip`)."""
        self.means = np.zeros(0)
        self.sds = np.zeros(0)

    def _learn(self, reference: np.ndarray, context: dict[str, Any]) -> np.ndarray:
        rows = np.abs(np.nan_to_num(np.asarray(reference, dtype=float), nan=0.0, posinf=0.0, neginf=0.0))
        if rows.ndim != 2 or len(rows) < 50:
            raise ValueError(f"{self.name}: the reference needs at least 50 rows of attributions, got {len(rows)}")
        # A feature (nearly) always 0 in the reference is capped at its largest value, or not at
        # all: if it starts to matter, that is what should be seen.
        caps = np.quantile(rows, CAP_QUANTILE, axis=0)
        highest = rows.max(axis=0)
        self.caps = np.where(caps > 0, caps, np.where(highest > 0, highest, np.finfo(float).max))
        rows = self.clip(rows)
        self.means, self.sds = self._profile(rows.mean(axis=0), (rows**2).mean(axis=0))
        return rows

    def clip(self, rows: np.ndarray) -> np.ndarray:
        """|attribution| rows (events x features) capped at each feature's cap."""
        return np.minimum(rows, self.caps)

    @staticmethod
    def _profile(means: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means and floored standard deviations from the first two moments (per row of profiles)."""
        sds = np.sqrt(np.maximum(squares - means**2, 0.0))
        floor = SD_FLOOR_SHARE * means.sum(axis=-1, keepdims=True)
        return means, np.maximum(sds, np.maximum(floor, 1e-300))

    def _block_series(self, reference: np.ndarray) -> np.ndarray:
        return reference.sum(axis=1)  # total influence per event: its autocorrelation sets the block

    def _null_statistics(self, reference: np.ndarray, boot: calibration.Bootstrap, window_size: int) -> np.ndarray:
        width = reference.shape[1]
        moments = boot.resample_means(np.hstack([reference, reference**2]), calibration.N_PROFILES)
        means, sds = self._profile(moments[:, :width], moments[:, width:])
        windows = boot.resample_means(reference, calibration.N_WINDOWS, length=window_size)
        matched = np.arange(calibration.N_WINDOWS) % calibration.N_PROFILES
        error = math.sqrt(1.0 / window_size + 1.0 / len(reference))
        return np.abs((windows - means[matched]) / (sds[matched] * error)).max(axis=1)

    def standardised_changes(self, means: np.ndarray, n: int) -> np.ndarray:
        """Per feature, (window mean - reference mean) in standard errors, for a window of n events."""
        error = math.sqrt(1.0 / max(n, 1) + 1.0 / max(self.reference_size, 1))
        return (means - self.means) / (self.sds * error)

    def test_sums(self, sums: np.ndarray, n: int) -> TestResult:
        """The decision on a window given as its per-feature sums of capped |attribution|
        (`clip`) over n events."""
        if n == 0:
            return self._result(math.nan, 0, {})
        z = self.standardised_changes(sums / n, n)
        return self._result(float(np.abs(z).max(initial=0.0)), n, {})

    def _statistic(self, window: np.ndarray) -> tuple[float, int, dict[str, Any]]:
        rows = self.clip(np.abs(np.nan_to_num(np.asarray(window, dtype=float), nan=0.0)))
        if len(rows) == 0:
            return math.nan, 0, {}
        z = self.standardised_changes(rows.mean(axis=0), len(rows))
        return float(np.abs(z).max(initial=0.0)), len(rows), {}

    def _profile_state(self) -> dict[str, Any]:
        return {"caps": self.caps.tolist(), "means": self.means.tolist(), "sds": self.sds.tolist()}

    def _load_profile(self, state: dict[str, Any]) -> None:
        self.caps = np.asarray(state["caps"], dtype=float)
        self.means = np.asarray(state["means"], dtype=float)
        self.sds = np.asarray(state["sds"], dtype=float)


class AttributionSignal:
    """The `attribution_drift` signal of one model (see the module's docstring)."""

    def __init__(self, model: ModelConfig, config: MonitorConfig, drift: DriftMonitor):
        assert model.window is not None and model.attribution is not None, "use MonitorConfig.model()"
        self.model = model
        self.config = config
        self.drift = drift
        """The model's drift monitor: its run length is the test's (`DriftMonitor.run_length`)."""
        self.settings: AttributionConfig = model.attribution
        self.window_size = model.window.size_events or model.window.min_events
        self.names: list[str] = []
        """Features the reference's attributions name, in the order first seen (the columns)."""
        self.test: InfluenceShiftTest | None = None
        self.unfitted: str | None = None
        """Why the reference could not be calibrated on (then nothing is tested)."""
        self.reference_version: str | None = None
        self.without_attributions = 0
        """Events seen without attributions (all windows; a metric)."""
        # While the reference fills
        self._rows: list[np.ndarray] = []
        # The open window
        self.reference_means = np.zeros(0)
        """Per feature, the reference's mean |attribution| as it is (the test's are capped)."""
        self.sums = np.zeros(0)
        """Per feature, the window's |attribution| summed as it is (the evidence)..."""
        self.capped_sums = np.zeros(0)
        """...and capped (`InfluenceShiftTest.clip`: the test)."""
        self.count = 0
        self.other = 0.0
        """|attribution| summed over features the reference never named."""
        self.missing = 0
        """Events of the window without attributions."""
        self.first: float | None = None
        self.last: float | None = None
        self.history: dict[str, list[list[float]]] = {}

    # -- the reference ------------------------------------------------------------------------------

    @property
    def rows_wanted(self) -> int:
        """Reference rows: the warm-up, within the sample size and `MAX_REFERENCE_VALUES`."""
        reference = self.config.reference
        by_values = MAX_REFERENCE_VALUES // max(len(self.names), 1)
        return max(1, min(reference.warmup_events, reference.sample_size, by_values))

    def _add_reference_rows(self, attributions: np.ndarray) -> int:
        """Take rows for the reference from the start of `attributions` (events that carry
        some); returns how many it took."""
        kept = sum(map(len, self._rows))
        taken = attributions[: max(0, self.rows_wanted - kept)]
        cap = self.config.caps.max_features_per_model
        if len(taken) and len(self.names) < cap:
            names = dict.fromkeys(self.names)
            names.update(dict.fromkeys(chain.from_iterable(taken)))
            self.names = list(names)[:cap]
            taken = taken[: max(0, self.rows_wanted - kept)]  # more features, fewer rows (`rows_wanted`)
        if len(taken):
            self._rows.append(self._matrix(taken)[0])
        return len(taken)

    def _calibrate(self) -> None:
        """Fit the test on the reference rows, at the model's per-detector run length."""
        run_length = self.drift.run_length()
        assert run_length is not None
        width = len(self.names)
        rows = np.vstack([np.pad(chunk, ((0, 0), (0, width - chunk.shape[1]))) for chunk in self._rows])
        self._rows = []
        test = InfluenceShiftTest()
        try:
            self.test = test.fit(
                rows,
                run_length=run_length,
                window_size=self.window_size,
                seed=detector_seed(self.model.model_id, test.name),
            )
        except ValueError as error:
            self.unfitted = str(error)
            log.warning("model %s: what drives its predictions is not watched: %s", self.model.model_id, error)
            return
        self.reference_means = rows.mean(axis=0)
        body = f"{self.names}\x1f{self.reference_means.tolist()}\x1f{test.to_state()['profile']}"
        self.reference_version = hashlib.sha256(body.encode()).hexdigest()[:16]
        self._open_window()

    def _matrix(self, attributions: np.ndarray) -> tuple[np.ndarray, bool]:
        """|attribution| per event (rows) and reference feature (columns), 0 where an event names
        none, and whether every event names every feature. One `itemgetter` per event when they
        all do; else one `dict.get` per event and feature."""
        names = self.names
        if not names:
            return np.zeros((len(attributions), 0)), False
        try:
            rows = list(map(itemgetter(*names), attributions))
        except KeyError:
            columns = [list(map(dict.get, attributions, repeat(name))) for name in names]
            return np.abs(np.nan_to_num(np.array(columns, dtype=float).T, nan=0.0)), False
        return np.abs(np.array(rows, dtype=float).reshape(len(attributions), len(names))), True

    # -- events -------------------------------------------------------------------------------------

    def observe(self, predictions: PredictionBatch) -> list[Finding]:
        carried = np.fromiter(map(bool, predictions.attributions), dtype=bool, count=len(predictions))
        missing = len(predictions) - int(carried.sum())
        self.without_attributions += missing
        attributions = predictions.attributions[carried]
        times = predictions.timestamps[carried]
        if self.test is None and self.unfitted is None:
            taken = self._add_reference_rows(attributions)
            attributions, times = attributions[taken:], times[taken:]
            if taken:  # the events without attributions after the reference's last count in the window
                missing = int((~carried[np.flatnonzero(carried)[taken - 1] + 1 :]).sum())
            if sum(map(len, self._rows)) >= self.rows_wanted and self.drift.reference is not None:
                self._calibrate()
        if self.test is None:
            return []
        self.missing += missing
        if len(attributions):
            matrix, complete = self._matrix(attributions)
            known = matrix.sum(axis=0)
            self.sums += known
            self.capped_sums += self.test.clip(matrix).sum(axis=0)
            self.count += len(matrix)
            if not complete or set(map(len, attributions)) != {len(self.names)}:
                every = np.fromiter(chain.from_iterable(map(dict.values, attributions)), dtype=float)
                self.other += max(0.0, float(np.abs(every).sum() - known.sum()))
            self.first = float(times[0]) if self.first is None else self.first
            self.last = float(times[-1])
        return []

    def close_window(self, at: datetime, offset: int | None) -> list[Finding]:
        if self.test is None:
            return []
        test, n = self.test, self.count
        result = test.test_sums(self.capped_sums, n)
        end = datetime.fromtimestamp(self.last, UTC) if self.last is not None else at
        remember_score(self.history, test.name, end, result.score)
        finding = Finding(AlertKind.attribution_drift, self.model.model_id, None, None, False, at, offset=offset)
        if n >= self.model.window.min_events and result.drifted:  # type: ignore[union-attr]
            finding = self._finding(result, at, offset)
        self._open_window()
        return [finding]

    def _open_window(self) -> None:
        self.sums = np.zeros(len(self.names))
        self.capped_sums = np.zeros(len(self.names))
        self.count = self.missing = 0
        self.other = 0.0
        self.first = self.last = None

    def _finding(self, result: Any, at: datetime, offset: int | None) -> Finding:
        assert self.test is not None and self.first is not None and self.last is not None
        test, n = self.test, self.count
        reference, current = self.reference_means, self.sums / n
        z = test.standardised_changes(self.capped_sums / n, n)
        before, after = reference.sum(), current.sum() + self.other / n
        order = np.argsort(-np.abs(current - reference), kind="stable")[: self.settings.top_features]
        ranked = [
            [
                self.names[j],
                _round(reference[j]),
                _round(current[j]),
                _round(current[j] / reference[j]) if reference[j] > 0 else None,
                _round(reference[j] / before) if before > 0 else None,
                _round(current[j] / after) if after > 0 else None,
                _round(z[j]),
            ]
            for j in order
        ]
        details: dict[str, Any] = {
            "changed": ranked,
            "changed_columns": [
                "feature",
                "reference_mean_abs",
                "current_mean_abs",
                "ratio",
                "reference_share",
                "current_share",
                "standardised_change",
            ],  # fmt: skip
            "reference_total_mean_abs": _round(before),
            "current_total_mean_abs": _round(after),
            "unreferenced_share": _round(self.other / n / after) if after > 0 else 0.0,
            "events_without_attributions": self.missing,
            "features": len(self.names),
            **recent_scores(self.history[test.name]),
        }
        evidence = Evidence(
            detector=test.name,
            score=result.score,
            threshold=result.threshold,
            window_start=datetime.fromtimestamp(self.first, UTC),
            window_end=datetime.fromtimestamp(self.last, UTC),
            reference_size=test.reference_size,
            current_size=n,
            reference_version=self.reference_version,
            settings_hash=test.settings_hash(),
            details=details,
        )
        return Finding(
            AlertKind.attribution_drift,
            self.model.model_id,
            None,
            None,
            True,
            at,
            evidence=evidence,
            summary=f"{self.model.model_id}: what drives its predictions changed: {_moved(ranked, result.threshold)}; "
            f"{test.name} = {result.score:.3g} over its threshold {result.threshold:.3g} ({n} events)",
            offset=offset,
        )

    def drift_scores(self) -> dict[str, list[tuple[str, float, float]]]:
        """`ATTRIBUTIONS` -> [(test, last closed window's score, threshold)], for the drift
        metrics (`driftline_drift_score{feature="__attributions__"}`); empty until calibrated."""
        if self.test is None:
            return {}
        return {ATTRIBUTIONS: [(self.test.name, last_score(self.history, self.test.name), self.test.threshold)]}

    # -- state --------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        width = len(self.names)
        rows = [np.pad(chunk, ((0, 0), (0, width - chunk.shape[1]))) for chunk in self._rows]
        return {
            "names": self.names,
            "test": None if self.test is None else self.test.to_state(),
            "unfitted": self.unfitted,
            "reference_version": self.reference_version,
            "without_attributions": self.without_attributions,
            "rows": np.vstack(rows).tolist() if rows else [],
            "reference_means": self.reference_means.tolist(),
            "sums": self.sums.tolist(),
            "capped_sums": self.capped_sums.tolist(),
            "count": self.count,
            "other": self.other,
            "missing": self.missing,
            "first": self.first,
            "last": self.last,
            "history": self.history,
        }

    @classmethod
    def from_state(
        cls, model: ModelConfig, config: MonitorConfig, drift: DriftMonitor, state: dict[str, Any]
    ) -> AttributionSignal:
        signal = cls(model, config, drift)
        signal.names = list(state["names"])
        signal.test = None if state["test"] is None else InfluenceShiftTest.from_state(state["test"])
        signal.unfitted = state["unfitted"]
        signal.reference_version = state["reference_version"]
        signal.without_attributions = state["without_attributions"]
        signal._rows = [np.asarray(state["rows"], dtype=float)] if state["rows"] else []
        signal.reference_means = np.asarray(state["reference_means"], dtype=float)
        signal.sums = np.asarray(state["sums"], dtype=float)
        signal.capped_sums = np.asarray(state["capped_sums"], dtype=float)
        signal.count, signal.other, signal.missing = state["count"], state["other"], state["missing"]
        signal.first, signal.last = state["first"], state["last"]
        signal.history = {name: [list(p) for p in points] for name, points in state["history"].items()}
        return signal


def _round(value: float) -> float:
    return float(f"{float(value):.4g}")


def _moved(ranked: list[list[Any]], threshold: float) -> str:
    """`'amount' 41% -> 12% of the attribution (mean |attribution| 0.82 -> 0.24), 'country' ...`:
    the first of `ranked` (rows of the evidence's `changed`) and those after it whose change
    alone crosses `threshold`, at most `SUMMARY_FEATURES`."""
    parts = []
    named = [row for k, row in enumerate(ranked) if k == 0 or abs(row[6]) > threshold]
    for name, before, after, _, share_before, share_after, _ in named[:SUMMARY_FEATURES]:
        shares = "" if share_before is None or share_after is None else f"{share_before:.0%} -> {share_after:.0%} "
        parts.append(f"{name!r} {shares}of the attribution (mean |attribution| {before:.3g} -> {after:.3g})")
    return ", ".join(parts)


ATTRIBUTION = SignalType(
    wanted=lambda model: model.attribution is not None,
    detectors=lambda model, feature_types: 1,
    create=AttributionSignal,
    restore=AttributionSignal.from_state,
)
