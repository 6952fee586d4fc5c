"""The multinomial scan: finds small and large shifts of a categorical feature's shares, stays
within its budget on stationary data, and decides the same whatever the batches and restarts."""

from __future__ import annotations

import json

import numpy as np
import pytest

import monitor.detectors  # noqa: F401  (registers every detector)
from monitor.detectors.multinomial_scan import MultinomialScan, g_statistic, window_grid
from monitor.detectors.registry import create

P = np.array([0.40, 0.25, 0.15, 0.12, 0.08, 0.0])  # the last code: values unseen in the reference


def _shifted(tv: float) -> np.ndarray:
    """drift-bench's frequency shift: category 0 loses `tv`, categories 3 and 4 gain half each."""
    p = P.copy()
    p[0] -= tv
    p[3] += tv / 2
    p[4] += tv / 2
    return p


def _fitted(seed: int = 0, run_length: float = 1e6, **params) -> tuple[MultinomialScan, np.random.Generator]:
    rng = np.random.default_rng(seed)
    det = MultinomialScan(**params).fit(
        rng.choice(6, 5000, p=P), run_length=run_length, window_size=1000, seed=seed, n_categories=6
    )
    return det, rng


def test_registered_by_name():
    assert isinstance(create("multinomial_scan"), MultinomialScan)


def test_a_large_shift_is_found_within_a_few_blocks():
    det, rng = _fitted()
    stream = np.r_[rng.choice(6, 4000, p=P), rng.choice(6, 3000, p=_shifted(0.20))]
    alarms = det.update_many(stream)
    assert alarms and 4000 <= alarms[0] < 4400


def test_a_small_shift_accumulates_in_the_long_windows():
    """Total variation 0.05 (0.40 -> 0.35): a window test of 1,000 values rarely sees it; the scan
    finds it on every seed, within 6,000 values, at one false alarm per 1,000,000 values."""
    delays = []
    for seed in range(4):
        det, rng = _fitted(seed)
        stream = np.r_[rng.choice(6, 5000, p=P), rng.choice(6, 10_000, p=_shifted(0.05))]
        alarms = det.update_many(stream)
        assert not [a for a in alarms if a < 5000], f"seed {seed}: false alarm before the change"
        assert alarms, f"seed {seed}: missed"
        delays.append(alarms[0] - 5000)
    assert max(delays) < 6000, delays


def test_evidence_says_which_categories_moved():
    det, rng = _fitted()
    alarms = det.update_many(np.r_[rng.choice(6, 2000, p=P), rng.choice(6, 3000, p=_shifted(0.20))])
    details = det.alarm_results[0].details
    assert len(alarms) == len(det.alarm_results)
    assert details["moved_categories"][0] == "0"  # 0.40 -> 0.20, the largest move
    assert details["reference_share"][0] == pytest.approx(0.40, abs=0.02)
    assert details["recent_share"][0] < 0.33
    assert set(details["moved_categories"][:3]) == {"0", "3", "4"}
    assert det.alarm_results[0].score >= det.alarm_results[0].threshold == det.threshold
    json.dumps(details)


def test_stationary_stream_stays_within_budget():
    """run_length 50,000 on 3 references x 150,000 stationary values: 9 alarms expected. Fewer
    than 2x that (Poisson and the references' luck leave room below, not above), and not silent."""
    total = 0
    for seed in range(3):
        det, rng = _fitted(seed, run_length=50_000)
        total += len(det.update_many(rng.choice(6, 150_000, p=P)))
    assert 2 <= total <= 18, total


def test_state_round_trip_mid_stream_gives_identical_decisions():
    det, rng = _fitted(run_length=20_000)
    stream = np.r_[rng.choice(6, 7013, p=P), rng.choice(6, 6000, p=_shifted(0.10))]
    det.update_many(stream[:7013])  # an open block of 13 values, a full history
    assert det.open_size == 13 and len(det.history) == det.max_blocks
    restored = MultinomialScan.from_state(json.loads(json.dumps(det.to_state())))
    assert restored.to_state() == det.to_state()
    assert restored.score == det.score
    rest = stream[7013:]
    assert restored.update_many(rest) == det.update_many(rest)
    assert [r.details for r in restored.alarm_results] == [r.details for r in det.alarm_results]
    assert restored.to_state() == det.to_state()


