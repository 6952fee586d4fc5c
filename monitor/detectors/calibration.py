"""Thresholds from the reference data: one false alarm per `run_length` values (DESIGN.md, 7).

Every detector's `fit(reference, run_length=..., window_size=..., seed=...)` calls into this
module. No textbook constant: the null behaviour of each statistic is simulated from the
reference itself, by a seeded, vectorised moving-block bootstrap, in ~3-20 ms per detector
(`bench/calibration_cost.py`).

How it works
------------
* **Resampling.** `Bootstrap` draws circular moving-block resamples of the reference: blocks of
  `block` consecutive values, so short-range autocorrelation (an AR(1) feature, bursts of
  errors) survives inside each block. `block_length` picks the block from the reference's own
  autocorrelation: eight times the last significant lag (Politis and White's rule for "last
  significant"), at least n^(1/3) (18 for 5,000 values), at most n/10.
* **Estimation error of the profile.** A detector compares new data with a profile (mean and
  spread, quantiles, category shares, principal components) estimated from the reference, and
  that estimate is itself noisy. Comparing bootstrap data with a profile built from the very same
  sample would hide that noise and give thresholds that are too low. So each simulated path or
  window is compared with a profile re-estimated from its own independent resample of the
  reference (the two-sample bootstrap). The rate calibrated is the average over what the profile
  could have been: what a fleet of features sees, and what drift-bench's pooled FA/10k measures;
  one feature with an unlucky reference sees more, most see fewer. PCA is the exception: it fits
  its own rows better than new ones, so it is fitted on half the reference and calibrated on
  the other half (`pca_reconstruction`).
* **Sequential detectors (CUSUMs)**, `cusum_limit`: `N_PATHS` bootstrap paths, each with its
  resampled profile, run as one long path (~2e5 values). Excursions of the CUSUM (runs above 0)
  reaching height h are its alarms at limit h (it restarts at 0 after each). Far beyond what the
  simulation shows, excursion heights decay as exp(-theta h) (Cramer-Lundberg), with theta the
  root of E exp(theta * increment) = 1. Each path's theta is computed exactly on the reference
  values under that path's profile (paths whose profile leans towards the alarm side have small
  theta and dominate the far tail, as they should), times `dependence_factor` for
  autocorrelation; the counts at the level u reached by the 200 highest excursions come from the
  simulation; the limit solves sum_b N_b(u) exp(-theta_b (h - u)) = values / run_length.
* **Window tests**, `tail_quantile`: `N_WINDOWS` bootstrap windows of `window_size` values, each
  against one of `N_PROFILES` resampled profiles; the threshold is the quantile exceeded with
  probability `window_size / run_length`. When fewer than 30 simulated windows lie beyond it,
  the tail is extrapolated with `c + a * chi2(nu)` matched to the simulated statistics' mean,
  variance and skewness (exact for quadratic forms: chi-square, PSI, Jensen-Shannon; checked
  within ~20% of the true exceedance for KS, Wasserstein and PCA errors down to 1e-3).

What it assumes, and where it fails
-----------------------------------
* The reference is stationary and representative: a trend or regime change inside it becomes
  part of "normal"; a seasonal cycle longer than a block makes thresholds too low for data that
  follows the cycle (false alarms at every turn). A reference that happens to sit at the edge of
  its own sampling distribution (1 in 20) makes a live stream look shifted against it: the
  calibration counts that on average, a given feature still alarms more.
* Autocorrelation is short compared with the block (tens of values) and the reference is in
  time order. Long memory, or a reservoir sample that lost the order, makes the bootstrap see
  independent data, so thresholds come out too low for autocorrelated live data. Tilting a
  dependent series for its tail is harder than estimating its variance, so `dependence_factor`
  takes the most conservative of three estimates: on AR(1) phi=0.5 the CUSUM then raises ~0.4x
  its budget (without the correction, 2-4x).
* Values never seen in the reference (a heavier tail than 5,000 values show) are clipped by the
  detectors that standardise, which keeps them robust; categories never seen are judged with a
  Good-Turing baseline and Lorden's bound instead (`category_cusum`, `unseen_share`).
* Small references: a baseline that cannot be pinned (a few hundred values, or 0.1% errors in
  5,000 outcomes) gives paths without downward drift; their exponent is floored at a quarter of
  the median and the rate is then exceeded.
* Measured (observed / target false alarms, 20-100 references each, run lengths 1e4-2.5e5):
  cusum 0.9 (Gaussian), 0.8-1.1 (Student-t 3), 0.5 (log-normal), 0.4 (AR(1));
  bernoulli_cusum 0.5-1.1 (p = 0.1, 0.3); category_cusum 0.6-0.8; ks 0.8, 1.1 (AR(1));
  psi 1.4; wasserstein 0.9; chi_square 1.1; jensen_shannon 1.3; pca_reconstruction 1.0-1.5.

>>> boot = Bootstrap(np.arange(10.0), block=3, seed=0)
>>> boot.indices(2, 7).shape
(2, 7)
>>> block_length(np.random.default_rng(0).standard_normal(5000))
18
"""

