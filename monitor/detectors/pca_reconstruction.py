"""PCA reconstruction error: a change in how a model's numeric features move together.

The reference matrix (one row per event, one column per numeric feature) is standardised and
its principal components kept until they explain `variance_kept` of the variance. A row's error
is the mean squared part of its standardised values that those components do not reconstruct;
a row's rank is the share of the held-out reference rows whose error is below its own (ties
count half), and a window's score is the mean rank of its rows: 0.5 when nothing changed. When
two features that moved together start moving apart, rows leave the plane the reference lived
in and their errors, so their ranks, rise, although neither feature's own distribution changed
(univariate tests cannot see it). Missing values (NaN) are imputed with the reference means:
missing as often as in the reference, they change nothing; a feature correlated with others and
missing from most rows raises the error (its mean no longer follows its partners), which the
null-rate check on that feature explains.

The components are fitted on one half of the reference and the threshold calibrated on block
bootstrap windows of the other half, scored exactly as live windows are (`_learn`).

Ranks, not the errors themselves: a squared error has no finite variance when the features
have heavy tails (Student-t with 3 degrees of freedom: amounts, counts, latencies), so a few
thousand reference rows cannot show how far a window's mean error reaches, and the mean error
raised ~85x its false alarms on stationary t(3) data (bench/results/pca-heavy-tails-2026-12-06.md).
A rank is bounded, its window mean nearly normal whatever the features' tails; on Gaussian data
it detects correlation changes as early as the mean error did, on heavy-tailed data much earlier.
The evidence still gives the errors: `details.mean_error` against `reference_mean_error` (the
held-out rows'), and `rows_beyond_reference`, the rows whose error exceeds the reference's
largest knot (its 99.6th percentile; ~4 in 1,000 when nothing changed).

>>> import numpy as np
>>> rng = np.random.default_rng(8)
>>> together = [[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]]
>>> apart = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]   # same marginals
>>> reference = rng.multivariate_normal(np.zeros(3), together, 5000)
>>> test = PCAReconstruction().fit(reference, run_length=100_000, window_size=500, seed=0)
>>> stream = np.r_[rng.multivariate_normal(np.zeros(3), together, 1500),
...                rng.multivariate_normal(np.zeros(3), apart, 1500)]
>>> [i for i in range(0, 3000, 500) if test.test(stream[i : i + 500]).drifted]  # correlation ends at 1500
[1500, 2000, 2500]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from monitor.detectors import calibration
from monitor.detectors._common import check_range
from monitor.detectors._window import CalibratedWindowTest
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register

RANK_KNOTS = 128
"""Quantiles of the held-out reference rows' errors kept to rank live rows (in the state: ~2.5 KB)."""


def _components(z: np.ndarray, variance_kept: float) -> tuple[np.ndarray, int]:
    """Eigenvectors of the correlation matrix of standardised rows, largest first, and how many
    explain `variance_kept` (at least one, at most all but one)."""
    cov = z.T @ z / len(z)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = np.maximum(values[order], 0), vectors[:, order]
    share = np.cumsum(values) / max(values.sum(), 1e-300)
    kept = int(np.searchsorted(share, variance_kept - 1e-12) + 1)
    return vectors, int(min(max(kept, 1), z.shape[1] - 1))


