"""Calibration made cheaper computes the same numbers: each faster piece against the formula it
replaced, and every detector's calibrated limits against the values the earlier code gave
(revision c893c53, before bench/calibration_cost.py's changes), to 1e-9 relative.

Not float for float: numpy picks its SIMD kernels by CPU (AVX-512 on the machine that recorded
these, AVX2 on others), and their sums, logarithms and matrix products differ in the last bits
(cusum/ties: 48.21396960492678 against 48.213969604927684). Any change of logic moves a limit
by far more than 1e-9."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.detectors import calibration, registry
from monitor.detectors._window import window_histograms
from monitor.detectors.calibration import Bootstrap, excursion_maxima

# Limits (threshold for window tests) from c893c53 for `_cases()`, fitted with run_length=250_000,
# window_size=500, seed=11.
EARLIER = {
    "cusum/gauss": [41.34656056549012, 41.553786801958466, 30.37923362521175],
    "ks/gauss": [0.09383311042427978],
    "psi/gauss": [0.07292080512851254],
    "wasserstein/gauss": [0.1736857230590904],
    "cusum/ar1": [156.02830793044083, 130.55833666616417, 170.74590672653457],
    "ks/ar1": [0.12361960207986572],
    "psi/ar1": [0.08428121049924758],
    "wasserstein/ar1": [0.24509671428174523],
    "cusum/ties": [48.21396960492678, 63.89552048374073, 63.906371340074294],
    "ks/ties": [0.08923900011717376],
    "psi/ties": [0.06728401811743394],
    "wasserstein/ties": [0.1672365432239974],
    "category_cusum/cat7": [
        12.23037138171811,
        12.261645970253214,
        12.20950088997853,
        12.291676097125867,
        13.410778107995268,
        15.984868745957723,
        14.994165554305921,
        12.883819807543054,
        11.796086913193747,
        12.465657248310142,
        13.175175454845812,
        14.247192508012851,
        19.30363979128195,
    ],
    "chi_square/cat7": [19.066387344630638],
    "jensen_shannon/cat7": [0.07333161131403126],
    "unseen_share/cat7": [0.002],
    "category_cusum/burst": [
        113.61932074944328,
        383.27032028590514,
        140.72499954196388,
        102.37353220751585,
        150.6368118081068,
        14.827111469642754,
        110.51559007356636,
        142.3907332887898,
        171.77966557878483,
        104.63965899248683,
        94.34494636806855,
    ],
    "chi_square/burst": [74.57132737489049],
    "jensen_shannon/burst": [0.1639319917352946],
    "unseen_share/burst": [0.004],
    "bernoulli_cusum/bank": [10.742871259589762, 10.342469575872235, 11.107047254335441],
    # mean rank of rows' errors since pca-heavy-tails (a mean error before); its sample drawn
    # without `multivariate_normal` since 2026-12-06 (see `_cases`)
    "pca_reconstruction": [0.5503431220740236],
}


def _cases():
    rng = np.random.default_rng(2026)
    x = np.zeros(3000)
    e = rng.standard_normal(3000)
    for i in range(1, 3000):
        x[i] = 0.5 * x[i - 1] + e[i]
    numeric = {"gauss": rng.standard_normal(5000), "ar1": x, "ties": np.round(rng.standard_t(3, 1000), 1)}
    cats = {
        "cat7": rng.choice(7, 5000, p=[0.30, 0.25, 0.20, 0.10, 0.10, 0.05, 0.0]),
        "burst": np.repeat(rng.choice(5, 300), 4),
    }
    errors = (rng.random(4000) < 0.1).astype(float)
    for name, ref in numeric.items():
        for kind in ("cusum", "ks", "psi", "wasserstein"):
            yield f"{kind}/{name}", kind, {}, ref, {}
    for name, ref in cats.items():
        for kind in ("category_cusum", "chi_square", "jensen_shannon", "unseen_share"):
            yield f"{kind}/{name}", kind, {}, ref, {"n_categories": 7}
    yield "bernoulli_cusum/bank", "bernoulli_cusum", {"odds_ratio": [1.5, 2.5, 4.5]}, errors, {}
    # Not `multivariate_normal`: it factors this covariance (three equal eigenvalues) by an SVD
    # whose vectors in that eigenspace depend on the CPU's kernels, so the very sample differed.
    matrix = rng.standard_normal((2000, 4)) @ np.linalg.cholesky(np.eye(4) + 0.5).T
    yield "pca_reconstruction", "pca_reconstruction", {}, matrix, {}


def test_every_calibrated_limit_is_the_earlier_code_s():
    got = {}
    for label, kind, params, ref, context in _cases():
        d = registry.create(kind, **params).fit(ref, run_length=250_000, window_size=500, seed=11, **context)
        got[label] = [float(v) for v in getattr(d, "limits", [d.threshold])]
    assert got.keys() == EARLIER.keys()
    for label, limits in got.items():
        assert limits == pytest.approx(EARLIER[label], rel=1e-9, abs=0), label


def _excursions_whole(cum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`excursion_maxima` as it was: the whole long path at once, S = C - min(0, running min C)."""
    length = cum.shape[1]
    carry = np.concatenate([[0.0], np.cumsum(cum[:, -1])[:-1]])
    flat = (cum + carry[:, None]).ravel()
    floor = np.minimum(np.minimum.accumulate(flat), 0.0)
    s = flat - floor
    positive = s > 0
    starts = np.flatnonzero(positive[1:] > positive[:-1]) + 1
    if positive[0]:
        starts = np.concatenate([[0], starts])
    if len(starts) == 0:
        return np.zeros(0), np.zeros(0, dtype=int)
    return np.maximum.reduceat(s, starts), starts // length


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("rows", "length", "drift"), [(256, 768, -0.1), (128, 512, -0.02), (40, 9000, 0.0), (3, 5, 0.3)]
)
def test_excursions_slice_by_slice_are_the_whole_path_s(seed, rows, length, drift):
    rng = np.random.default_rng(seed)
    f_cum = np.cumsum(rng.standard_normal((rows, length)) + rng.choice([0.0, 3.0], (rows, length), p=[0.99, 0.01]), 1)
    slope = rng.uniform(0.5, 1.5, rows) * rng.choice([-1.0, 1.0])
    offset = drift + rng.normal(0, 0.05, rows)
    whole = _excursions_whole(slope[:, None] * f_cum + offset[:, None] * np.arange(1, length + 1))
    sliced = excursion_maxima(cumulative=f_cum, slope=slope, offset=offset)
    assert np.array_equal(sliced[0], whole[0]) and np.array_equal(sliced[1], whole[1])
    increments = rng.normal(drift, 1.0, (rows, length))
    plain = excursion_maxima(increments)
    expected = _excursions_whole(np.cumsum(increments, axis=1))
    assert np.array_equal(plain[0], expected[0]) and np.array_equal(plain[1], expected[1])