from __future__ import annotations

import math

import numpy as np

N_PATHS = 256
"""Bootstrap paths per sequential calibration, each with its own resampled profile."""
PATH_LENGTH = 768
"""Values per bootstrap path; N_PATHS * PATH_LENGTH values are simulated in all."""
N_WINDOWS = 600
"""Bootstrap windows per window-test calibration."""
N_PROFILES = 24
"""Independently resampled reference profiles the bootstrap windows are compared with."""
SLICE_VALUES = 16_000
"""Simulated values worked on at a time (125 KiB of float64): temporaries stay in the CPU cache
and in memory malloc reuses. Made whole, every array of a few megabytes comes in fresh pages,
and the page faults cost up to a third of a calibration's CPU time."""


def block_length(values: np.ndarray, max_block: int | None = None) -> int:
    """Block length for the moving-block bootstrap of `values` (1-D, time order).

    Three times the last lag whose autocorrelation is significant (Politis and White's rule: the
    first lag followed by `K` insignificant ones), at least n^(1/3), at most n/10.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 20:
        return 1
    floor = int(math.ceil(n ** (1 / 3)))
    cap = max(floor, n // 10 if max_block is None else min(max_block, n // 10))
    last = _last_significant_lag(_autocorrelation(x, min(n // 4, 200)), n)
    return int(min(cap, max(floor, 8 * last)))


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation at lags 1..max_lag."""
    x = np.asarray(x, dtype=float) - np.mean(x)
    var = float(x @ x)
    if var <= 0:
        return np.zeros(max_lag)
    spectrum = np.fft.rfft(x, 2 * len(x))
    return np.fft.irfft(spectrum * np.conj(spectrum))[1 : max_lag + 1] / var


def _last_significant_lag(acf: np.ndarray, n: int) -> int:
    """Politis and White's rule: the lag before the first run of K insignificant ones."""
    bound = 2.0 * math.sqrt(math.log10(n) / n)
    run = max(5, int(math.sqrt(math.log10(n))))
    insignificant = np.abs(acf) < bound
    for lag in range(len(acf) - run + 1):
        if insignificant[lag : lag + run].all():
            return lag
    return len(acf)


