"""Embedding shift: a window of embeddings against its reference, through a PCA projection.

An embedding (384 numbers per event) is too wide to test coordinate by coordinate and too wide
to keep raw rows of. So the reference is summarised twice, in two halves, like
`pca_reconstruction` does (PCA fits its own rows better than new ones):

1. the first half goes into `CovarianceSums` (count, sum, cross-products: O(d^2) numbers,
   whatever the traffic), from which `Projection.fit` keeps the principal components that
   explain `variance_kept` of the variance (at most `max_components`);
2. the second half is projected on them, each row becoming k component scores and one more
   number, its *residual distance* (how far it lies off the kept components). Those k + 1
   columns are what `EmbeddingShift` is fitted and calibrated on.

A window is then summarised by sums only (`WindowMoments`: count, per-component sums of scores,
of absolute scores and of squares, the residual distances' sum, and the sum of the rows'
residual vectors: O(k + d) numbers whatever the traffic), and its statistic is a sum of squared
standardised differences from the reference:

    T = sum_j z_mean_j^2 + sum_j z_spread_j^2 + z_distance^2 + max(z_off, 0)^2

a component's mean and its spread (mean absolute score), the residual distance's mean (more
spread off the components), each minus the reference's over its standard error for a window of
n values against a reference of N (`1/n + 1/N`); and z_off, how much farther than chance the
window's mean lies off the components (a shift orthogonal to them: a small one moves the mean
long before it moves the distances, whose noise the left-out components' own variation
dominates). T does not grow with n when nothing changed, so one threshold serves every window
size. The threshold is calibrated by
block-bootstrap windows of the held-out half, each against a profile re-estimated from an
independent resample of it (`monitor.detectors.calibration`), to the run length the model's
budget gives this detector.

>>> rng = np.random.default_rng(3)
>>> scale = np.r_[np.linspace(3, 1, 8), np.full(56, 0.3)]           # 64-d, 8 strong directions
>>> draw = lambda n, shift=0.0: rng.standard_normal((n, 64)) * scale + shift
>>> sums = CovarianceSums(64)
>>> sums.add(draw(2500))
>>> projection = Projection.fit(sums, variance_kept=0.9, max_components=16)
>>> held_out, _ = projection.project(draw(2500))
>>> test = EmbeddingShift().fit(held_out, run_length=1e6, window_size=1000, seed=0, projection=projection)
>>> quiet = test.test(WindowMoments.of(projection.project(draw(1000))))
>>> moved = test.test(WindowMoments.of(projection.project(draw(1000, shift=1.5 * projection.basis[:, 1]))))
>>> quiet.drifted, moved.drifted, round(moved.details["mean_shift_sd"][1], 1)
(False, True, 0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.detectors import calibration
from monitor.detectors._window import CalibratedWindowTest
from monitor.detectors.base import DataKind

MIN_REFERENCE_ROWS = 100
"""Fewer held-out reference rows than this cannot calibrate the test."""

UNUSED_VARIANCE = 1e-10
"""A left-out direction is given at least this share of the total variance over the dimension:
an embedding of lower rank than its length (padded, or from a small model) leaves directions of
variance zero but for rounding, where any move of the mean would otherwise look infinitely far."""


class CovarianceSums:
    """Mean and covariance of rows seen in batches: O(d^2) numbers whatever the count.

    Sums are taken around the first row seen (`shift`): embeddings often sit far from the origin
    (unit-norm ones do), and `sum x x' / n - mean mean'` would then lose the covariance to
    rounding. The state keeps the upper triangle of the cross-products (symmetric)."""

    def __init__(self, dimension: int):
        self.dimension = dimension
        self.count = 0
        self.shift = np.zeros(dimension)
        self.total = np.zeros(dimension)
        self.cross = np.zeros((dimension, dimension))

    def add(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        if self.count == 0:
            self.shift = rows[0].copy()
        centred = rows - self.shift
        self.count += len(rows)
        self.total += centred.sum(axis=0)
        self.cross += centred.T @ centred

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """From the upper triangle, as the state keeps it: a resumed fit is the same fit."""
        offset = self.total / self.count
        upper = np.triu(self.cross)
        covariance = (upper + np.triu(upper, 1).T) / self.count - np.outer(offset, offset)
        return self.shift + offset, covariance

    def to_state(self) -> dict[str, Any]:
        upper = np.triu_indices(self.dimension)
        return {
            "dimension": self.dimension,
            "count": self.count,
            "shift": self.shift.tolist(),
            "total": self.total.tolist(),
            "cross": self.cross[upper].tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CovarianceSums:
        sums = cls(int(state["dimension"]))
        sums.count = int(state["count"])
        sums.shift = np.asarray(state["shift"], dtype=float)
        sums.total = np.asarray(state["total"], dtype=float)
        upper = np.triu_indices(sums.dimension)
        sums.cross[upper] = state["cross"]
        sums.cross.T[upper] = state["cross"]
        return sums


@dataclass(frozen=True)
class Projection:
    """The reference's mean and its leading principal components (orthonormal columns of
    `basis`, largest variance first, each signed so its largest loading is positive: the same
    reference gives the same "component 1 +0.8 sd" whatever the solver)."""

    mean: np.ndarray
    basis: np.ndarray
    """d x k."""
    variances: np.ndarray
    """Variance along each kept component, on the rows it was fitted on."""
    residual_variances: np.ndarray
    """Variance along each direction left out (d - k of them): how far a window's mean may
    wander off the kept components by chance (`EmbeddingShift`'s off-component term)."""
    rows: int
    """Rows it was fitted on: its `mean` is their mean, with their sampling error."""

    @property
    def total_variance(self) -> float:
        """Sum of the variances along every direction (the covariance's trace)."""
        return float(self.variances.sum() + self.residual_variances.sum())

    @classmethod
    def fit(cls, sums: CovarianceSums, variance_kept: float, max_components: int) -> Projection:
        mean, covariance = sums.mean_and_covariance()
        values, vectors = np.linalg.eigh(covariance)
        order = np.argsort(values)[::-1]
        values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
        share = np.cumsum(values) / max(float(values.sum()), 1e-300)
        kept = int(np.searchsorted(share, variance_kept - 1e-12) + 1)
        kept = min(max(kept, 1), max_components, sums.dimension - 1)
        basis = vectors[:, :kept]
        signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(kept)])
        return cls(mean, basis * np.where(signs == 0, 1.0, signs), values[:kept], values[kept:], sums.count)

    @property
    def components(self) -> int:
        return self.basis.shape[1]

    @property
    def variance_shares(self) -> np.ndarray:
        """Share of the reference's variance along each kept component."""
        return self.variances / max(self.total_variance, 1e-300)

    def project(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """n x (k + 1): each row's component scores, then its residual distance (how far it lies
        off the kept components), the columns `EmbeddingShift` works on; and the sum of the rows'
        residual vectors (d numbers: their parts off the components, summed), which a window keeps
        to see its mean move off the components."""
        centred = rows - self.mean
        scores = centred @ self.basis
        energy = np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", scores, scores)
        residual_sum = centred.sum(axis=0) - self.basis @ scores.sum(axis=0)
        return np.column_stack([scores, np.sqrt(np.maximum(energy, 0.0))]), residual_sum

    def to_state(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "basis": self.basis.tolist(),
            "variances": self.variances.tolist(),
            "residual_variances": self.residual_variances.tolist(),
            "rows": self.rows,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Projection:
        mean = np.asarray(state["mean"], dtype=float)
        return cls(
            mean,
            np.asarray(state["basis"], dtype=float).reshape(len(mean), -1),
            np.asarray(state["variances"], dtype=float),
            np.asarray(state["residual_variances"], dtype=float),
            int(state["rows"]),
        )


@dataclass
class WindowMoments:
    """What a window keeps of its embeddings: O(k + d) numbers whatever its traffic."""

    count: int
    sums: np.ndarray
    """Per column of `Projection.project` (components, then residual distance): sum of values."""
    absolute_sums: np.ndarray
    """Per component: sum of absolute scores (the spread the test watches)."""
    squares: np.ndarray
    """Per component: sum of squared scores (the spread ratio the evidence quotes)."""
    residual_sum: np.ndarray
    """Sum of the rows' residual vectors (`Projection.project`)."""

    @classmethod
    def empty(cls, components: int, dimension: int) -> WindowMoments:
        return cls(0, np.zeros(components + 1), np.zeros(components), np.zeros(components), np.zeros(dimension))

    @classmethod
    def of(cls, projected: tuple[np.ndarray, np.ndarray]) -> WindowMoments:
        moments = cls.empty(projected[0].shape[1] - 1, len(projected[1]))
        moments.add(projected)
        return moments

    def add(self, projected: tuple[np.ndarray, np.ndarray]) -> None:
        """Rows as `Projection.project` gives them."""
        columns, residual_sum = projected
        scores = columns[:, :-1]
        self.count += len(columns)
        self.sums += columns.sum(axis=0)
        self.absolute_sums += np.abs(scores).sum(axis=0)
        self.squares += np.einsum("ij,ij->j", scores, scores)
        self.residual_sum += residual_sum

    def to_state(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sums": self.sums.tolist(),
            "absolute_sums": self.absolute_sums.tolist(),
            "squares": self.squares.tolist(),
            "residual_sum": self.residual_sum.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WindowMoments:
        return cls(
            int(state["count"]),
            *(np.asarray(state[name], dtype=float) for name in ("sums", "absolute_sums", "squares", "residual_sum")),
        )


class EmbeddingShift(CalibratedWindowTest):
    """Squared standardised moves of a window's embeddings (component means and spreads,
    distance off the components, mean off them), summed; fitted on held-out projected reference
    rows (`Projection.project`) and the projection's left-out variances, tested on a window's
    `WindowMoments`.

    Every term is a window mean of something with a finite variance whenever the embedding has
    one (a spread is a mean absolute score, the residual a distance, not their squares): with
    heavy-tailed embeddings the squares' window means are too erratic for a few thousand
    reference rows to show their tails (Student-t(5) factors: 3.6x the false alarms with squared
    scores, 1.1x with absolute ones, at 1% per window).

    Not in the detector registry: its input is an embedding's projection, which only the
    embedding signal (`monitor.monitoring.embeddings`) makes."""

    name = "embedding_shift"
    accepts = frozenset({DataKind.multivariate})
    spread_power = 0.0
    """Each term is standardised for the window's size: the null distribution does not depend on n."""

    def __init__(self) -> None:
        super().__init__()
        self.means = np.zeros(0)
        """Reference mean per watched column: component scores, residual distance, absolute scores."""
        self.variances = np.zeros(0)
        """Reference variance per watched column."""
        self.score_sd = np.zeros(0)
        """Reference standard deviation of each component's score (the evidence's unit)."""
        self.off_trace = self.off_trace_squares = 0.0
        """Sum of the left-out variances and of their squares: a window mean's squared distance
        off the components, n_eff |r|^2, has that mean and twice the second as variance when
        nothing moved."""
        self.projection_rows = 0
        """Rows the projection's mean was estimated on (the off-component term's reference)."""
        self._left_out = np.zeros(0)
        """The left-out variances, while calibrating (`_null_statistics`)."""

    @staticmethod
    def _watched(rows: np.ndarray) -> np.ndarray:
        """The columns whose window means the test compares: scores, residual distance, |scores|."""
        return np.hstack([rows, np.abs(rows[:, :-1])])

    def _learn(self, reference: np.ndarray, context: dict[str, Any]) -> np.ndarray:
        rows = np.asarray(reference, dtype=float)
        if rows.ndim != 2 or rows.shape[1] < 2:
            raise ValueError(f"{self.name}: the reference must be projected rows (components, then residual)")
        rows = rows[np.isfinite(rows).all(axis=1)]
        if len(rows) < MIN_REFERENCE_ROWS:
            raise ValueError(f"{self.name}: the reference needs at least {MIN_REFERENCE_ROWS} rows, got {len(rows)}")
        projection: Projection = context["projection"]
        watched = self._watched(rows)
        self.means, self.variances = watched.mean(axis=0), watched.var(axis=0)
        self.score_sd = rows[:, :-1].std(axis=0)
        dimension = len(projection.mean)
        left_out = np.maximum(projection.residual_variances, UNUSED_VARIANCE * projection.total_variance / dimension)
        self.off_trace = float(left_out.sum())
        self.off_trace_squares = float((left_out**2).sum())
        self.projection_rows = projection.rows
        self._left_out = left_out
        return rows

    def _block_series(self, reference: np.ndarray) -> np.ndarray:
        """Each row's squared standardised distance from the reference mean."""
        return (((self._watched(reference) - self.means) ** 2) / _floor(self.variances)).sum(axis=1)

    def _z(self, n: float, means: np.ndarray, reference_means: np.ndarray) -> np.ndarray:
        """Each watched column's window mean minus the reference's, in standard errors."""
        return (means - reference_means) / np.sqrt(_floor(self.variances) * (1.0 / n + 1.0 / self.reference_size))

    def _off_term(self, n: float, squared_distance: np.ndarray | float) -> np.ndarray | float:
        """z of a window mean's squared distance off the components (one-sided: only farther
        than chance counts). When nothing moved, n_eff times it is a sum of the left-out
        variances times chi-square(1) draws: matched to a scaled chi-square with the same mean
        and variance (`off_trace`, `off_trace_squares`; Satterthwaite) and made near normal by
        its cube root (Wilson-Hilferty), so the term has a light tail even when one left-out
        direction dominates (a plain standardisation then has a chi-square(1)'s long tail,
        which raised the threshold for every other term)."""
        n_eff = 1.0 / (1.0 / n + 1.0 / max(self.projection_rows, 1))
        dof = self.off_trace**2 / max(self.off_trace_squares, 1e-300)
        ratio = n_eff * np.asarray(squared_distance) / max(self.off_trace, 1e-300)
        z = (np.cbrt(ratio) - (1.0 - 2.0 / (9.0 * dof))) / math.sqrt(2.0 / (9.0 * dof))
        return np.maximum(z, 0.0)

    def _null_statistics(self, reference: np.ndarray, boot: calibration.Bootstrap, window_size: int) -> np.ndarray:
        watched = self._watched(reference)
        profiles = boot.resample_means(watched, calibration.N_PROFILES)
        windows = _window_means(boot, watched, calibration.N_WINDOWS, window_size)
        matched = profiles[np.arange(calibration.N_WINDOWS) % calibration.N_PROFILES]
        z = self._z(window_size, windows, matched)
        # The mean off the components: its rows are not kept (d numbers each), so its chance
        # distance is drawn from the left-out variances, a Gaussian quadratic form (a window mean
        # of hundreds of rows is near Gaussian whatever the rows).
        n_eff = 1.0 / (1.0 / window_size + 1.0 / max(self.projection_rows, 1))
        draws = boot.rng.standard_normal((calibration.N_WINDOWS, len(self._left_out))) ** 2
        off = self._off_term(window_size, draws @ self._left_out / n_eff)
        return (z**2).sum(axis=1) + off**2

    def _statistic(self, window: WindowMoments) -> tuple[float, int, dict[str, Any]]:  # type: ignore[override]
        """The statistic of a window's moments, and per component what moved (`details`)."""
        n = window.count
        if n == 0:
            return float("nan"), 0, {}
        k = len(self.score_sd)
        means = np.concatenate([window.sums, window.absolute_sums]) / n
        z = self._z(n, means, self.means)
        off_distance = float(np.linalg.norm(window.residual_sum / n))
        off = float(self._off_term(n, off_distance**2))
        score = float((z**2).sum() + off**2)
        sd = np.maximum(self.score_sd, 1e-300)
        window_sd = np.sqrt(np.maximum(window.squares / n - means[:k] ** 2, 0.0))
        details = {
            "mean_shift_sd": ((means[:k] - self.means[:k]) / sd).tolist(),
            "spread_ratio": (window_sd / sd).tolist(),
            "contribution": (z[:k] ** 2 + z[k + 1 :] ** 2).tolist(),
            "residual_distance_contribution": float(z[k] ** 2),
            "reference_residual_distance": float(self.means[k]),
            "current_residual_distance": float(means[k]),
            "off_component_shift": off_distance,
            "off_component_chance": math.sqrt(self.off_trace / n + self.off_trace / max(self.projection_rows, 1)),
            "off_component_contribution": off**2,
        }
        return score, n, details

    def _profile_state(self) -> dict[str, Any]:
        return {
            "means": self.means.tolist(),
            "variances": self.variances.tolist(),
            "score_sd": self.score_sd.tolist(),
            "off_trace": self.off_trace,
            "off_trace_squares": self.off_trace_squares,
            "projection_rows": self.projection_rows,
        }

    def _load_profile(self, state: dict[str, Any]) -> None:
        self.means = np.asarray(state["means"], dtype=float)
        self.variances = np.asarray(state["variances"], dtype=float)
        self.score_sd = np.asarray(state["score_sd"], dtype=float)
        self.off_trace, self.off_trace_squares = float(state["off_trace"]), float(state["off_trace_squares"])
        self.projection_rows = int(state["projection_rows"])


def _floor(variances: np.ndarray) -> np.ndarray:
    """Variances with a floor, so a constant column (a padded coordinate) cannot divide by zero."""
    return np.maximum(variances, 1e-12)


def _window_means(boot: calibration.Bootstrap, f: np.ndarray, n_windows: int, length: int) -> np.ndarray:
    """Means of `f` (n x m, aligned with `boot`'s reference) over `n_windows` block-bootstrap
    windows of `length` rows: the windows `boot.gather` would draw (blocks from `boot.starts`, the
    last cut short), summed as block sums from one cumulative sum, so no window is materialised:
    O(windows x blocks x m) instead of O(windows x length x m)."""
    b, n = boot.block, boot.n
    cum = np.concatenate([np.zeros((1, f.shape[1])), np.cumsum(np.vstack([f, f[: b - 1]]), axis=0)])
    starts = boot.starts(n_windows, length)
    full, rest = divmod(length, b)
    blocks = cum[b : b + n] - cum[:n]
    step = max(1, calibration.SLICE_VALUES // max(1, full * f.shape[1]))
    sums = np.concatenate(
        [blocks[starts[i : i + step, :full]].sum(axis=1) for i in range(0, n_windows, step)]
    ) if full else np.zeros((n_windows, f.shape[1]))  # fmt: skip
    if rest:
        last = starts[:, full]
        sums += cum[last + rest] - cum[last]
    return sums / length
