"""Sequential detectors: memory, robustness and the behaviour specific to each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.detectors._common import update_together
from monitor.detectors.category_cusum import CategoryCusum
from monitor.detectors.cusum import Cusum
from monitor.detectors.registry import create

P = np.array([0.40, 0.25, 0.15, 0.12, 0.08, 0.0])


def _data(name, rng, n):
    if name == "bernoulli_cusum":
        return (rng.random(n) < 0.1).astype(float)
    if name == "category_cusum":
        return rng.choice(6, n, p=P)
    return rng.standard_normal(n)


@pytest.mark.parametrize(
    "name, values",
    [
        ("bernoulli_cusum", 1_000_000),
        ("cusum", 1_000_000),
        ("category_cusum", 1_000_000),
        ("adwin", 200_000),
        ("page_hinkley", 200_000),
    ],
)
def test_state_stays_bounded_whatever_the_values_seen(name, values):
    rng = np.random.default_rng(0)
    det = create(name).fit(_data(name, rng, 5000), run_length=250_000, window_size=1000, n_categories=6)
    det.update_many(_data(name, rng, 100_000))
    size_early = len(json.dumps(det.to_state()))
    for _ in range(values // 100_000 - 1):
        det.update_many(_data(name, rng, 100_000))
    size = len(json.dumps(det.to_state()))
    assert size < 16 * 1024
    if name != "adwin":  # ADWIN keeps O(log n) buckets
        assert size <= size_early + 64  # counters grow by a digit, nothing else


def test_cusum_is_robust_to_heavy_tails():
    """Student-t(3): one extreme value must not raise an alarm on its own."""
    rng = np.random.default_rng(1)
    det = Cusum().fit(rng.standard_t(3, 5000), run_length=100_000, window_size=1000)
    assert det.update_many(np.array([1e6])) == []
    assert det.update_many(np.array([-1e6])) == []


def test_cusum_sees_a_shift_down_and_a_spread_increase():
    rng = np.random.default_rng(2)
    det = Cusum().fit(rng.standard_normal(5000), run_length=100_000, window_size=1000)
    assert det.update_many(rng.standard_normal(2000) - 1.0)
    fresh = det.clone().fit(rng.standard_normal(5000), run_length=100_000, window_size=1000)
    wider = fresh.update_many(rng.standard_normal(3000) * 2.0)
    assert wider
    assert max(fresh.components(), key=lambda c: fresh.components()[c]["value"]) in fresh.component_names


def test_cusum_variance_increase_is_found_by_the_scale_component():
    rng = np.random.default_rng(3)
    det = Cusum(mean_shifts=[0.25], scale=True).fit(rng.standard_normal(5000), run_length=1e5, window_size=1000)
    values = rng.standard_normal(3000) * 2.0
    first = det.update_many(values)[0]
    probe = det.clone().fit(rng.standard_normal(5000), run_length=1e5, window_size=1000)
    probe.update_many(values[:first])
    parts = probe.components()
    assert parts["scale_up"]["value"] / parts["scale_up"]["limit"] > 0.5


@pytest.mark.parametrize(
    "params, word",
    [
        ({"mean_shifts": []}, "mean_shifts"),
        ({"mean_shifts": [-1]}, "mean_shifts"),
        ({"scale": "yes"}, "scale"),
        ({"clip_quantile": 0.3}, "clip_quantile"),
        ({"scale_allowance": -1}, "scale_allowance"),
    ],
)
def test_cusum_bad_parameters_name_valid_values(params, word):
    with pytest.raises(ValueError, match=f"{word}.*Valid values"):
        Cusum(**params)


def test_category_cusum_needs_the_number_of_categories():
    with pytest.raises(ValueError, match="n_categories"):
        CategoryCusum().fit(np.zeros(100, dtype=np.int64), run_length=1e5, window_size=100)


def test_category_cusum_catches_a_fall_of_a_large_category():
    rng = np.random.default_rng(4)
    det = CategoryCusum().fit(rng.choice(6, 5000, p=P), run_length=1e5, window_size=1000, n_categories=6)
    fewer_a = np.array([0.25, 0.30, 0.18, 0.15, 0.12, 0.0])
    alarms = det.update_many(rng.choice(6, 5000, p=fewer_a))
    assert alarms and alarms[0] < 1500


def test_category_codes_beyond_the_last_count_as_unseen():
    rng = np.random.default_rng(5)
    det = CategoryCusum().fit(rng.choice(6, 5000, p=P), run_length=1e5, window_size=1000, n_categories=6)
    twin = CategoryCusum.from_state(json.loads(json.dumps(det.to_state())))
    assert det.update_many(np.array([5] * 10)) == twin.update_many(np.array([99] * 10))


@pytest.mark.parametrize("name", ["adwin", "page_hinkley"])
def test_river_wrappers_reject_bad_parameters(name):
    with pytest.raises(ValueError, match="Valid values"):
        create(name, delta=-1.0)


@pytest.mark.parametrize("seed", range(6))
def test_cusums_updated_together_end_exactly_where_each_alone_ends(seed):
    """`update_together` (one cumulative sum over every CUSUM of a batch) against one
    `update_many` each, on copies: same alarms, the same evidence, bit-identical states; some
    columns drift (alarms), some hold values a detector cannot use (NaN, unseen codes)."""
    rng = np.random.default_rng(seed)
    detectors, columns = [], []
    for i in range(8):
        if i % 3 == 2:
            detector = CategoryCusum().fit(rng.integers(0, 4, 3000), run_length=1e4, n_categories=5, seed=i)
            column = rng.integers(0, 4 if i % 2 else 5, 700)
        else:
            detector = Cusum(mean_shifts=(0.25, 1.0)).fit(rng.normal(size=3000), run_length=1e4, seed=i)
            column = rng.normal(rng.choice([0.0, 0.0, 1.5]), 1.0, int(rng.choice([700, 700, 650])))
            if rng.random() < 0.25:
                column[rng.integers(0, 700)] = np.nan
        detectors.append(detector)
        columns.append(column)
    alone = [type(d).from_state(json.loads(json.dumps(d.to_state()))) for d in detectors]
    for batch in range(3):
        cut = [c[batch * 200 : (batch + 1) * 200 + batch] for c in columns]
        together = update_together(detectors, cut)
        for d, a, c, found in zip(detectors, alone, cut, together, strict=True):
            assert a.update_many(c) == found
            assert a.alarm_results == d.alarm_results
            assert a.state.tobytes() == d.state.tobytes() and a.n_seen == d.n_seen
    assert sum(d.n_alarms for d in detectors) > 0  # the drifting columns did alarm