def dependence_factor(f_reference: np.ndarray, block: int, slope: np.ndarray, offset: np.ndarray) -> float:
    """How much autocorrelation lowers the Cramer-Lundberg exponent of a CUSUM on f (1 when f's
    autocorrelation is not significant): the smallest of

    * variance / long-run variance of f (exact for a Gaussian AR process: the diffusion limit),
    * for blocks of `block`, 2 `block` and 4 `block` values, the exponent from the reference's
      block sums in time order over the same from a shuffled copy (the ratio keeps the dependence
      and cancels what a few thousand block sums cannot show of independent values' tails).

    Exponentially tilting a dependent series makes it more persistent (sums of squares above all),
    so the diffusion limit alone is too optimistic; the minimum errs on the safe side. E.g. ~0.3
    for the mean of an AR(1) with phi = 0.5, ~0.45 for its square."""
    x = np.asarray(f_reference, dtype=float)
    n = len(x)
    if n < 20:
        return 1.0
    acf = _autocorrelation(x, min(n // 4, 200))
    last = _last_significant_lag(acf, n)
    if last == 0:
        return 1.0
    m = min(2 * last, len(acf))
    t = np.arange(1, m + 1) / m
    taper = np.where(t <= 0.5, 1.0, 2.0 * (1.0 - t))
    factors = [1.0 / max(1.0 + 2.0 * float(np.sum(taper * acf[:m])), 1e-6)]
    mid = np.array([np.median(slope)]), np.array([np.median(offset)])
    shuffled = np.random.default_rng(0).permutation(x)
    for b in (block, 2 * block, 4 * block):
        if b < 2 or b > n // 10:
            continue
        ordered = lundberg_exponents(block_sums(x, b), b, *mid)[0]
        independent = lundberg_exponents(block_sums(shuffled, b), b, *mid)[0]
        if ordered > 0 and independent > 0:
            factors.append(ordered / independent)
    return float(min(max(min(factors), 0.01), 2.0))


class Bootstrap:
    """Seeded circular moving-block bootstrap of a reference sample (first axis = time)."""

    def __init__(self, values: np.ndarray, block: int | None = None, seed: int = 0):
        self.values = np.asarray(values)
        self.n = len(self.values)
        if self.n == 0:
            raise ValueError("cannot calibrate on an empty reference")
        series = self.values if self.values.ndim == 1 else np.nanmean(self.values, axis=1)
        self.block = int(block) if block else block_length(np.asarray(series, dtype=float))
        self.block = max(1, min(self.block, self.n))
        self.rng = np.random.default_rng(seed)

    def starts(self, n_paths: int, length: int) -> np.ndarray:
        """First positions of the blocks of `n_paths` resampled series of `length` values
        (n_paths x blocks): the draws behind `indices`, for `gather`."""
        return self.rng.integers(0, self.n, size=(n_paths, -(-length // self.block)))

    def indices(self, n_paths: int, length: int) -> np.ndarray:
        """Positions in the reference for `n_paths` resampled series of `length` values."""
        b = self.block
        starts = self.starts(n_paths, length)
        n_blocks = starts.shape[1]
        # (starts + arange(b)) % n, without the division: every sum is below 2n. 32-bit when the
        # reference allows (half the memory to write and gather); the draws stay 64-bit, so the
        # positions are the same as ever. ~6x faster for 256 x 768 positions.
        kind = np.int32 if self.n + b < 2**31 else np.int64
        idx = starts[:, :, None].astype(kind) + np.arange(b, dtype=kind)
        np.subtract(idx, self.n, out=idx, where=idx >= self.n)
        idx = idx.reshape(n_paths, n_blocks * b)
        return idx if n_blocks * b == length else idx[:, :length]

    def gather(self, values: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """`values` (1-D, aligned with the reference) along the resampled series whose blocks
        begin at `starts` (`Bootstrap.starts`): `values[self.indices(...)]` for the same draws,
        copied a block at a time from `values` extended circularly, so no array of positions is
        built and read (~3x faster for a window test's 600 x 1,000 windows)."""
        b = self.block
        v = np.asarray(values)
        stretches = np.lib.stride_tricks.sliding_window_view(np.concatenate([v, v[: b - 1]]), b)
        out = stretches[starts].reshape(len(starts), starts.shape[1] * b)
        return out if out.shape[1] == length else out[:, :length]

    def paths(self, n_paths: int, length: int) -> np.ndarray:
        return self.gather(self.values, self.starts(n_paths, length), length)

    def resample_means(self, f_values: np.ndarray, n_paths: int, length: int | None = None) -> np.ndarray:
        """Means of `f_values` (n, or n x d, aligned with the reference) over `n_paths`
        block resamples of the reference's own size: what the profile could have been; or of
        `length` values (a whole number of blocks, the nearest): windows. Cheap: a resample's
        sum is a sum of block sums."""
        f = np.asarray(f_values, dtype=float)
        flat = f.reshape(self.n, -1)
        b = self.block
        cum = np.concatenate([np.zeros((1, flat.shape[1])), np.cumsum(np.vstack([flat, flat[: b - 1]]), axis=0)])
        sums = cum[b : b + self.n] - cum[: self.n]  # block sum starting at each position
        n_blocks = max(1, round((self.n if length is None else length) / b))
        starts = self.rng.integers(0, self.n, size=(n_paths, n_blocks))
        # A slice of paths at a time, gathered blocks x paths so that the sum runs down the first
        # axis, a vector add per block: the same sums as along each path's row (pinned by
        # tests/detectors/test_calibration_exact.py), at twice the speed.
        step = max(1, SLICE_VALUES // (n_blocks * sums.shape[1]))
        totals = [sums[starts[i : i + step].T].sum(axis=0) for i in range(0, n_paths, step)]
        means = np.concatenate(totals) / (n_blocks * b)
        return means.reshape((n_paths,) + f.shape[1:])


class Excursions:
    """The excursions of Page's CUSUM S_t = max(0, S_{t-1} + x_t), S_0 = 0, on paths run one
    after the other as one long path, fed a slice of paths at a time (`feed`): a caller with
    several CUSUMs on the same paths feeds each slice to each while it is in the CPU cache, and
    no array of all the paths is made.

    With C the long path's cumulative sum and F_t = min(0, min_{s<=t} C_s), S_t = C_t - F_t; F
    stays put during an excursion, so its height is max C over it minus F at its start, the
    same number as max S (rounding is monotone). C's offset, F and whether an excursion is open
    carry over from one slice to the next.
    """

    def __init__(self) -> None:
        self.values = 0
        """Values fed so far."""
        self._carry, self._floor, self._inside = 0.0, 0.0, False  # C before the next slice, F, S > 0
        self._rows = 0
        self._heights: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._buffer = self._low = self._term = np.zeros(1)
        self._positive = np.zeros(1, dtype=bool)

    def feed(self, cumulative: np.ndarray, slope: np.ndarray | None = None, offset: np.ndarray | None = None) -> None:
        """The next rows (paths x time) of the long path, as row-wise cumulative sums; with
        `slope` and `offset` (one per row), those of f, the increments being slope * f + offset."""
        n, length = cumulative.shape
        used = n * length + 1
        if len(self._buffer) < used:  # allocated for the first slice: the next ones are no larger
            self._buffer, self._low = np.empty(used), np.empty(used)
            self._positive, self._term = np.empty(used, dtype=bool), np.empty((n, length))
        # buffer[0] is F before the slice, so one running minimum over the buffer gives F; after
        # it, the slice's stretch of C.
        buffer = self._buffer
        buffer[0] = self._floor
        path = buffer[1:used].reshape(n, length)
        if slope is None:
            path[...] = cumulative
        else:
            np.multiply(slope[:, None], cumulative, out=path)
            np.multiply(offset[:, None], np.arange(1, length + 1, dtype=float), out=self._term[:n])  # type: ignore[index]
            path += self._term[:n]
        carries = np.cumsum(np.concatenate([[self._carry], path[:, -1]]))
        path += carries[:-1, None]
        lows = np.minimum.accumulate(buffer[:used], out=self._low[:used])
        above = np.greater(buffer[:used], lows, out=self._positive[:used])  # above[0] is False: F is not above F
        begin = np.flatnonzero(above[1:] > above[:-1])  # where S turns positive, as positions in the slice
        if len(begin):
            top = np.maximum.reduceat(buffer[1:used], begin)
            top -= lows[begin + 1]
            if self._inside and begin[0] == 0:  # the excursion open at the last slice's end goes on
                self._heights[-1][-1] = max(self._heights[-1][-1], top[0])
                top, begin = top[1:], begin[1:]
            if len(top):
                self._heights.append(top)
                self._starts.append(self._rows + begin // length)
        self._carry, self._floor, self._inside = float(carries[-1]), float(lows[-1]), bool(above[-1])
        self._rows += n
        self.values += n * length

    @classmethod
    def of(
        cls, cumulative: np.ndarray, slope: np.ndarray | None = None, offset: np.ndarray | None = None
    ) -> Excursions:
        """All the rows of `cumulative` (as `feed` takes them), `SLICE_VALUES` at a time."""
        track = cls()
        step = max(1, SLICE_VALUES // cumulative.shape[1])
        for first in range(0, len(cumulative), step):
            rows = slice(first, first + step)
            track.feed(
                cumulative[rows], None if slope is None else slope[rows], None if offset is None else offset[rows]
            )
        return track

    def maxima(self) -> tuple[np.ndarray, np.ndarray]:
        """The excursions' heights and the row each starts in, in the order they start."""
        if not self._heights:
            return np.zeros(0), np.zeros(0, dtype=int)
        return np.concatenate(self._heights), np.concatenate(self._starts)


def excursion_maxima(
    increments: np.ndarray | None = None,
    *,
    cumulative: np.ndarray | None = None,
    slope: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heights of the excursions of Page's CUSUM S_t = max(0, S_{t-1} + x_t), S_0 = 0, and the
    row each excursion starts in; an excursion is a run of S > 0. The rows of `increments` (paths
    x time) are run one after the other as one long path, so an excursion near a row's end is
    not cut short. Pass `cumulative` (the row-wise cumulative sums) instead if you have them;
    with `slope` and `offset` (one per row) too, the increments are slope[b] * f + offset[b]
    and `cumulative` holds f's row-wise cumulative sums (`Excursions.of`).

    >>> excursion_maxima(np.array([[1.0, -3.0, 2.0], [1.0, -5.0, 0.5]]))
    (array([1. , 3. , 0.5]), array([0, 0, 1]))
    """
    cum = np.cumsum(np.atleast_2d(increments), axis=1) if cumulative is None else cumulative
    return Excursions.of(cum, slope, offset).maxima()


def block_sums(values: np.ndarray, block: int, stride: int | None = None) -> np.ndarray:
    """Sums of `block` consecutive values (circular), starting every `stride` positions."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    stride = stride or 1
    cum = np.concatenate([[0.0], np.cumsum(np.concatenate([x, x[: block - 1]]))])
    starts = np.arange(0, n, stride)
    return cum[starts + block] - cum[starts]


def _tilt_roots(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per row of `y`, the theta > 0 with mean(exp(theta * y)) = 1 (0 where none exists); the
    mean weighted by `weights` (counts of the columns' values) when given."""
    w0 = np.full(y.shape[1], 1.0 / y.shape[1]) if weights is None else weights / weights.sum()
    mean = y @ w0
    var = np.maximum((y - mean[:, None]) ** 2 @ w0, 1e-300)
    ok = (mean < 0) & (y.max(axis=1) > 0)
    theta = np.where(ok, -2.0 * mean / var, 0.0) * 1.5  # right of the Gaussian guess
    log_w0 = np.log(w0)

    def g(t):  # log mean exp(t * y) per row (stable), and its derivative
        z = t[:, None] * y + log_w0
        top = z.max(axis=1)
        w = np.exp(z - top[:, None])
        total = w.sum(axis=1)
        return top + np.log(total), np.einsum("ij,ij->i", w, y) / total

    # g is convex with g(0) = 0 and g'(0) < 0: start right of the root, then Newton from the right.
    for _ in range(60):
        value, _ = g(theta)
        low = ok & (value <= 0)
        if not low.any():
            break
        theta = np.where(low, theta * 1.5, theta)
    for _ in range(30):
        value, deriv = g(theta)
        step = np.where(ok & (deriv > 0), value / np.where(deriv > 0, deriv, 1.0), 0.0)
        theta = theta - step
        if np.all(np.abs(step) <= 1e-7 * np.maximum(theta, 1e-12)):
            break
    return np.where(ok, theta, 0.0)


def _compress(values: np.ndarray, exact: int = 256, middle: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts; with many values, the `exact` lowest and highest kept
    as they are (they set an exponential moment) and the middle averaged into `middle` groups."""
    order = np.sort(np.asarray(values, dtype=float))  # sorted once, for both (np.unique sorts too)
    first = np.flatnonzero(np.concatenate([[True], order[1:] != order[:-1]]))
    if len(first) <= 2 * exact + middle:
        return order[first], np.diff(np.append(first, len(order))).astype(float)
    inner = order[exact:-exact]
    starts = (np.arange(middle) * len(inner)) // middle
    sizes = np.diff(np.append(starts, len(inner))).astype(float)
    means = np.add.reduceat(inner, starts) / sizes
    return (
        np.concatenate([order[:exact], means, order[-exact:]]),
        np.concatenate([np.ones(exact), sizes, np.ones(exact)]),
    )


def lundberg_exponents(block_f: np.ndarray, block: int, slope: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Per path b, the theta > 0 with mean_s exp(theta * Y_b(s)) = 1, Y_b(s) = slope_b * F(s) +
    block * offset_b, F the reference's block sums of f: the decay rate of the CUSUM's excursion
    heights (Cramer-Lundberg) for increments slope_b * f(x) + offset_b on block-resampled data.
    Paths whose increments do not drift down get 0 (no finite limit keeps their alarms rare).

    theta_b * |slope_b| depends on offset_b / |slope_b| alone, so roots are found on a grid of
    that ratio and interpolated: cheap for hundreds of paths.
    """
    slope = np.asarray(slope, dtype=float)
    offset = np.asarray(offset, dtype=float)
    sign = np.sign(slope)
    if not (np.all(sign > 0) or np.all(sign < 0)):
        y = slope[:, None] * block_f[None, :] + block * offset[:, None]
        return _tilt_roots(y)
    f, counts = _compress(block_f * sign[0])
    ratio = block * offset / np.abs(slope)
    grid = np.linspace(ratio.min(), ratio.max(), 5) if np.ptp(ratio) > 0 else ratio[:1]
    scaled = _tilt_roots(f[None, :] + grid[:, None], counts.astype(float))  # theta * |slope| per grid ratio
    if len(grid) == 1:
        return np.full(len(slope), scaled[0]) / np.abs(slope)
    return np.interp(ratio, grid, scaled) / np.abs(slope)


def cusum_limit(
    f_reference: np.ndarray,
    f_paths: np.ndarray,
    slope: np.ndarray,
    offset: np.ndarray,
    run_length: float,
    block: int,
    tail_size: int = 200,
    f_cumulative: np.ndarray | None = None,
    excursions: Excursions | None = None,
) -> float:
    """The limit h at which a CUSUM raises one alarm per `run_length` values on data like the
    reference, restarting at 0 after each alarm.

    The CUSUM's increments on path b are `slope[b] * f + offset[b]`, f a fixed transform of a value
    (`f_reference` on the reference, `f_paths` on the bootstrap paths, paths x time, or their
    row-wise cumulative sums `f_cumulative`, shared by components; or `excursions`, the paths
    already run), the per-path slope and offset coming from the profile re-estimated on that
    path's resample.

    Alarm rate(h) = (excursions reaching h) / values simulated. Where the simulation holds at
    least 20 of them it is read off directly. Beyond, with u the height reached by the
    `tail_size` highest excursions, rate(h) = sum_b N_b(u) exp(-theta_b (h - u)) / values, with
    N_b(u) the excursions of path b reaching u and theta_b its Cramer-Lundberg exponent
    (`lundberg_exponents`), which keeps the paths whose profile drifted towards the alarm side
    (small theta) dominating the far tail, as they do.
    """
    slope = np.asarray(slope, dtype=float)
    offset = np.asarray(offset, dtype=float)
    if excursions is None:
        fcum = np.cumsum(f_paths, axis=1) if f_cumulative is None else f_cumulative
        excursions = Excursions.of(fcum, slope, offset)
    n_paths, total = len(slope), excursions.values
    heights, path = excursions.maxima()
    wanted = total / float(run_length)  # exceedances the simulation should show at h
    if len(heights) < 10:
        return float(np.max(heights, initial=0.0) + 1.0)
    k = int(min(tail_size, max(10, len(heights) // 5), len(heights) - 1))
    if wanted >= min(20, k):
        m = min(int(wanted), len(heights) - 1)
        return float(-np.partition(-heights, m)[m])
    top = np.argpartition(-heights, k)[: k + 1]
    top = top[np.argsort(-heights[top])]
    u = float(heights[top[k]])
    counts = np.bincount(path[top[:k]], minlength=n_paths).astype(float)
    # The exponent for independent values, scaled by variance / long-run variance for
    # autocorrelation (exact for Gaussian AR processes). Block sums would see the dependence
    # directly, but a few thousand of them miss the rare combinations that set a far tail.
    f_ref = np.asarray(f_reference, dtype=float)
    theta = lundberg_exponents(f_ref, 1, slope, offset) * dependence_factor(f_ref, block, slope, offset)
    if not np.any(theta > 0):
        return float(heights.max() + 1.0)  # excursions hardly ever grow: the highest seen is rare
    # A resampled profile under which the CUSUM does not drift down (theta ~ 0) would need an
    # infinite limit: the reference is too small to pin the profile. Such paths are floored at
    # a quarter of the median exponent, so the limit stays finite (the rate is then exceeded).
    positive = theta[theta > 0]
    theta = np.maximum(theta, 0.25 * float(np.median(positive)))
    used = counts > 0
    counts, theta = counts[used], theta[used]
    # Solve log sum_b N_b exp(-theta_b x) = log(wanted) for x = h - u >= 0: the left side is
    # convex and decreasing, so Newton from x = 0 climbs to the root without overshooting.
    x, target = 0.0, math.log(wanted)
    for _ in range(50):
        terms = counts * np.exp(-theta * x)
        total_terms = float(terms.sum())
        value = math.log(total_terms) - target
        if value <= 1e-10:
            break
        x += value / (float(terms @ theta) / total_terms)
    return float(u + x)


def tail_quantile(statistics: np.ndarray, exceedance: float) -> float:
    """The value a statistic exceeds with probability `exceedance`, from simulated draws.

    When the simulation holds at least 30 draws beyond it, the empirical quantile; otherwise the
    quantile of `c + a * chi2(nu)` fitted to the draws' mean, variance and skewness (a chi-square
    has skewness sqrt(8 / nu)), which is exact for quadratic forms such as the chi-square, PSI and
    Jensen-Shannon statistics and close for squared distances.

    >>> draws = np.random.default_rng(1).chisquare(4, 20000)
    >>> round(tail_quantile(draws, 1e-4), 1), 23.5  # true chi2(4) 1e-4 quantile: 23.5
    (23.7, 23.5)
    """
    t = np.asarray(statistics, dtype=float)
    t = t[np.isfinite(t)]
    if len(t) == 0:
        return float("inf")
    if exceedance * len(t) >= 30:
        return float(np.quantile(t, 1.0 - exceedance))
    from scipy import special

    mean, sd = float(t.mean()), float(t.std())
    if sd <= 0:
        return mean
    skew = float(np.mean(((t - mean) / sd) ** 3))
    skew = min(max(skew, 0.05), 2.0 * math.sqrt(2.0))  # nu between 1 and 3200
    nu = 8.0 / skew**2
    a = sd / math.sqrt(2.0 * nu)
    c = mean - a * nu
    # chdtri is what scipy.stats.chi2.isf computes, without its ~0.1 ms of argument handling
    return float(c + a * special.chdtri(nu, exceedance))