@register
class PCAReconstruction(CalibratedWindowTest):
    """Mean rank of a window's PCA reconstruction errors among the reference's (multivariate).

    Parameters
    ----------
    variance_kept
        Share of the reference variance the kept components explain (0.9: components beyond
        are treated as noise, and their growth as drift).
    """

    name = "pca_reconstruction"
    accepts = frozenset({DataKind.multivariate})
    spread_power = 0.5

    def __init__(self, variance_kept: float = 0.9):
        super().__init__(variance_kept=variance_kept)
        self.variance_kept = check_range("variance_kept", variance_kept, 0.0, 1.0, low_open=True)
        self.mean = np.zeros(0)
        self.sd = np.zeros(0)
        self.residual_basis = np.zeros((0, 0))
        """Eigenvectors left out (d x r): a row's error is the squared norm of its part along them."""
        self.error_knots: np.ndarray | None = None
        """`RANK_KNOTS` quantiles of the held-out rows' errors (sorted). None in a state saved before
        ranks: its threshold is on the mean error, which is then the score, as it was."""
        self.reference_mean_error = math.nan

    def _standardise(self, rows: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
        x = np.where(np.isfinite(rows), rows, mean)
        return (x - mean) / sd

    def _learn(self, reference: np.ndarray, context: dict[str, Any]) -> np.ndarray:
        x = np.asarray(reference, dtype=float)
        if x.ndim != 2 or x.shape[1] < 2:
            raise ValueError(f"{self.name}: the reference must be a matrix with at least 2 columns")
        x = x[np.isfinite(x).any(axis=1)]
        if len(x) < 100:
            raise ValueError(f"{self.name}: the reference needs at least 100 rows, got {len(x)}")
        # The components are fitted on one half of the reference (alternate stretches of rows,
        # so both halves span its whole period) and the threshold calibrated on the other:
        # PCA fits its own rows better than new ones, so rows it was fitted on would hide its
        # error on new data. The half left out is scored exactly as live windows will be.
        stretch = max(1, len(x) // 20)
        fit_half = (np.arange(len(x)) // stretch) % 2 == 0
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(x[fit_half], axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        filled = np.where(np.isfinite(x), x, mean)
        sd = filled[fit_half].std(axis=0)
        self.mean, self.sd = mean, np.where(sd > 0, sd, 1.0)
        vectors, kept = _components(self._standardise(filled[fit_half], self.mean, self.sd), self.variance_kept)
        self.residual_basis = vectors[:, kept:]
        held_out = filled[~fit_half]
        errors = self._errors(held_out, self.mean, self.sd, self.residual_basis)
        self.error_knots = np.quantile(errors, (np.arange(RANK_KNOTS) + 0.5) / RANK_KNOTS)
        self.reference_mean_error = float(errors.mean())
        return held_out

    def _block_series(self, reference: np.ndarray) -> np.ndarray:
        return self._scores(self._errors(reference, self.mean, self.sd, self.residual_basis))

    def _errors(self, rows: np.ndarray, mean: np.ndarray, sd: np.ndarray, basis: np.ndarray) -> np.ndarray:
        """Mean squared unreconstructed part of each standardised row."""
        return np.sum((self._standardise(rows, mean, sd) @ basis) ** 2, axis=1) / len(mean)

    def _scores(self, errors: np.ndarray) -> np.ndarray:
        """Each row's rank among the reference errors (share of knots below, ties half), in [0, 1];
        the errors themselves for a state saved before ranks."""
        knots = self.error_knots
        if knots is None:
            return errors
        below = np.searchsorted(knots, errors, side="left") + np.searchsorted(knots, errors, side="right")
        return below / (2.0 * len(knots))

    def _null_statistics(self, reference: np.ndarray, boot: calibration.Bootstrap, window_size: int) -> np.ndarray:
        """Window means of the ranks of the held-out half's rows, widened by that half's own
        sampling error (the live windows are compared with the whole population)."""
        ranks = self._scores(self._errors(reference, self.mean, self.sd, self.residual_basis))
        self.center = float(ranks.mean())
        windows = ranks[boot.indices(calibration.N_WINDOWS, window_size)].mean(axis=1)
        return self.center + (windows - self.center) * np.sqrt(1 + window_size / len(reference))

    def _statistic(self, window: np.ndarray) -> tuple[float, int, dict[str, Any]]:
        rows = np.atleast_2d(np.asarray(window, dtype=float))
        if rows.shape[1] != len(self.mean):
            raise ValueError(f"{self.name}: the window has {rows.shape[1]} columns, the reference {len(self.mean)}")
        rows = rows[np.isfinite(rows).any(axis=1)]
        if len(rows) == 0:
            return float("nan"), 0, {}
        errors = self._errors(rows, self.mean, self.sd, self.residual_basis)
        details: dict[str, Any] = {"components_kept": len(self.mean) - self.residual_basis.shape[1]}
        if self.error_knots is not None:
            details |= {
                "mean_error": float(errors.mean()),
                "reference_mean_error": self.reference_mean_error,
                "rows_beyond_reference": int((errors > self.error_knots[-1]).sum()),
            }
        return float(self._scores(errors).mean()), len(rows), details

    def _profile_state(self) -> dict[str, Any]:
        state = {"mean": self.mean.tolist(), "sd": self.sd.tolist(), "residual_basis": self.residual_basis.tolist()}
        if self.error_knots is not None:
            state |= {"error_knots": self.error_knots.tolist(), "reference_mean_error": self.reference_mean_error}
        return state

    def _load_profile(self, state: dict[str, Any]) -> None:
        self.mean = np.asarray(state["mean"], dtype=float)
        self.sd = np.asarray(state["sd"], dtype=float)
        self.residual_basis = np.asarray(state["residual_basis"], dtype=float).reshape(len(self.mean), -1)
        knots = state.get("error_knots")  # absent from a state saved before ranks: scored as then
        self.error_knots = None if knots is None else np.asarray(knots, dtype=float)
        self.reference_mean_error = float(state.get("reference_mean_error", math.nan))
