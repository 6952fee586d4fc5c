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


# ------------------------------------------------------------------ a bank of odds ratios

BANK = [1.5, 2.5, 4.5]


def _stream(p, n, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(float)


@pytest.mark.parametrize("bad", [[], [1.5, 1.5], [1.5, 0.9], [1.5, True], list(np.linspace(1.1, 9, 17))])
def test_a_bad_bank_names_valid_values(bad):
    with pytest.raises(ValueError, match="odds_ratio"):
        BernoulliCusum(odds_ratio=bad)


def test_a_single_ratio_keeps_the_one_component_format():
    det = BernoulliCusum(1.5).fit(_reference(), run_length=10_000, window_size=1000)
    state = det.to_state()
    assert det.component_names == ("error_rate_up",) and state["params"] == {"odds_ratio": 1.5}
    assert len(state["limits"]) == 1 and np.asarray(state["fitted"]["steps"]).shape == (2, 1)


def test_a_bank_finds_large_rises_sooner_and_small_ones_nearly_as_soon():
    """The single ratio 1.5 is tuned to odds x1.5; the bank is within its budget's share there
    and much faster where the rise is far larger (0.02 -> 0.2: odds x12)."""
    ref = _reference(p=0.02, seed=4)
    delays = {}
    for p in (0.03, 0.20):
        stream = _stream(p, 40_000, seed=5)
        single = BernoulliCusum(1.5).fit(ref, run_length=1e6, window_size=1000).update_many(stream)
        bank = BernoulliCusum(BANK).fit(ref, run_length=1e6, window_size=1000).update_many(stream)
        delays[p] = single[0], bank[0]
    assert delays[0.20][1] < 0.5 * delays[0.20][0]
    assert delays[0.03][1] < 1.5 * delays[0.03][0]


def test_a_bank_alarm_says_which_rise_fits_best():
    det = BernoulliCusum(BANK).fit(_reference(), run_length=100_000, window_size=1000)
    alarms = det.update_many(_stream(0.45, 2000, seed=6))
    assert alarms
    details = det.alarm_results[0].details
    assert details["best_fit_odds_ratio"] in BANK and details["best_fit_odds_ratio"] > 1.5
    assert 0.10 < details["best_fit_error_rate"] < 0.45
    assert {f"error_rate_up_x{r:g}.limit" for r in BANK} <= set(details)
    assert det.threshold == 1.0 and det.alarm_results[0].score >= 1.0


def test_a_bank_resumes_from_its_json_state():
    det = BernoulliCusum(BANK).fit(_reference(), run_length=100_000, window_size=1000)
    det.update_many(_stream(0.12, 3000, seed=7))
    twin = BernoulliCusum.from_state(json.loads(json.dumps(det.to_state())))
    rest = _stream(0.25, 3000, seed=8)
    assert twin.update_many(rest) == det.update_many(rest)
    assert twin.to_state() == det.to_state()


def test_a_bank_runs_in_the_shared_cumulative_sum():
    from monitor.detectors._common import update_together

    pair = [BernoulliCusum(BANK).fit(_reference(seed=s), run_length=100_000, window_size=1000) for s in (1, 2)]
    alone = [BernoulliCusum.from_state(d.to_state()) for d in pair]
    columns = [_stream(0.10, 800, seed=9), _stream(0.5, 800, seed=10)]
    assert update_together(pair, columns) == [d.update_many(c) for d, c in zip(alone, columns, strict=True)]
    assert [d.to_state() for d in pair] == [d.to_state() for d in alone]


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_a_bank_keeps_within_its_false_alarm_budget(p):
    """Each component gets run_length x 3; their alarms overlap, so the bank raises fewer than
    its budget (measured 0.5-0.6x; a single ratio 0.65-0.7x)."""
    alarms = 0
    for seed in range(10):
        det = BernoulliCusum(BANK).fit(_reference(p=p, seed=100 + seed), run_length=20_000, seed=seed)
        alarms += len(det.update_many(_stream(p, 200_000, seed=200 + seed)))
    expected = 10 * 200_000 / 20_000
    assert 0.25 * expected <= alarms <= 1.5 * expected
