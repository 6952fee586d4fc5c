from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.detectors.bernoulli_cusum import BernoulliCusum


def _reference(p=0.10, n=5000, seed=0):
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_bad_odds_ratio_names_valid_values():
    with pytest.raises(ValueError, match="odds_ratio.*Valid values"):
        BernoulliCusum(odds_ratio=0.9)


def test_an_improvement_never_alarms():
    det = BernoulliCusum().fit(_reference(), run_length=10_000, window_size=1000)
    assert det.update_many(np.zeros(50_000)) == []
    assert det.score == 0.0


def test_larger_rises_are_found_sooner():
    delays = []
    for p in (0.15, 0.20, 0.30):
        det = BernoulliCusum().fit(_reference(), run_length=100_000, window_size=1000)
        stream = (np.random.default_rng(1).random(20_000) < p).astype(float)
        delays.append(det.update_many(stream)[0])
    assert delays[0] > delays[1] > delays[2]


def test_nan_values_are_skipped_but_keep_their_positions():
    det = BernoulliCusum().fit(_reference(), run_length=10_000, window_size=1000)
    twin = BernoulliCusum.from_state(json.loads(json.dumps(det.to_state())))
    ones = np.ones(40)
    with_gaps = np.where(np.arange(80) % 2 == 0, np.nan, 1.0)
    first = det.update_many(ones)[0]
    assert twin.update_many(with_gaps)[0] == 2 * first + 1


def test_longer_run_length_gives_a_higher_limit():
    limits = [BernoulliCusum().fit(_reference(), run_length=r, window_size=1000).threshold for r in (1e3, 1e5, 1e7)]
    assert limits[0] < limits[1] < limits[2]


def test_state_stays_small():
    det = BernoulliCusum().fit(_reference(), run_length=100_000, window_size=1000)
    det.update_many(_reference(n=1_000_000, seed=3))
    assert len(json.dumps(det.to_state())) < 1024
