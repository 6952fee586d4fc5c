"""pca_reconstruction: heavy-tailed features stay within the false-alarm budget, correlation
breaks are still found, the evidence says what moved, and a state saved before ranks loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.detectors.pca_reconstruction import RANK_KNOTS, PCAReconstruction


def _pair(rng, n, rho, d=6, heavy=False):
    """d features, the first two correlated by rho; multivariate t(3) when heavy."""
    z = rng.standard_normal((n, d))
    z[:, 1] = rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]
    return z / np.sqrt(rng.chisquare(3, (n, 1)) / 3) if heavy else z


def _alarms(test, stream, size):
    return sum(test.test(stream[i : i + size]).drifted for i in range(0, len(stream), size))


def test_heavy_tailed_stationary_features_stay_within_the_budget():
    # Squared errors of t(3) rows have no finite variance: the mean error of HEAD before ranks
    # raised 45 alarms on these 1,200 windows where 3 are declared (23, 10 and 12 per reference).
    alarms = declared = 0.0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        test = PCAReconstruction().fit(rng.standard_t(3, (4000, 6)), run_length=200_000, window_size=500, seed=0)
        stream = rng.standard_t(3, (400 * 500, 6))
        alarms += _alarms(test, stream, 500)
        declared += len(stream) / 200_000
    assert alarms <= 3 * declared


@pytest.mark.parametrize("heavy", [False, True])
def test_a_correlation_break_is_found_on_gaussian_and_heavy_tailed_features(heavy):
    rng = np.random.default_rng(10)
    test = PCAReconstruction().fit(_pair(rng, 5000, 0.9, heavy=heavy), run_length=1e6, window_size=1000, seed=0)
    assert _alarms(test, _pair(rng, 5000, 0.9, heavy=heavy), 1000) == 0
    after = _pair(rng, 1000, 0.5, heavy=heavy)  # the same marginals, moving together less
    result = test.test(after)
    assert result.drifted
    # What moved: rows' errors beyond the reference's, and the mean error against the reference's.
    assert result.details["rows_beyond_reference"] > 10
    assert result.details["mean_error"] > 2 * result.details["reference_mean_error"]
    assert 0.0 <= result.score <= 1.0


def test_the_score_is_the_mean_rank_of_the_rows_errors():
    rng = np.random.default_rng(11)
    test = PCAReconstruction().fit(_pair(rng, 3000, 0.8), run_length=1e5, window_size=500, seed=0)
    assert len(test.error_knots) == RANK_KNOTS
    assert abs(test.center - 0.5) < 0.01  # the held-out rows rank themselves around the middle
    window = _pair(rng, 500, 0.8)
    errors = test._errors(window, test.mean, test.sd, test.residual_basis)
    ranks = [(np.sum(test.error_knots < e) + np.sum(test.error_knots <= e)) / (2 * RANK_KNOTS) for e in errors]
    assert test.test(window).score == pytest.approx(np.mean(ranks), abs=1e-12)


def test_state_round_trips_through_json():
    rng = np.random.default_rng(12)
    test = PCAReconstruction().fit(_pair(rng, 5000, 0.9, d=20), run_length=4e6, window_size=1000, seed=3)
    state = json.loads(json.dumps(test.to_state()))
    assert len(json.dumps(state)) < 8 * 1024
    restored = PCAReconstruction.from_state(state)
    window = _pair(rng, 1000, 0.6, d=20)
    assert restored.test(window) == test.test(window)


def test_a_state_saved_before_ranks_loads_and_scores_the_mean_error_as_it_did():
    rng = np.random.default_rng(13)
    test = PCAReconstruction().fit(_pair(rng, 5000, 0.9), run_length=1e6, window_size=1000, seed=0)
    state = json.loads(json.dumps(test.to_state()))
    # The state the version before ranks saved: no knots, its threshold and center on the mean
    # error (the values it computed for this reference).
    del state["profile"]["error_knots"], state["profile"]["reference_mean_error"]
    state["threshold"], state["center"] = 0.02012334090923657, 0.017212760187987057
    restored = PCAReconstruction.from_state(state)
    assert restored.error_knots is None
    window = _pair(rng, 1000, 0.9)
    errors = restored._errors(window, restored.mean, restored.sd, restored.residual_basis)
    result = restored.test(window)
    assert result.score == pytest.approx(errors.mean(), rel=1e-12)
    assert result.threshold == 0.02012334090923657 and not result.drifted
    assert result.details == {"n": 1000, "components_kept": 5}
    assert restored.test(_pair(rng, 1000, 0.0)).drifted  # and still finds a break
    assert "error_knots" not in restored.to_state()["profile"]  # saved again as it came
