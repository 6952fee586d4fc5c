"""The embedding signal: drift of a model's `vector` features (embeddings of text or images).

A model that declares a feature `type: vector` (with its `dimension`) gets this signal; the drift
monitor and the reference builder leave such features to it. Per vector feature:

1. **Reference**, from the feature's first `reference.warmup_events` valid vectors: the first
   half accumulates mean and covariance (`CovarianceSums`, d x d numbers), from which the
   principal components explaining `embeddings.variance_kept` of the variance are kept (at most
   `embeddings.max_components`, `Projection`); the second half is projected on them and kept
   (k + 1 numbers a row, at most `reference.sample_size` rows) until it calibrates the test,
   then dropped. No raw vector is ever kept: the state is O(d^2) during the first half of the
   warm-up, O(d k) after.
2. **Windows**, the model's (the drift monitor's clock closes them): each batch's vectors are
   projected with one matrix product and summed (`WindowMoments`: O(k + d) numbers whatever
   the traffic). Vectors of the wrong length, or with a number that is not finite once squared,
   are counted, never used.
3. **Test**, at each close with at least `window.min_events` vectors: `EmbeddingShift`, a sum
   of the squared standardised moves of each component's mean and spread, of the distance off
   the kept components and of the mean off them (so a shift orthogonal to them is seen),
   calibrated by bootstrap to the share of the model's false-alarm budget every one of its detectors gets
   (one detector per vector feature, `SignalType.detectors`).

Findings: `feature_drift` on the vector feature, naming the components that moved, and
`data_quality` on it when too many of its values were malformed or missing; both report clean
windows too, so alerts resolve. A data-quality alert mutes the drift alert on the same feature.

>>> from monitor.contracts.config import MonitorConfig
>>> config = MonitorConfig.model_validate(
...     {"models": [{"model_id": "search", "features": {"query_emb": {"type": "vector", "dimension": 384}}}]})
>>> vector_features(config.model("search")), EMBEDDINGS.wanted(config.model("other"))
({'query_emb': 384}, False)
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import FeatureType, ModelConfig, MonitorConfig
from monitor.core.finding import Finding
from monitor.detectors.embedding_shift import CovarianceSums, EmbeddingShift, Projection, WindowMoments
from monitor.monitoring.change import SHIFTED_SD, mean_moved, spread_moved
from monitor.monitoring.drift import (
    DriftMonitor,
    ValueSample,
    detector_seed,
    last_score,
    recent_scores,
    remember_score,
)
from monitor.monitoring.signals import SignalType

log = logging.getLogger(__name__)

TOP_COMPONENTS = 5
"""Components the evidence lists (those that moved most); the summary names up to three."""


def vector_features(model: ModelConfig) -> dict[str, int]:
    """The model's vector features and their dimensions (not those marked `pii: drop`: they
    are removed where events are decoded)."""
    return {
        name: spec.dimension  # type: ignore[misc]
        for name, spec in model.features.items()
        if spec.type is FeatureType.vector and spec.pii is None
    }


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), UTC)


class VectorColumn:
    """One batch's values of a vector feature: the valid ones as a matrix, where they are, and
    how many were missing or malformed. Per-event Python only when a value is not a list of
    `dimension` numbers (the error path)."""

    def __init__(self, raw: list[Any], dimension: int):
        self.size = len(raw)
        try:
            matrix = np.array(raw, dtype=float)
        except (TypeError, ValueError):  # ragged, or a value that is not a list of numbers
            matrix = None
        if matrix is not None and matrix.shape == (len(raw), dimension):
            shaped = np.arange(len(raw))
            self.nulls = self.wrong_shape = np.zeros(0, dtype=np.intp)
        else:
            null = np.fromiter((value is None for value in raw), dtype=bool, count=len(raw))
            fits = np.fromiter((type(v) is list and len(v) == dimension for v in raw), dtype=bool, count=len(raw))
            shaped, self.nulls, self.wrong_shape = (
                np.flatnonzero(fits),
                np.flatnonzero(null),
                np.flatnonzero(~fits & ~null),
            )
            matrix = np.array([raw[i] for i in shaped], dtype=float).reshape(len(shaped), dimension)
        # NaN, infinity, or numbers so large their squares overflow: unusable for moments
        finite = np.isfinite(np.einsum("ij,ij->i", matrix, matrix))
        everyone = bool(finite.all())
        self.rows = matrix if everyone else matrix[finite]
        self.positions = shaped if everyone else shaped[finite]
        self.non_finite = shaped[~finite]

    def counts_before(self, stop: int) -> tuple[int, int, int, int]:
        """(valid, null, wrong shape, non-finite) values among the first `stop` events."""
        return tuple(  # type: ignore[return-value]
            int(np.searchsorted(where, stop))
            for where in (self.positions, self.nulls, self.wrong_shape, self.non_finite)
        )


class VectorFeature:
    """One vector feature: its warm-up, its fitted projection and test, and the open window."""

    def __init__(self, name: str, dimension: int):
        self.name = name
        self.dimension = dimension
        self.fitting: CovarianceSums | None = CovarianceSums(dimension)
        """Mean and covariance of the first half of the reference; None once projected."""
        self.projection: Projection | None = None
        self.held_out: ValueSample | None = None
        """Projected rows of the second half of the reference, until they calibrate the test."""
        self.held_out_rows = 0
        self.test: EmbeddingShift | None = None
        self.unfitted: str | None = None
        """Why the reference could not calibrate the test (then only data quality is watched)."""
        self.version: str | None = None
        """Content hash of the projection and the test's profile (`reference_version`)."""
        self.warmup_events = self.warmup_nulls = 0
        self.window = WindowMoments.empty(0, dimension)
        self.events = self.nulls = self.wrong_shape = self.non_finite = 0
        self.window_start: float | None = None
        self.window_end: float | None = None
        self.history: dict[str, list[list[float]]] = {}
        self._projection_state: dict[str, Any] | None = None

    @property
    def warming_up(self) -> bool:
        return self.test is None and self.unfitted is None

    # -- events ---------------------------------------------------------------------------------

    def observe(self, batch: PredictionBatch, signal: EmbeddingSignal) -> None:
        column = VectorColumn(batch.column(self.name), self.dimension)
        start = 0
        if self.warming_up:
            taken = self._warm_up(column.rows, signal)
            start = int(column.positions[taken - 1]) + 1 if not self.warming_up else column.size
            self.warmup_events += start
            self.warmup_nulls += column.counts_before(start)[1]
        if start == column.size:
            return
        valid, nulls, wrong, non_finite = (
            total - before
            for total, before in zip(column.counts_before(column.size), column.counts_before(start), strict=True)
        )
        self.events += column.size - start
        self.nulls += nulls
        self.wrong_shape += wrong
        self.non_finite += non_finite
        if self.window_start is None:
            self.window_start = float(batch.timestamps[start])
        self.window_end = float(batch.timestamps[-1])
        if self.projection is not None and valid:
            self.window.add(self.projection.project(column.rows[len(column.rows) - valid :]))

    def _warm_up(self, rows: np.ndarray, signal: EmbeddingSignal) -> int:
        """Feed the reference; returns how many of `rows` it took."""
        fit_rows, held_out_rows = signal.reference_halves()
        taken = 0
        if self.fitting is not None:
            taken = min(fit_rows - self.fitting.count, len(rows))
            self.fitting.add(rows[:taken])
            if self.fitting.count >= fit_rows:
                settings = signal.config.embeddings
                self.projection = Projection.fit(self.fitting, settings.variance_kept, settings.max_components)
                self.fitting = None
                self.held_out = ValueSample(signal.config.reference.sample_size)
                self.window = WindowMoments.empty(self.projection.components, self.dimension)
        if self.held_out is not None and taken < len(rows):
            more = min(held_out_rows - self.held_out_rows, len(rows) - taken)
            self.held_out.add(self.projection.project(rows[taken : taken + more])[0])  # type: ignore[union-attr]
            self.held_out_rows += more
            taken += more
            if self.held_out_rows >= held_out_rows and signal.drift.reference is not None:
                self._calibrate(signal)
        return taken

    def _calibrate(self, signal: EmbeddingSignal) -> None:
        assert self.held_out is not None and self.projection is not None
        model = signal.model
        run_length = signal.drift.run_length()
        assert run_length is not None
        window_size = model.window.size_events or model.window.min_events  # type: ignore[union-attr]
        test = EmbeddingShift()
        try:
            self.test = test.fit(
                self.held_out.values(),
                run_length=run_length,
                window_size=window_size,
                seed=detector_seed(self.name, test.name),
                projection=self.projection,
            )
        except ValueError as error:
            self.unfitted = str(error)
            log.warning("model %s: embedding %r not watched for drift: %s", model.model_id, self.name, error)
        self.held_out = None
        body = {"projection": self.projection.to_state(), "test": None if self.test is None else self.test.to_state()}
        self.version = hashlib.sha256(orjson.dumps(body)).hexdigest()[:16]

    # -- window close ---------------------------------------------------------------------------

    def close(self, signal: EmbeddingSignal, at: datetime, offset: int | None) -> list[Finding]:
        findings: list[Finding] = []
        if not self.warming_up:
            quality = self._data_quality(signal, at, offset)
            findings.append(quality)
            drift = self._drift(signal, at, offset) if self.test is not None and not quality.active else None
            findings.append(drift or Finding(AlertKind.feature_drift, signal.model.model_id, self.name, None, False, at,
                                             offset=offset))  # fmt: skip
        self.window = WindowMoments.empty(len(self.window.squares), self.dimension)
        self.events = self.nulls = self.wrong_shape = self.non_finite = 0
        self.window_start = self.window_end = None
        return findings

    def _drift(self, signal: EmbeddingSignal, at: datetime, offset: int | None) -> Finding | None:
        """The active finding when the window moved past the calibrated threshold, else None."""
        assert self.test is not None and self.projection is not None
        model = signal.model
        if self.window.count < model.window.min_events:  # type: ignore[union-attr]
            return None
        result = self.test.test(self.window)  # type: ignore[arg-type]
        end = _time(self.window_end) if self.window_end is not None else at
        remember_score(self.history, self.test.name, end, result.score)
        if not result.drifted:
            return None
        moved = self._components_moved(result.details)
        residual = self._residual_change(result.details)
        details = {
            "components_kept": self.projection.components,
            "dimension": self.dimension,
            "variance_kept": round(float(self.projection.variance_shares.sum()), 6),
            "components_moved": moved[:TOP_COMPONENTS],
            "components_moved_count": len(moved),
            **residual,
            "wrong_dimension": self.wrong_shape,
            "non_finite": self.non_finite,
            **recent_scores(self.history[self.test.name]),
        }
        return Finding(
            AlertKind.feature_drift,
            model.model_id,
            self.name,
            None,
            True,
            at,
            evidence=self._evidence(
                result.score, result.threshold, self.window.count, details, self.test.name, self.test.settings_hash()
            ),
            summary=f"{model.model_id}: {self._describe(moved, residual)}; {self.test.name} = {result.score:.3g} "
            f"over its calibrated threshold {result.threshold:.3g}",
            offset=offset,
        )

    def _components_moved(self, details: dict[str, Any]) -> list[list[float]]:
        """[component (1 = largest variance), share of the reference variance, mean shift in
        reference sd, spread ratio] of each component that moved (`change.mean_moved`,
        `spread_moved`), largest contribution to the statistic first."""
        assert self.projection is not None
        shares = self.projection.variance_shares
        order = np.argsort(details["contribution"])[::-1]
        return [
            [int(j) + 1, round(float(shares[j]), 4), round(details["mean_shift_sd"][j], 4),
             round(details["spread_ratio"][j], 4)]
            for j in order
            if mean_moved(details["mean_shift_sd"][j]) or spread_moved(details["spread_ratio"][j])
        ]  # fmt: skip

    def _residual_change(self, details: dict[str, Any]) -> dict[str, Any]:
        """How the part of the embedding off the kept components changed: the rows' mean distance
        from them, and how far the window's mean moved off them against how far chance moves it."""
        before, after = details["reference_residual_distance"], details["current_residual_distance"]
        return {
            "reference_residual_distance": round(before, 6),
            "current_residual_distance": round(after, 6),
            "residual_distance_ratio": round(after / before, 4) if before > 0 else None,
            "residual_distance_contribution": round(details["residual_distance_contribution"], 4),
            "off_component_shift": round(details["off_component_shift"], 6),
            "off_component_chance": round(details["off_component_chance"], 6),
            "off_component_contribution": round(details["off_component_contribution"], 4),
        }

    def _describe(self, moved: list[list[float]], residual: dict[str, Any]) -> str:
        """`embedding 'text_emb' moved along 2 of its 12 principal components: component 1 (31%
        of the variance) +0.8 sd, component 4 (6% of the variance) spread x1.5; off them: mean
        moved 0.04 (chance 0.05), distance x1.02 (12.1 -> 12.3)`."""
        assert self.projection is not None
        k = self.projection.components
        parts = []
        for component, share, shift, spread in moved[:3]:
            change = f"{shift:+.2g} sd" if mean_moved(shift) else f"spread x{spread:.3g}"
            parts.append(f"component {component} ({share:.0%} of the variance) {change}")
        ratio, shift, chance = (
            residual["residual_distance_ratio"],
            residual["off_component_shift"],
            residual["off_component_chance"],
        )
        distances = f"{residual['reference_residual_distance']:.3g} -> {residual['current_residual_distance']:.3g}"
        off = f"mean moved {shift:.3g} (chance {chance:.2g}), distance " + (
            f"x{ratio:.3g} ({distances})" if ratio else distances
        )
        subject = f"embedding {self.name!r}"
        if parts:
            along = f"moved along {len(moved)} of its {k} principal components: {', '.join(parts)}"
            return f"{subject} {along}; off them: {off}"
        if shift > 2 * chance or (ratio is not None and spread_moved(ratio)):
            return f"{subject} moved off its {k} principal components: {off}"
        return (
            f"{subject} changed, though none of its {k} principal components moved by {SHIFTED_SD:g} sd: "
            f"small moves along many of them; off them: {off}"
        )

    def _data_quality(self, signal: EmbeddingSignal, at: datetime, offset: int | None) -> Finding:
        """Missing and malformed vectors against the `data_quality` bounds (nulls over the
        reference's rate, malformed ones as type mismatches)."""
        model, rules = signal.model, signal.config.data_quality
        events = max(self.events, 1)
        reference_null_rate = self.warmup_nulls / max(self.warmup_events, 1)
        checks = [
            ("null_rate", self.nulls / events, reference_null_rate + rules.max_null_rate_increase),
            ("malformed_vector_rate", (self.wrong_shape + self.non_finite) / events, rules.max_type_mismatch_rate),
        ]
        failing = [check for check in checks if check[1] > check[2]]
        if not failing or self.events < model.window.min_events:  # type: ignore[union-attr]
            return Finding(AlertKind.data_quality, model.model_id, self.name, None, False, at, offset=offset)
        rule, value, bound = max(failing, key=lambda check: check[1] - check[2])
        details = {
            **{name: round(v, 6) for name, v, _ in checks},
            "reference_null_rate": round(reference_null_rate, 6),
            "wrong_dimension": self.wrong_shape,
            "non_finite": self.non_finite,
            "dimension": self.dimension,
        }
        settings = hashlib.sha256(rules.model_dump_json().encode()).hexdigest()[:12]
        what = (
            f"{self.wrong_shape} not a list of {self.dimension} numbers, {self.non_finite} not finite"
            if rule == "malformed_vector_rate"
            else f"{self.nulls} missing of {self.events}"
        )
        return Finding(
            AlertKind.data_quality,
            model.model_id,
            self.name,
            None,
            True,
            at,
            evidence=self._evidence(value, bound, self.events, details, f"data_quality.{rule}", settings),
            summary=f"{model.model_id}: embedding {self.name!r} {rule.replace('_', ' ')} is {value:.3g} ({what}), "
            f"over its bound {bound:.3g}",
            offset=offset,
        )

    def _evidence(
        self, score: float, threshold: float, size: int, details: dict[str, Any], detector: str, settings: str
    ) -> Evidence:
        return Evidence(
            detector=detector,
            score=float(score),
            threshold=float(threshold),
            window_start=None if self.window_start is None else _time(self.window_start),
            window_end=None if self.window_end is None else _time(self.window_end),
            reference_size=self.test.reference_size if self.test is not None else self.warmup_events,
            current_size=size,
            reference_version=self.version,
            settings_hash=settings,
            details=details,
        )

    # -- state ----------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        if self.projection is not None and self._projection_state is None:
            self._projection_state = self.projection.to_state()  # read-only once fitted: built once
        return {
            "dimension": self.dimension,
            "fitting": None if self.fitting is None else self.fitting.to_state(),
            "projection": self._projection_state,
            "held_out": None if self.held_out is None else self.held_out.to_state(),
            "held_out_rows": self.held_out_rows,
            "test": None if self.test is None else self.test.to_state(),
            "unfitted": self.unfitted,
            "version": self.version,
            "warmup": [self.warmup_events, self.warmup_nulls],
            "window": self.window.to_state(),
            "counts": [self.events, self.nulls, self.wrong_shape, self.non_finite],
            "window_span": [self.window_start, self.window_end],
            "history": self.history,
        }

    @classmethod
    def from_state(cls, name: str, state: dict[str, Any]) -> VectorFeature:
        feature = cls(name, int(state["dimension"]))
        feature.fitting = None if state["fitting"] is None else CovarianceSums.from_state(state["fitting"])
        if state["projection"] is not None:
            feature.projection = Projection.from_state(state["projection"])
        if state["held_out"] is not None:
            feature.held_out = ValueSample.from_state(state["held_out"])  # rows of k + 1: a matrix
        feature.held_out_rows = state["held_out_rows"]
        feature.test = None if state["test"] is None else EmbeddingShift.from_state(state["test"])
        feature.unfitted, feature.version = state["unfitted"], state["version"]
        feature.warmup_events, feature.warmup_nulls = state["warmup"]
        feature.window = WindowMoments.from_state(state["window"])
        feature.events, feature.nulls, feature.wrong_shape, feature.non_finite = state["counts"]
        feature.window_start, feature.window_end = state["window_span"]
        feature.history = {check: [list(point) for point in points] for check, points in state["history"].items()}
        return feature


