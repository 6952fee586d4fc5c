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
