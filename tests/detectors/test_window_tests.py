"""Window tests: what each one is for, beyond the behaviour every detector shares."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.detectors.ks import KS
from monitor.detectors.pca_reconstruction import PCAReconstruction
from monitor.detectors.unseen_share import UnseenShare
from monitor.detectors.wasserstein import Wasserstein

P = np.array([0.40, 0.25, 0.15, 0.12, 0.08, 0.0])


def _correlated(rng, n, rho, d=4):
    cov = np.eye(d)
    cov[0, 1] = cov[1, 0] = rho
    return rng.multivariate_normal(np.zeros(d), cov, size=n)


def test_pca_catches_a_correlation_change_that_no_single_feature_shows():
    rng = np.random.default_rng(0)
    reference = _correlated(rng, 5000, 0.8)
    pca = PCAReconstruction().fit(reference, run_length=100_000, window_size=500, seed=0)
    before, after = _correlated(rng, 500, 0.8), _correlated(rng, 500, 0.0)
    assert not pca.test(before).drifted
    assert pca.test(after).drifted
    # Each feature alone looks the same: a KS test per column stays quiet.
    for column in range(4):
        ks = KS().fit(reference[:, column], run_length=100_000, window_size=500, seed=0)
        assert not ks.test(after[:, column]).drifted


def test_pca_imputes_missing_values_with_reference_means():
    rng = np.random.default_rng(1)
    reference = _correlated(rng, 5000, 0.8)
    reference[rng.random(reference.shape) < 0.05] = np.nan
    pca = PCAReconstruction().fit(reference, run_length=100_000, window_size=500, seed=0)
    window = _correlated(rng, 500, 0.8)
    window[rng.random(window.shape) < 0.05] = np.nan  # as often missing as in the reference
    result = pca.test(window)
    assert np.isfinite(result.score) and not result.drifted
    # A correlated feature missing from every row breaks the correlation it had: that shows.
    window[:, 0] = np.nan
    assert pca.test(window).drifted


def test_pca_rejects_a_window_with_other_columns():
    pca = PCAReconstruction().fit(_correlated(np.random.default_rng(2), 1000, 0.5), run_length=1e5, window_size=100)
    with pytest.raises(ValueError, match="columns"):
        pca.test(np.zeros((100, 3)))


@pytest.mark.parametrize("variance_kept", [0.0, 1.5, "all"])
def test_pca_bad_variance_kept_names_valid_values(variance_kept):
    with pytest.raises(ValueError, match="variance_kept.*Valid values"):
        PCAReconstruction(variance_kept=variance_kept)


def test_unseen_share_alarms_on_a_few_new_values_and_respects_known_rare_ones():
    rng = np.random.default_rng(3)
    reference = rng.choice(6, 5000, p=P)
    test = UnseenShare().fit(reference, run_length=250_000, window_size=1000, n_categories=6)
    window = rng.choice(6, 1000, p=P)
    assert not test.test(window).drifted
    window[:3] = 5
    assert test.test(window).drifted
    # A reference that already holds unseen values (rare categories folded into the last code)
    # tolerates their usual share.
    reference[rng.random(5000) < 0.01] = 5
    tolerant = UnseenShare().fit(reference, run_length=250_000, window_size=1000, n_categories=6)
    assert not tolerant.test(window).drifted
    assert tolerant.threshold > test.threshold


def test_threshold_scales_with_the_window_size():
    rng = np.random.default_rng(4)
    ks = KS().fit(rng.standard_normal(5000), run_length=100_000, window_size=1000, seed=0)
    assert ks.threshold_for(250) > ks.threshold_for(1000) > ks.threshold_for(4000)
    assert ks.test(rng.standard_normal(5)).drifted is False  # too few values to judge


def test_wasserstein_counts_values_beyond_the_reference_range():
    rng = np.random.default_rng(5)
    w = Wasserstein().fit(rng.standard_normal(5000), run_length=100_000, window_size=500, seed=0)
    window = rng.standard_normal(500)
    shifted = window.copy()
    shifted[:25] = 100.0  # 5% of the values far outside the reference
    assert w.test(shifted).score > w.test(window).score + 4.0
    assert w.test(shifted).drifted


def test_window_test_state_is_small_and_json_safe():
    rng = np.random.default_rng(6)
    for test in (KS(), Wasserstein()):
        test.fit(rng.standard_normal(5000), run_length=1e6, window_size=1000)
        assert len(json.dumps(test.to_state())) < 8 * 1024