def test_batch_split_does_not_change_the_alarms():
    """The same stream in batches of 1, 37 and 5,000 values: the same alarms at the same values."""
    reference, rng = _fitted(run_length=20_000)
    stream = np.r_[rng.choice(6, 3000, p=P), rng.choice(6, 3000, p=_shifted(0.20)), rng.choice(6, 3000, p=P)]
    found = {}
    for size in (1, 37, 5000):
        det = MultinomialScan.from_state(reference.to_state())
        alarms = []
        for start in range(0, len(stream), size):
            alarms += [start + a for a in det.update_many(stream[start : start + size])]
        found[size] = (alarms, det.to_state())
    assert found[1][0], "the shift should alarm"
    assert found[1] == found[37] == found[5000]


def test_unusable_values_are_skipped_but_keep_their_positions():
    det, rng = _fitted()
    twin = MultinomialScan.from_state(det.to_state())
    codes = np.r_[rng.choice(6, 1000, p=P), rng.choice(6, 1000, p=_shifted(0.30))]
    noisy = codes.astype(float)
    noisy[::7] = np.nan
    clean = codes[~np.isnan(noisy)]
    where = np.flatnonzero(~np.isnan(noisy))
    assert det.update_many(noisy) == [int(where[a]) for a in twin.update_many(clean)]
    assert det.n_seen == len(clean)


def test_codes_beyond_the_last_count_as_unseen_and_move_the_rare_cell():
    det, rng = _fitted()
    alarms = det.update_many(np.r_[rng.choice(6, 1000, p=P), np.full(200, 17)])
    assert alarms and alarms[0] >= 1000
    assert det.alarm_results[0].details["moved_categories"][0] == "rare_or_unseen"


def test_state_is_bounded_whatever_the_traffic():
    det, rng = _fitted()
    det.update_many(rng.choice(6, 20_000, p=P))
    early = len(json.dumps(det.to_state()))
    for _ in range(5):
        det.update_many(rng.choice(6, 200_000, p=P))
    assert len(json.dumps(det.to_state())) <= early + 64
    assert len(det.history) <= det.max_blocks


def test_g_statistic_is_the_homogeneity_likelihood_ratio():
    window, reference = np.array([30.0, 50.0, 20.0]), np.array([400.0, 400.0, 200.0])
    total = window + reference
    expected_w = total * window.sum() / total.sum()
    expected_r = total * reference.sum() / total.sum()
    g = 2 * (np.sum(window * np.log(window / expected_w)) + np.sum(reference * np.log(reference / expected_r)))
    assert float(g_statistic(window, reference)) == pytest.approx(g)


def test_window_grid_is_geometric_and_covers_both_ends():
    grid = window_grid(50, 100, 6400)
    assert grid[0] == 2 and grid[-1] == 128
    assert np.all(np.diff(grid) > 0) and np.all(grid[1:] / grid[:-1] <= 1.6)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"block": 0}, "block"),
        ({"max_window": 50, "min_window": 100}, "max_window"),
        ({"min_window": 1.5}, "min_window"),
        ({"scale_penalty": -1.0}, "scale_penalty"),
    ],
)
def test_bad_parameters_fail_naming_valid_values(params, match):
    with pytest.raises(ValueError, match=match):
        MultinomialScan(**params)


def test_fit_needs_categories():
    with pytest.raises(ValueError, match="n_categories"):
        MultinomialScan().fit(np.zeros(100, dtype=np.int64), run_length=1e5, window_size=1000)
    with pytest.raises(ValueError, match="two categories"):
        MultinomialScan().fit(np.zeros(100, dtype=np.int64), run_length=1e5, window_size=1000, n_categories=3)