@pytest.mark.parametrize(("n", "block", "paths", "length"), [(5000, 18, 600, 1000), (37, 5, 3, 40), (50, 50, 4, 7)])
def test_gather_is_indexing_with_the_same_draws(n, block, paths, length):
    values = np.random.default_rng(1).standard_normal(n)
    expected = values[Bootstrap(values, block=block, seed=3).indices(paths, length)]
    boot = Bootstrap(values, block=block, seed=3)
    assert np.array_equal(boot.gather(values, boot.starts(paths, length), length), expected)


def test_window_histograms_count_the_gathered_codes():
    codes = np.random.default_rng(2).integers(0, 13, 1000)
    boot = Bootstrap(codes.astype(float), block=9, seed=5)
    positions = Bootstrap(codes.astype(float), block=9, seed=5).indices(70, 333)
    expected = np.stack([np.bincount(codes[row], minlength=13) for row in positions]).astype(float)
    assert np.array_equal(window_histograms(codes, boot, 70, 333, 13), expected)


@pytest.mark.parametrize(
    ("n", "block", "columns"), [(5000, 18, 4), (5000, 18, 1), (1000, 7, 1), (1000, 3, 2), (300, 30, 3), (60, 1, 1)]
)
def test_resample_means_slice_by_slice_are_the_whole_sum_s(n, block, columns):
    rng = np.random.default_rng(4)
    f = rng.standard_normal((n, columns)) * 10.0 ** rng.uniform(-6, 6, (n, columns))  # order shows in the sums
    boot = Bootstrap(np.zeros(n), block=block, seed=9)
    got = boot.resample_means(f, calibration.N_PATHS)
    rng = np.random.default_rng(9)
    cum = np.concatenate([np.zeros((1, columns)), np.cumsum(np.vstack([f, f[: block - 1]]), axis=0)])
    sums = cum[block : block + n] - cum[:n]
    n_blocks = max(1, round(n / block))
    starts = rng.integers(0, n, size=(calibration.N_PATHS, n_blocks))
    assert np.array_equal(got, sums[starts].sum(axis=1) / (n_blocks * block))
