"""`Bootstrap.indices` draws circular moving blocks: the positions are the textbook
`(start + arange(block)) % n`, whatever the shape, so a faster formula changes no threshold."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.detectors.calibration import Bootstrap


@pytest.mark.parametrize(("n", "block", "paths", "length"), [(1000, 18, 256, 768), (37, 5, 3, 40), (5000, 1, 4, 9)])
def test_indices_are_circular_blocks_from_the_same_draws(n, block, paths, length):
    got = Bootstrap(np.zeros(n), block=block, seed=7).indices(paths, length)
    n_blocks = -(-length // block)
    starts = np.random.default_rng(7).integers(0, n, size=(paths, n_blocks, 1))
    expected = ((starts + np.arange(block)) % n).reshape(paths, n_blocks * block)[:, :length]
    assert got.shape == (paths, length)
    assert np.array_equal(got, expected)
