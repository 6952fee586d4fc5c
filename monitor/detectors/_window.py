"""What the window tests share: calibration of the threshold on bootstrap windows, binned
profiles of numeric and categorical references, and the JSON state.

A window test's threshold is the value its statistic exceeds, on windows of `window_size` values
like the reference, with probability `window_size / run_length`: one false alarm per `run_length`
values. It is estimated from `N_WINDOWS` block-bootstrap windows, each compared with a profile
re-estimated from an independent resample of the reference (`N_PROFILES` of them), so the
profile's own estimation error is in the null distribution as it will be in production (see
`monitor.detectors.calibration`). Windows of another size `n` get the threshold scaled by how the
statistic's null spread scales with n (`_spread`), with `n_eff = n N / (n + N)` for statistics
that compare two samples (N the reference size).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Self

import numpy as np

from monitor.detectors import calibration
from monitor.detectors._common import check_run_length, n_categories
from monitor.detectors.base import TestResult, WindowTest

MIN_WINDOW = 10
"""A window with fewer values is not judged (drifted=False, score NaN)."""

_GRID_MIN_EDGES = 16
_GRID_CELLS_PER_EDGE = 4
_GRID_MAX_SHARED = 4
"""`NumericBinnedTest._grid`: edges it takes at least, grid cells per edge, most edges in one cell."""


def effective_size(n: float, reference_size: float) -> float:
    """Sample size of a two-sample comparison of n values with a reference of N."""
    return n * reference_size / (n + reference_size)


class CalibratedWindowTest(WindowTest):
    """A window test whose threshold comes from bootstrap windows of the reference."""

    spread_power: float = 0.5
    """The null statistic scales as n_eff ** -spread_power (0.5 for distances, 1 for divergences,
    0 for a statistic whose null distribution does not depend on n)."""

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.window_size = 0
        self.center = 0.0
        """Value the statistic concentrates on with large windows (0 for distances)."""
        self._state: dict[str, Any] | None = None
        """`to_state`, built once per fit: testing a window changes nothing."""

    # -- subclasses -------------------------------------------------------------------------
    @abstractmethod
    def _learn(self, reference: np.ndarray, context: dict[str, Any]) -> np.ndarray:
        """Learn the profile from the reference; return the reference cleaned (time order)."""

    @abstractmethod
    def _null_statistics(self, reference: np.ndarray, boot: calibration.Bootstrap, window_size: int) -> np.ndarray:
        """The statistic on bootstrap windows compared with re-estimated profiles."""

    @abstractmethod
    def _statistic(self, window: np.ndarray) -> tuple[float, int, dict[str, Any]]:
        """Statistic of one window, the number of values it used, and details for the evidence."""

    @abstractmethod
    def _profile_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_profile(self, state: dict[str, Any]) -> None: ...

    def _block_series(self, reference: np.ndarray) -> np.ndarray:
        """1-D series whose autocorrelation sets the bootstrap block."""
        return np.asarray(reference, dtype=float)

    # -- shared -----------------------------------------------------------------------------
    def fit(self, reference: np.ndarray, *, run_length: float, window_size: int, seed: int = 0, **context: Any) -> Self:
        check_run_length(run_length, window_size)
        ref = self._learn(reference, context)
        self.reference_size = len(ref)
        self.window_size = window_size
        boot = calibration.Bootstrap(ref, block=calibration.block_length(self._block_series(ref)), seed=seed)
        stats = self._null_statistics(ref, boot, window_size)
        exceedance = min(0.5, window_size / run_length)
        self.threshold = calibration.tail_quantile(stats, exceedance)
        self._state = None
        return self

    def threshold_for(self, n: int) -> float:
        """The threshold for a window of n values (the calibrated one for `window_size`)."""
        if n == self.window_size or self.spread_power == 0:
            return self.threshold
        ratio = effective_size(self.window_size, self.reference_size) / effective_size(n, self.reference_size)
        return self.center + (self.threshold - self.center) * ratio**self.spread_power

    def test(self, window: np.ndarray) -> TestResult:
        if not math.isfinite(self.threshold):
            raise RuntimeError(f"{self.name}: call fit(reference, ...) before test")
        score, n, details = self._statistic(window)
        return self._result(score, n, details)

    def _result(self, score: float, n: int, details: dict[str, Any]) -> TestResult:
        """The decision on a window whose statistic is `score` over `n` values."""
        details = {"n": n, **details}
        if n < MIN_WINDOW:
            return TestResult(float("nan"), self.threshold, False, {**details, "reason": "too few values"})
        threshold = self.threshold_for(n)
        return TestResult(float(score), float(threshold), bool(score > threshold), details)

    def to_state(self) -> dict[str, Any]:
        """The same dict until the next `fit` (read-only: the streaming worker saves a model's
        state every batch, and rebuilding the reference profiles was most of that cost)."""
        if self._state is None:
            fitted = math.isfinite(self.threshold)
            self._state = {
                "name": self.name,
                "params": self.params,
                "threshold": self.threshold if fitted else None,
                "reference_size": self.reference_size,
                "window_size": self.window_size,
                "center": self.center,
                "profile": self._profile_state() if fitted else None,
            }
        return self._state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("name") != cls.name:
            raise ValueError(f"state of {state.get('name')!r}, not {cls.name!r}")
        det = cls(**state["params"])
        det.reference_size = int(state["reference_size"])
        det.window_size = int(state["window_size"])
        det.center = float(state["center"])
        if state["profile"] is not None:
            det._load_profile(state["profile"])
            det.threshold = float(state["threshold"])
        return det


def window_histograms(codes: np.ndarray, boot: calibration.Bootstrap, n_windows: int, length: int, n_bins: int):
    """Counts per bin of `n_windows` resamples of `length` values drawn by `boot` (`codes`: the bin
    of each reference value), one row per resample."""
    starts = boot.starts(n_windows, length)
    counts = np.empty((n_windows, n_bins))
    step = max(1, calibration.SLICE_VALUES // length)
    offsets = (np.arange(step, dtype=np.intp) * n_bins)[:, None]  # one range of bins per row
    for first in range(0, n_windows, step):
        part = boot.gather(codes, starts[first : first + step], length)
        rows = len(part)
        flat = np.add(part, offsets[:rows], dtype=np.intp).ravel()
        counts[first : first + rows] = np.bincount(flat, minlength=rows * n_bins).reshape(rows, n_bins)
    return counts


class BinnedWindowTest(CalibratedWindowTest):
    """A statistic of a window's counts per bin against the reference's counts (numeric values
    binned at reference quantiles, or categories), vectorised over bootstrap windows."""

    @abstractmethod
    def _codes(self, values: np.ndarray) -> np.ndarray:
        """Bin of each value."""

    @abstractmethod
    def _compare(self, window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
        """Statistic per row, (rows x bins) window counts against (rows x bins) reference counts."""

    n_bins_fitted: int = 0
    reference_counts: np.ndarray
    rows_apart: bool = False
    """`_compare` gives each row what it gives that row alone (no matrix product), and uses no
    parameter of its own: windows of several tests of the class can be compared at once."""

    def _null_statistics(self, reference: np.ndarray, boot: calibration.Bootstrap, window_size: int) -> np.ndarray:
        bins = self.n_bins_fitted
        codes = self._codes(reference)
        profiles = window_histograms(codes, boot, calibration.N_PROFILES, len(reference), bins)
        windows = window_histograms(codes, boot, calibration.N_WINDOWS, window_size, bins)
        matched = np.arange(calibration.N_WINDOWS) % calibration.N_PROFILES
        if not self.rows_apart:
            return self._compare(windows, profiles[matched])
        # Row by row anyway: a slice of windows at a time keeps the temporaries in the cache.
        step = max(1, calibration.SLICE_VALUES // bins)
        parts = range(0, calibration.N_WINDOWS, step)
        return np.concatenate([self._compare(windows[i : i + step], profiles[matched[i : i + step]]) for i in parts])

    def _window_counts(self, window: np.ndarray) -> np.ndarray:
        return np.bincount(self._codes(window), minlength=self.n_bins_fitted).astype(float)


class NumericBinnedTest(BinnedWindowTest):
    """Numeric values binned at reference quantiles (as many bins as distinct quantiles)."""

    def __init__(self, n_bins: int, **params: Any):
        if not isinstance(n_bins, int) or isinstance(n_bins, bool) or not 2 <= n_bins <= 1000:
            raise ValueError(f"Invalid 'n_bins' {n_bins!r}. Valid values are: integers in [2, 1000]")
        super().__init__(n_bins=n_bins, **params)
        self.n_bins = n_bins
        self.edges = np.zeros(0)
        self.low = self.high = self.sd = 0.0
        self._lookup: tuple[float, float, np.ndarray, int] | bool | None = None

    def _learn(self, reference: np.ndarray, context: dict[str, Any]) -> np.ndarray:
        ref = np.asarray(reference, dtype=float).ravel()
        ref = ref[np.isfinite(ref)]
        if len(ref) < 50:
            raise ValueError(f"{self.name}: the reference needs at least 50 values, got {len(ref)}")
        quantiles = np.quantile(ref, np.arange(1, self.n_bins) / self.n_bins)
        self.edges = np.unique(quantiles)
        self._lookup = None
        self.n_bins_fitted = len(self.edges) + 1
        self.low, self.high, self.sd = float(ref.min()), float(ref.max()), float(ref.std())
        self.reference_counts = np.bincount(self._codes(ref), minlength=self.n_bins_fitted).astype(float)
        return ref

    def _codes(self, values: np.ndarray) -> np.ndarray:
        """Bin of each value: how many edges are at or below it (`searchsorted(side="right")`)."""
        values = np.asarray(values, dtype=float)
        grid = self._grid()
        if grid is None or values.ndim != 1 or not np.isfinite(values).all():
            return np.searchsorted(self.edges, values, side="right")
        low, scale, first, shared = grid
        last = len(self.edges) - 1
        # clipped to the edges' range first (monotone too): no overflow, every cell in the grid
        cell = np.floor((np.clip(values, low, self.edges[last]) - low) * scale).astype(np.intp)
        np.minimum(cell, len(first) - 2, out=cell)
        start, stop = first[cell], first[cell + 1]
        codes = start.copy()
        for k in range(shared):
            index = start + k
            codes += (index < stop) & (self.edges[np.minimum(index, last)] <= values)
        return codes

    def _grid(self) -> tuple[float, float, np.ndarray, int] | None:
        """A lookup that bins without a binary search per value (branchy: ~70 ns a value, most
        of a window test): a uniform grid over the edges' range, each value's cell computed as
        each edge's is, so an edge in a lower cell is below the value and one in a higher cell
        above it (the computation is monotone); only the few edges sharing the value's cell are
        compared. None (binary search) when the edges crowd a cell (extreme tails)."""
        if self._lookup is None:
            self._lookup = False
            edges = self.edges
            width = float(edges[-1] - edges[0]) if len(edges) >= _GRID_MIN_EDGES else 0.0
            if width > 0 and math.isfinite(width):
                cells = _GRID_CELLS_PER_EDGE * len(edges)
                scale = cells / width
                if math.isfinite(scale):
                    low = float(edges[0])
                    cell = np.floor((np.clip(edges, low, edges[-1]) - low) * scale).astype(np.intp)
                    np.minimum(cell, cells - 1, out=cell)
                    first = np.searchsorted(cell, np.arange(cells + 1), side="left")
                    shared = int(np.diff(first).max())
                    if shared <= _GRID_MAX_SHARED:
                        self._lookup = (low, scale, first, shared)
        return self._lookup or None

    def _statistic(self, window: np.ndarray) -> tuple[float, int, dict[str, Any]]:
        values = np.asarray(window, dtype=float).ravel()
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return float("nan"), 0, {}
        counts = self._window_counts(values)
        score = float(self._compare(counts[None, :], self.reference_counts[None, :])[0])
        return score, len(values), {}

    def _profile_state(self) -> dict[str, Any]:
        return {
            "edges": self.edges.tolist(),
            "reference_counts": [int(c) for c in self.reference_counts],
            "low": self.low,
            "high": self.high,
            "sd": self.sd,
        }

    def _load_profile(self, state: dict[str, Any]) -> None:
        self.edges = np.asarray(state["edges"], dtype=float)
        self._lookup = None
        self.n_bins_fitted = len(self.edges) + 1
        self.reference_counts = np.asarray(state["reference_counts"], dtype=float)
        self.low, self.high, self.sd = float(state["low"]), float(state["high"]), float(state["sd"])


class CategoryCountTest(BinnedWindowTest):
    """Category codes `0..n_categories-1` (the last: values unseen in the reference)."""

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.n_categories = 0

    def _learn(self, reference: np.ndarray, context: dict[str, Any]) -> np.ndarray:
        k = n_categories(self.name, context)
        codes = np.asarray(reference).ravel()
        codes = codes[np.isfinite(codes.astype(float))].astype(np.int64)
        codes = codes[codes >= 0]
        if len(codes) < 50:
            raise ValueError(f"{self.name}: the reference needs at least 50 values, got {len(codes)}")
        self.n_categories = self.n_bins_fitted = k
        codes = self._codes(codes)
        self.reference_counts = np.bincount(codes, minlength=k).astype(float)
        return codes

    def _block_series(self, reference: np.ndarray) -> np.ndarray:
        top = int(np.argmax(self.reference_counts))
        return (reference == top).astype(float)

    def _codes(self, values: np.ndarray) -> np.ndarray:
        """Codes beyond the last count as unseen."""
        return np.minimum(np.asarray(values).astype(np.int64), self.n_categories - 1)

    def _statistic(self, window: np.ndarray) -> tuple[float, int, dict[str, Any]]:
        codes = np.asarray(window).ravel()
        codes = codes[np.isfinite(codes.astype(float))].astype(np.int64)
        codes = codes[codes >= 0]
        if len(codes) == 0:
            return float("nan"), 0, {}
        counts = self._window_counts(codes)
        score = float(self._compare(counts[None, :], self.reference_counts[None, :])[0])
        return score, len(codes), {"unseen": int(counts[-1])}

    def _profile_state(self) -> dict[str, Any]:
        return {"n_categories": self.n_categories, "reference_counts": [int(c) for c in self.reference_counts]}

    def _load_profile(self, state: dict[str, Any]) -> None:
        self.n_categories = self.n_bins_fitted = int(state["n_categories"])
        self.reference_counts = np.asarray(state["reference_counts"], dtype=float)


def test_windows(tests: list[WindowTest], windows: list[np.ndarray]) -> list[TestResult]:
    """`test.test(window)` for each pair, the numeric binned tests of one class and bin count
    whose windows are all finite and of one size binned and compared together (a window close
    tests every numeric feature: one set of numpy calls instead of one per feature). The same
    operations on the same numbers, row by row, as each test alone
    (`tests/detectors/test_binned_codes.py` holds them to it)."""
    results: list[TestResult | None] = [None] * len(tests)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (test, window) in enumerate(zip(tests, windows, strict=True)):
        if (
            isinstance(test, NumericBinnedTest)
            and test.rows_apart
            and math.isfinite(test.threshold)
            and test._grid() is not None
            and isinstance(window, np.ndarray)
            and window.ndim == 1
            and window.dtype == np.float64
            and len(window) >= MIN_WINDOW
        ):
            groups.setdefault((type(test), test.n_bins_fitted, len(window)), []).append(i)
        else:
            results[i] = test.test(window)
    for (_, bins, _), members in groups.items():
        values = np.stack([windows[i] for i in members])
        finite = np.isfinite(values).all(axis=1)
        for i in (member for member, ok in zip(members, finite, strict=True) if not ok):
            results[i] = tests[i].test(windows[i])
        members = [member for member, ok in zip(members, finite, strict=True) if ok]
        if not members:
            continue
        group = [tests[i] for i in members]
        codes = _codes_together(group, values[finite])  # type: ignore[arg-type]
        rows = len(members)
        flat = (codes + (np.arange(rows) * bins)[:, None]).ravel()
        counts = np.bincount(flat, minlength=rows * bins).reshape(rows, bins).astype(float)
        reference = np.stack([test.reference_counts for test in group])  # type: ignore[attr-defined]
        scores = group[0]._compare(counts, reference)  # type: ignore[attr-defined]
        n = values.shape[1]
        for i, test, score in zip(members, group, scores, strict=True):
            results[i] = test._result(float(score), n, {})  # type: ignore[attr-defined]
    return results  # type: ignore[return-value]


def _codes_together(tests: list[NumericBinnedTest], values: np.ndarray) -> np.ndarray:
    """`test._codes(row)` for each test and row of `values` (every value finite, every test with
    a grid of as many cells): `_codes`' grid lookup with the tests' parameters as columns."""
    grids = [test._grid() for test in tests]
    low = np.array([[grid[0]] for grid in grids])  # type: ignore[index]
    scale = np.array([[grid[1]] for grid in grids])  # type: ignore[index]
    first = np.stack([grid[2] for grid in grids])  # type: ignore[index]
    shared = max(grid[3] for grid in grids)  # type: ignore[index]
    edges = np.stack([test.edges for test in tests])
    last = edges.shape[1] - 1
    cell = np.floor((np.clip(values, low, edges[:, [last]]) - low) * scale).astype(np.intp)
    np.minimum(cell, first.shape[1] - 2, out=cell)
    start = np.take_along_axis(first, cell, axis=1)
    stop = np.take_along_axis(first, cell + 1, axis=1)
    codes = start.copy()
    for k in range(shared):
        index = start + k
        codes += (index < stop) & (np.take_along_axis(edges, np.minimum(index, last), axis=1) <= values)
    return codes
