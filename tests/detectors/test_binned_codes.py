"""Numeric window tests bin a window's values with a grid lookup (`NumericBinnedTest._grid`)
instead of a binary search per value: the bins must be exactly `searchsorted`'s."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.detectors.ks import KS
from monitor.detectors.psi import PSI
from monitor.detectors.wasserstein import Wasserstein

REFERENCES = {
    "normal": lambda rng: rng.normal(size=3000),
    "rounded, offset": lambda rng: rng.normal(size=3000).round(2) + 1e6,
    "log-normal": lambda rng: rng.lognormal(0, 0.5, size=3000),
    "integers": lambda rng: rng.integers(0, 400, size=3000).astype(float),
    "tiny": lambda rng: rng.standard_t(5, size=3000) * 1e-9,
    "heavy tails": lambda rng: rng.standard_t(1, size=3000),
}


@pytest.mark.parametrize("test_class", [KS, PSI, Wasserstein])
@pytest.mark.parametrize("reference", list(REFERENCES))
def test_grid_bins_are_searchsorted_bins(test_class, reference):
    rng = np.random.default_rng(len(reference))
    ref = REFERENCES[reference](rng)
    test = test_class().fit(ref, run_length=1e6, window_size=500, seed=1)
    edges = test.edges
    values = np.concatenate(
        [
            rng.choice(ref, 2000),
            edges,
            np.nextafter(edges, np.inf),
            np.nextafter(edges, -np.inf),
            rng.normal(size=200) * 1e3,
            [1e308, -1e308, 0.0, -0.0, edges[0] - 1, edges[-1] + 1],
        ]
    )
    assert (test._codes(values) == np.searchsorted(edges, values, side="right")).all()
    with_nan = np.r_[values[:10], np.nan]
    assert (test._codes(with_nan) == np.searchsorted(edges, with_nan, side="right")).all()


def test_the_grid_serves_the_usual_reference():
    test = KS().fit(np.random.default_rng(0).normal(size=5000), run_length=1e6, window_size=1000)
    assert test._grid() is not None


def test_windows_tested_together_decide_as_each_test_alone():
    """`test_windows` (the numeric tests of a window close binned and compared together) against
    `test.test` one by one: the same results, bit for bit, drifted windows, NaN, other sizes and
    other tests among them."""
    from monitor.detectors._window import test_windows
    from monitor.detectors.chi_square import ChiSquare

    rng = np.random.default_rng(7)
    tests, windows = [], []
    for i in range(30):
        kind = [KS, PSI, Wasserstein][i % 3]
        test = kind().fit(rng.normal(size=3000) * (i + 1), run_length=1e5, window_size=1000, seed=i)
        window = rng.normal(0.3 if i % 4 == 0 else 0.0, 1.0, 1000) * (i + 1)
        if i % 7 == 0:
            window[3] = np.nan
        if i % 11 == 0:
            window = window[:700]
        tests.append(test)
        windows.append(window)
    categories = ChiSquare().fit(rng.integers(0, 4, 3000), run_length=1e5, window_size=1000, n_categories=5)
    tests.append(categories)
    windows.append(rng.integers(0, 5, 1000))
    together = test_windows(tests, windows)
    alone = [test.test(window) for test, window in zip(tests, windows, strict=True)]
    assert together == alone
    assert any(result.drifted for result in alone) and not all(result.drifted for result in alone)