class EmbeddingSignal:
    """Every vector feature of one model (`signals.Signal`)."""

    def __init__(
        self, model: ModelConfig, config: MonitorConfig, drift: DriftMonitor, state: dict[str, Any] | None = None
    ):
        self.model = model
        self.config = config
        self.drift = drift
        """The model's drift monitor: its run length is each test's (`DriftMonitor.run_length`)."""
        self.features = {name: VectorFeature(name, dimension) for name, dimension in vector_features(model).items()}
        if state is not None:
            for name, feature_state in state["features"].items():
                # a feature whose dimension changed in the configuration starts afresh
                if name in self.features and feature_state["dimension"] == self.features[name].dimension:
                    self.features[name] = VectorFeature.from_state(name, feature_state)

    def reference_halves(self) -> tuple[int, int]:
        """(vectors the projection is fitted on, vectors after them that calibrate the test)."""
        warmup = self.config.reference.warmup_events
        fit = max(1, warmup // 2)
        return fit, max(1, warmup - fit)

    def observe(self, predictions: PredictionBatch) -> list[Finding]:
        for feature in self.features.values():
            feature.observe(predictions, self)
        return []

    def close_window(self, at: datetime, offset: int | None) -> list[Finding]:
        return [finding for feature in self.features.values() for finding in feature.close(self, at, offset)]

    def drift_scores(self) -> dict[str, list[tuple[str, float, float]]]:
        """Per watched vector feature, [(detector, last closed window's score, threshold)]: the
        `driftline_drift_score` and `driftline_drift_threshold` series (`observability.metrics`)."""
        scores = {}
        for name, feature in self.features.items():
            if feature.test is not None:
                test = feature.test
                scores[name] = [(test.name, last_score(feature.history, test.name), test.threshold)]
        return scores

    def to_state(self) -> dict[str, Any]:
        return {
            "features": {name: feature.to_state() for name, feature in self.features.items()},
        }


EMBEDDINGS = SignalType(
    wanted=lambda model: bool(vector_features(model)),
    detectors=lambda model, feature_types: len(vector_features(model)),
    create=EmbeddingSignal,
    restore=EmbeddingSignal,
)
"""Registered as `embeddings` in `signals.signal_types`."""
