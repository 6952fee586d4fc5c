"""Planted degradations give the right alert, controls give none; state survives a restart.

Every scenario runs the monitor's loop (`drive`): predictions into the join store and the
evaluator, outcomes 100 predictions later, a window closing every 1,000 predictions, under the
default false-alarm budget unless a test says otherwise.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from evaluation_streams import active, binary_stream, drive, inactive, scored_stream

from monitor.contracts.alert import AlertKind
from monitor.contracts.config import MonitorConfig
from monitor.evaluation.evaluator import ModelEvaluator
from monitor.evaluation.join import JoinedOutcome, JoinStore


def config(**evaluation) -> MonitorConfig:
    return MonitorConfig.model_validate({"evaluation": {"warmup_outcomes": 3000, **evaluation}})


def setup(cfg: MonitorConfig | None = None) -> tuple[ModelEvaluator, JoinStore]:
    cfg = cfg or config()
    return ModelEvaluator("churn", cfg), JoinStore.from_config(cfg)


# ---------------------------------------------------------------- error stream


def test_error_rate_jump_raises_performance_degradation_with_evidence():
    rng = np.random.default_rng(11)
    stream = binary_stream(8000, rng, error_rate=0.10).extend(binary_stream(6000, rng, start=8000, error_rate=0.30))
    evaluator, store = setup()
    run = drive(evaluator, store, stream)
    alarms = active(run.findings, AlertKind.performance_degradation)
    assert alarms, "the jump from 10% to 30% errors was missed"
    first = alarms[0]
    change_offset = run.offsets_of_outcomes[8000]
    assert change_offset <= first.offset <= run.offsets_of_outcomes[8600]  # found within 600 outcomes
    evidence = first.evidence
    assert evidence.detector == "bernoulli_cusum" and evidence.score >= evidence.threshold
    assert evidence.details["error_rate_reference"] == pytest.approx(0.10, abs=0.02)
    assert evidence.details["error_rate_recent"] > evidence.details["error_rate_reference"]
    assert evidence.reference_size == 3000 and evidence.settings_hash
    assert first.model_version == "all" and first.feature is None
    # Before the change, the clean checks resolve: inactive findings at each window close.
    assert len(inactive(run.findings, AlertKind.performance_degradation)) >= 4


def test_a_bank_of_odds_ratios_finds_a_large_jump_sooner_and_names_its_size():
    """`bernoulli_cusum` with a list of odds ratios: one CUSUM per ratio, the alarm saying which
    rise fits best; a 10% -> 40% jump is far from the single default ratio (1.5)."""
    delays, firsts = {}, {}
    for ratios in (1.5, [1.5, 2.5, 4.5]):
        rng = np.random.default_rng(14)
        stream = binary_stream(8000, rng, error_rate=0.10).extend(binary_stream(4000, rng, start=8000, error_rate=0.40))
        cfg = MonitorConfig.model_validate(
            {
                "evaluation": {"warmup_outcomes": 3000},
                "detectors": {"params": {"bernoulli_cusum": {"odds_ratio": ratios}}},
            }
        )
        evaluator, store = setup(cfg)
        run = drive(evaluator, store, stream)
        alarms = active(run.findings, AlertKind.performance_degradation)
        assert alarms, f"odds_ratio={ratios}: the jump from 10% to 40% errors was missed"
        firsts[str(ratios)] = alarms[0]
        delays[str(ratios)] = alarms[0].offset - run.offsets_of_outcomes[8000]
    assert 0 <= delays["[1.5, 2.5, 4.5]"] < delays["1.5"]
    bank = firsts["[1.5, 2.5, 4.5]"]
    assert bank.evidence.threshold == 1.0 and bank.evidence.score >= 1.0
    assert bank.evidence.details["best_fit_odds_ratio"] in (2.5, 4.5)
    assert f"a rise to about {bank.evidence.details['best_fit_error_rate']:.3g}" in bank.summary
    assert "fitting best" not in firsts["1.5"].summary


def test_stationary_error_rate_raises_nothing():
    rng = np.random.default_rng(12)
    evaluator, store = setup()
    run = drive(evaluator, store, binary_stream(14_000, rng, error_rate=0.10))
    assert not [f for f in run.findings if f.active]
    assert len(inactive(run.findings, AlertKind.performance_degradation)) >= 10
    assert evaluator.metrics()["overall"]["accuracy"] == pytest.approx(0.9, abs=0.01)


def test_labelled_reference_replaces_the_warm_up():
    rng = np.random.default_rng(13)
    evaluator, store = setup()
    labels = (rng.random(4000) < 0.4).astype(int)
    wrong = rng.random(4000) < 0.1
    predictions = np.where(wrong, 1 - labels, labels)
    evaluator.fit_reference(labels.tolist(), predictions.tolist())
    assert evaluator.detector is not None and evaluator.reference_size == 4000
    run = drive(evaluator, store, binary_stream(3000, rng, error_rate=0.35))
    alarms = active(run.findings, AlertKind.performance_degradation)
    assert alarms and alarms[0].offset < run.offsets_of_outcomes[500]  # no warm-up to wait for


def test_regression_mae_jump_raises_performance_degradation():
    rng = np.random.default_rng(14)
    evaluator = ModelEvaluator("price", config())
    records = []
    for i in range(9000):
        label = float(rng.normal(100, 10))
        noise = rng.normal(0, 2.0 if i < 6000 else 6.0)
        records.append(
            JoinedOutcome(f"p{i}", "price", "v1", 1e9 + i, label + noise, float("nan"), (), label, 1e9 + i + 60)
        )
    findings = evaluator.observe_outcomes(records, offsets=list(range(9000))) + evaluator.flush()
    alarms = active(findings, AlertKind.performance_degradation)
    assert alarms and 6000 <= alarms[0].offset < 6500
    assert alarms[0].evidence.detector == "cusum"  # absolute errors feed the numeric cusum
    assert alarms[0].evidence.details["mae_recent"] > alarms[0].evidence.details["mae_reference"]
    assert evaluator.metrics()["overall"]["mae"] > 0


# ---------------------------------------------------------------- calibration and CBPE


def under_confident(q: np.ndarray) -> np.ndarray:
    return 0.5 + (q - 0.5) * 0.3


def over_confident(q: np.ndarray) -> np.ndarray:
    logit = np.log(np.clip(q, 1e-6, 1 - 1e-6) / np.clip(1 - q, 1e-6, 1))
    return 1 / (1 + np.exp(-4 * logit))


def calibration_run(reported):
    rng = np.random.default_rng(21)
    stream = scored_stream(8000, rng).extend(scored_stream(6000, rng, start=8000, reported=reported))
    evaluator, store = setup()
    run = drive(evaluator, store, stream)
    return evaluator, run


def test_calibration_shift_at_unchanged_accuracy_moves_ece_and_log_loss_not_the_error_stream():
    """Decision (documented in cbpe.py and the report): a calibration shift at unchanged accuracy
    raises no `performance_degradation` (the error rate did not change); ECE, log loss and Brier
    move in the metrics; CBPE, which assumes the reference calibration, is fooled before labels
    arrive: an under-confident shift raises `estimated_performance_drop`, and once labels are in,
    the estimate-vs-realised record shows the estimator's bias."""
    evaluator, run = calibration_run(under_confident)
    windows = evaluator.window_metrics()
    before = [w["overall"] for w in windows if w["end"] <= 1704067200 + 7999 and w["overall"]["count"] > 500]
    after = [w["overall"] for w in windows if w["start"] >= 1704067200 + 8000 and w["overall"]["count"] > 500]
    assert before and after
    accuracy_before = np.mean([w["accuracy"] for w in before])
    accuracy_after = np.mean([w["accuracy"] for w in after])
    assert accuracy_after == pytest.approx(accuracy_before, abs=0.03)
    assert np.mean([w["ece"] for w in after]) > np.mean([w["ece"] for w in before]) + 0.1
    assert np.mean([w["log_loss"] for w in after]) > np.mean([w["log_loss"] for w in before]) + 0.05
    assert not active(run.findings, AlertKind.performance_degradation)

    drops = active(run.findings, AlertKind.estimated_performance_drop)
    assert drops and all(f.at.timestamp() > 1704067200 + 8000 for f in drops)
    assert drops[0].evidence.score < drops[0].evidence.threshold
    report = evaluator.cbpe_report()
    shifted = [r for r in report["windows"] if r["end"] > 1704067200 + 8000 and r["label_coverage"] > 0.9]
    assert shifted and all(r["estimated_accuracy"] < r["realised_accuracy"] - 0.05 for r in shifted)
    clean = [r for r in report["windows"] if r["end"] <= 1704067200 + 8000 and r["label_coverage"] > 0.9]
    assert clean and all(abs(r["estimated_accuracy"] - r["realised_accuracy"]) < 0.03 for r in clean)


def test_over_confident_shift_inflates_the_estimate_and_raises_nothing():
    evaluator, run = calibration_run(over_confident)
    assert not [f for f in run.findings if f.active]
    assert inactive(run.findings, AlertKind.estimated_performance_drop)
    shifted = [
        r for r in evaluator.cbpe_report()["windows"] if r["end"] > 1704067200 + 8000 and r["label_coverage"] > 0.9
    ]
    assert shifted and all(r["estimated_accuracy"] > r["realised_accuracy"] + 0.03 for r in shifted)


def test_cbpe_tracks_a_real_accuracy_drop_before_labels():
    """Less confident predictions of a still calibrated model: accuracy really drops, and CBPE
    says so at the window close, long before the labels of that window arrive."""
    rng = np.random.default_rng(22)
    harder = scored_stream(4000, rng, start=8000, truth=lambda u: 0.5 + (u - 0.5) * 0.3)  # near 0.5, still calibrated
    stream = scored_stream(8000, rng).extend(harder)
    evaluator, store = setup(config())
    run = drive(evaluator, store, stream, delay=3000)  # labels come 3 windows late
    drops = active(run.findings, AlertKind.estimated_performance_drop)
    assert drops and drops[0].at.timestamp() <= 1704067200 + 9000
    report = evaluator.cbpe_report()
    assert report["mean_absolute_error"] < 0.03


# ---------------------------------------------------------------- canary


def test_regressing_canary_raises_canary_regression_for_that_version():
    rng = np.random.default_rng(31)
    stream = binary_stream(4000, rng, versions={"v1": 1.0}).extend(
        binary_stream(8000, rng, start=4000, versions={"v1": 0.8, "v2": 0.2}, error_rate={"v1": 0.10, "v2": 0.25})
    )
    evaluator, store = setup()
    run = drive(evaluator, store, stream)
    canary = active(run.findings, AlertKind.canary_regression)
    assert canary and canary[0].model_version == "v2"
    details = canary[0].evidence.details
    assert details["baseline_version"] == "v1"
    assert details["error_rate_canary"] - details["error_rate_baseline"] > 0.02
    assert details["p_value"] < details["alpha"]


def test_equal_canary_raises_nothing():
    rng = np.random.default_rng(32)
    stream = binary_stream(20_000, rng, versions={"v1": 0.5, "v2": 0.5}, error_rate=0.10)
    evaluator, store = setup()
    run = drive(evaluator, store, stream)
    assert not active(run.findings, AlertKind.canary_regression)
    assert inactive(run.findings, AlertKind.canary_regression)


@pytest.mark.parametrize(("margin", "expect_alert"), [(0.05, False), (0.0, True)])
def test_significant_difference_within_the_margin_raises_nothing(margin, expect_alert):
    """14% vs 10% errors over 20,000 outcomes: very significant, but within a 5-point margin."""
    rng = np.random.default_rng(33)
    stream = binary_stream(20_000, rng, versions={"v1": 0.5, "v2": 0.5}, error_rate={"v1": 0.10, "v2": 0.14})
    cfg = MonitorConfig.model_validate(
        {
            "alerting": {"false_alarms_per_model_per_day": 1000.0},
            "evaluation": {"warmup_outcomes": 3000, "canary_margin": margin, "check_windows": 20},
        }
    )
    evaluator, store = setup(cfg)
    run = drive(evaluator, store, stream)
    assert bool(active(run.findings, AlertKind.canary_regression)) == expect_alert


# ---------------------------------------------------------------- slices


def test_large_slice_regression_alerts_small_one_never_pages():
    rng = np.random.default_rng(41)
    slices = {"country": {"DE": 0.6, "FR": 0.39, "LU": 0.01}}
    stream = binary_stream(4000, rng, slices=slices).extend(
        binary_stream(8000, rng, start=4000, slices=slices, slice_error_rate={"country=FR": 0.30, "country=LU": 0.60})
    )
    evaluator, store = setup()
    run = drive(evaluator, store, stream)
    regressed = active(run.findings, AlertKind.slice_regression)
    assert regressed and {f.slice for f in regressed} == {"country=FR"}
    evidence = regressed[0].evidence
    assert evidence.details["error_rate_slice"] - evidence.details["error_rate_overall"] > 0.05
    assert evidence.current_size >= 200
    assert not [f for f in run.findings if f.slice == "country=LU"]  # below slice_min_samples: never tested
    assert inactive(run.findings, AlertKind.slice_regression)  # DE (and FR before the change) checked clean
    assert evaluator.metrics()["slices"]["country=LU"]["error_rate"] > 0.3  # still measured


def test_slices_without_regression_raise_nothing():
    rng = np.random.default_rng(42)
    slices = {"country": {"DE": 0.5, "FR": 0.3, "IT": 0.2}, "device": {"ios": 0.5, "android": 0.5}}
    evaluator, store = setup()
    run = drive(evaluator, store, binary_stream(12_000, rng, slices=slices))
    assert not active(run.findings, AlertKind.slice_regression)
    assert {f.slice for f in inactive(run.findings, AlertKind.slice_regression)} >= {"country=DE", "device=ios"}


# ---------------------------------------------------------------- serving and labels


def test_slow_version_raises_serving_degradation():
    rng = np.random.default_rng(51)
    cfg = config(max_latency_ms_p99=200.0)
    evaluator, store = setup(cfg)
    stream = binary_stream(6000, rng, versions={"v1": 0.5, "v2": 0.5}, latency_ms={"v1": 20.0, "v2": 80.0})
    run = drive(evaluator, store, stream)
    slow = active(run.findings, AlertKind.serving_degradation)
    assert slow and {f.model_version for f in slow} == {"v2"}
    assert slow[0].evidence.score > 200.0
    fast = binary_stream(6000, rng, versions={"v1": 1.0}, latency_ms={"v1": 20.0})
    evaluator, store = setup(cfg)
    run = drive(evaluator, store, fast)
    assert not active(run.findings, AlertKind.serving_degradation)
    assert inactive(run.findings, AlertKind.serving_degradation)
    assert evaluator.metrics()["serving"]["v1"]["latency_ms_p99"] == pytest.approx(20.0 * np.log(100), rel=0.15)


@pytest.mark.parametrize(("label_share", "expect_alert"), [(0.5, True), (1.0, False)])
def test_label_coverage_below_expected_raises_labels_missing(label_share, expect_alert):
    rng = np.random.default_rng(61)
    cfg = config(expected_label_coverage=0.9, label_coverage_horizon_seconds=300)
    evaluator, store = setup(cfg)
    run = drive(evaluator, store, binary_stream(6000, rng), label_share=label_share, rng=rng)
    missing = active(run.findings, AlertKind.labels_missing)
    assert bool(missing) == expect_alert
    if expect_alert:
        assert missing[0].evidence.score == pytest.approx(0.5, abs=0.03)
    else:
        assert inactive(run.findings, AlertKind.labels_missing)


# ---------------------------------------------------------------- state


def test_state_round_trip_mid_stream_gives_the_same_findings_and_metrics():
    rng = np.random.default_rng(71)
    slices = {"country": {"DE": 0.6, "FR": 0.4}}
    stream = binary_stream(7000, rng, versions={"v1": 0.7, "v2": 0.3}, slices=slices, latency_ms={"v1": 5.0, "v2": 5.0})
    stream.extend(
        binary_stream(5000, rng, start=7000, versions={"v1": 0.7, "v2": 0.3}, slices=slices, error_rate=0.3,
                      latency_ms={"v1": 5.0, "v2": 5.0})
    )  # fmt: skip
    cfg = config(max_latency_ms_p99=100.0)
    straight, store = setup(cfg)
    expected = drive(straight, store, stream).findings

    first, second = type(stream)(), type(stream)()
    first.predictions, first.labels = stream.predictions[:6543], stream.labels[:6543]
    evaluator, store = setup(cfg)
    findings = drive(evaluator, store, first).findings
    # Stop mid-window with outcomes still buffered, restart from JSON, continue.
    state = json.loads(json.dumps(evaluator.to_state(), allow_nan=False))
    store_state = json.loads(json.dumps(store.to_state(), allow_nan=False))
    resumed = ModelEvaluator.from_state(state)
    resumed_store = JoinStore.from_state(store_state, ttl_seconds=cfg.evaluation.join_ttl_seconds)
    assert resumed.to_state() == state
    assert resumed_store.pending == store.pending
    second.predictions, second.labels = stream.predictions[6543:], stream.labels[6543:]
    # (The split run's outcome timing differs at the cut, so compare the resumed evaluator with
    # the one that never stopped, both from the same cut.)
    findings_a = drive(evaluator, store, second).findings
    findings_b = drive(resumed, resumed_store, second).findings
    assert findings_a == findings_b
    metrics_a, metrics_b = evaluator.metrics(), resumed.metrics()
    # KLL sketches compact at random: latency quantiles agree within the sketch's rank error only.
    serving_a, serving_b = metrics_a.pop("serving"), metrics_b.pop("serving")
    assert metrics_a == metrics_b
    for version, summary in serving_a.items():
        assert summary["requests"] == serving_b[version]["requests"]
        assert summary["latency_ms_p50"] == pytest.approx(serving_b[version]["latency_ms_p50"], rel=0.05)
    assert evaluator.window_metrics() == resumed.window_metrics()
    assert active(expected, AlertKind.performance_degradation) and active(
        findings + findings_a, AlertKind.performance_degradation
    )


def test_bad_parameters_fail_in_the_constructor():
    with pytest.raises(ValueError, match="batch_size"):
        ModelEvaluator("m", batch_size=0)


# ---------------------------------------------------------------- API details and bounds


def joined_records(n: int, rng: np.random.Generator, **fields) -> list[JoinedOutcome]:
    label = (rng.random(n) < 0.4).astype(int)
    prediction = np.where(rng.random(n) < 0.1, 1 - label, label)
    p1 = np.where(prediction == 1, 0.8, 0.2)
    return [
        JoinedOutcome(
            f"p{i}",
            "churn",
            fields.get("version", "v1"),
            1e9 + i,
            int(prediction[i]),
            float(p1[i]),
            fields.get("slices", ()),
            int(label[i]),
            1e9 + i + 60,
        )  # fmt: skip
        for i in range(n)
    ]


def test_batch_and_single_calls_agree_and_metrics_report_every_scope():
    rng = np.random.default_rng(81)
    records = joined_records(5000, rng, slices=(("country", "DE"),))
    one, many = ModelEvaluator("churn", config()), ModelEvaluator("churn", config(), batch_size=7)
    findings_one = [f for i, r in enumerate(records) for f in one.observe_outcome(r, i)] + one.flush()
    findings_many = many.observe_outcomes(records, list(range(5000))) + many.flush()
    assert findings_one == findings_many
    assert one.metrics() == many.metrics()
    report = one.metrics()
    assert set(report) >= {"overall", "versions", "slices", "serving", "counters", "task"}
    assert report["versions"]["v1"]["count"] == report["slices"]["country=DE"]["count"] == 5000
    assert report["overall"]["reliability"][12][2] > 0  # p = 0.8 falls in bin [0.8, 0.867)


def test_versions_classes_and_slice_values_over_their_caps_are_bounded_and_counted():
    cfg = MonitorConfig.model_validate(
        {
            "caps": {"max_model_versions": 2, "max_slice_values": 3, "max_categories": 4},
            "evaluation": {"warmup_outcomes": 100},
        }
    )
    evaluator = ModelEvaluator("churn", cfg)
    for i in range(400):
        evaluator.observe_outcome(
            JoinedOutcome(
                f"p{i}",
                "churn",
                f"v{i % 5}",
                1e9 + i,
                f"class{i % 6}",
                float("nan"),
                (("user", f"u{i}"),),
                f"class{i % 7}",
                1e9 + i + 1,
            )  # fmt: skip
        )
    report = evaluator.metrics()
    assert set(report["versions"]) == {"v0", "v1", "other"}
    assert len(report["slices"]) == 4 and report["slices"]["user=other"]["count"] == 397
    assert set(report["overall"]["per_class"]) <= {"1", "class0", "class1", "class2", "other"}
    counters = report["counters"]
    assert counters["versions_over_cap"] > 0 and counters["slice_values_over_cap"] == 397
    assert counters["classes_over_cap"] > 0


def test_memory_stays_bounded_over_many_windows():
    rng = np.random.default_rng(82)
    evaluator = ModelEvaluator("churn", config(), max_report_windows=5)
    records = joined_records(60_000, rng)
    sizes = []
    for k in range(60):
        evaluator.observe_outcomes(records[k * 1000 : (k + 1) * 1000])
        evaluator.close_window(at_seconds(1e9 + (k + 1) * 1000 - 1))
        sizes.append(evaluator.nbytes())
    assert sizes[-1] <= sizes[10] * 1.05  # windows beyond the last 5 keep counts only
    assert len(evaluator.window_metrics()) == 5
    assert evaluator.metrics()["overall"]["count"] == 60_000


def test_multiclass_and_score_predictions():
    evaluator = ModelEvaluator("animal", config())
    probabilities = {"cat": 0.7, "dog": 0.2, "fox": 0.1}
    for i in range(100):
        label = "cat" if i % 4 else "dog"
        evaluator.observe_outcome(
            JoinedOutcome(f"p{i}", "animal", "v1", 1e9 + i, "cat", float("nan"), (), label, 1e9 + i + 1, probabilities)
        )
    m = evaluator.metrics()["overall"]
    expected_log_loss = -(75 * np.log(0.7) + 25 * np.log(0.2)) / 100
    assert m["accuracy"] == 0.75 and m["log_loss"] == pytest.approx(expected_log_loss, abs=1e-6)
    assert m["brier"] == pytest.approx((75 * (0.09 + 0.04 + 0.01) + 25 * (0.49 + 0.64 + 0.01)) / 100, abs=1e-6)

    scores = MonitorConfig.model_validate({"models": [{"model_id": "s", "task": "binary_classification"}]})
    evaluator = ModelEvaluator("s", scores)
    for i, (score, label) in enumerate([(0.9, 1), (0.7, 0), (0.2, 0), (0.4, 1)]):
        evaluator.observe_outcome(
            JoinedOutcome(f"q{i}", "s", "v1", 1e9 + i, score, float("nan"), (), label, 1e9 + i + 1)
        )
    m = evaluator.metrics()["overall"]
    assert m["accuracy"] == 0.5 and m["roc_auc"] == 0.75  # the score is the positive-class probability


def at_seconds(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def test_cbpe_and_evaluator_state_is_strict_json_even_without_positives():
    evaluator = ModelEvaluator("churn", config(warmup_outcomes=200))
    rng = np.random.default_rng(83)
    records = [
        JoinedOutcome(f"p{i}", "churn", "v1", 1e9 + i, 0, float(rng.uniform(0, 0.4)), (), 0, 1e9 + i + 1)
        for i in range(300)
    ]
    evaluator.observe_outcomes(records)
    evaluator.close_window(at_seconds(1e9 + 300))
    state = json.loads(json.dumps(evaluator.to_state(), allow_nan=False))
    assert ModelEvaluator.from_state(state).metrics() == evaluator.metrics()


# ---------------------------------------------------------------- reading never consumes


def test_reading_metrics_processes_nothing_and_drops_no_finding():
    """A read between two observations must not flush the buffers: the error-rate jump's alarm
    is still returned by the next call that processes the batch, at the same outcome."""
    rng = np.random.default_rng(84)
    good = joined_records(3000, rng)
    label = (rng.random(3000) < 0.4).astype(int)
    bad = [
        JoinedOutcome(
            f"q{i}",
            "churn",
            "v1",
            1e9 + 3000 + i,
            int(1 - label[i]) if i % 2 else int(label[i]),
            0.8,
            (),
            int(label[i]),
            1e9 + 3060 + i,
        )  # fmt: skip
        for i in range(3000)
    ]
    records = good + bad
    straight = ModelEvaluator("churn", config(warmup_outcomes=2000), batch_size=512)
    expected = straight.observe_outcomes(records, list(range(6000))) + straight.flush()
    assert active(expected, AlertKind.performance_degradation)

    reader = ModelEvaluator("churn", config(warmup_outcomes=2000), batch_size=512)
    findings = []
    for k in range(0, 6000, 100):
        findings += reader.observe_outcomes(records[k : k + 100], list(range(k, k + 100)))
        state = reader.to_state()
        report = reader.metrics()
        assert report["overall"]["count"] == report["counters"]["outcomes"] == k + 100  # buffered ones count
        reader.window_metrics()
        reader.cbpe_report()
        assert reader.to_state() == state  # nothing processed by the reads
    findings += reader.flush()
    assert findings == expected


def test_window_metrics_include_buffered_outcomes_without_processing_them():
    evaluator = ModelEvaluator("churn", config(), batch_size=10_000)
    records = joined_records(1000, np.random.default_rng(85))
    evaluator.observe_outcomes(records[:400])
    evaluator.close_window(at_seconds(1e9 + 999.5))
    evaluator.observe_outcomes(records[400:])  # late labels of the closed window: buffered
    before = evaluator.to_state()
    assert [w["labelled"] for w in evaluator.window_metrics()] == [1000]
    assert evaluator.metrics()["overall"]["count"] == 1000
    assert evaluator.to_state() == before
    evaluator.flush()
    assert [w["labelled"] for w in evaluator.window_metrics()] == [1000]


def test_state_stops_growing_after_many_windows_and_late_labels_still_count():
    """Windows are remembered until their label coverage is final (a week by default); beyond
    `MAX_TRACKED_WINDOWS` old windows merge instead of piling up, and keep their counts."""
    from monitor.evaluation.ledger import MAX_TRACKED_WINDOWS

    evaluator = ModelEvaluator("churn", config(expected_label_coverage=0.5), batch_size=64, max_report_windows=5)
    rng = np.random.default_rng(86)
    per_window, n_windows, lag = 20, 1500, 400
    records = joined_records(per_window * n_windows, rng)
    sizes, observed = {}, 0
    for k in range(n_windows):
        evaluator.observe_outcomes(records[k * per_window : k * per_window + per_window // 2])  # on time
        if k >= lag:  # the other half of window k - lag's labels, `lag` windows late
            j = k - lag
            evaluator.observe_outcomes(records[j * per_window + per_window // 2 : (j + 1) * per_window])
            observed += per_window // 2
        observed += per_window // 2
        evaluator.close_window(at_seconds(1e9 + (k + 1) * per_window - 0.5))
        if k + 1 in (600, 1000, 1500):
            sizes[k + 1] = len(json.dumps(evaluator.to_state()))
    state = evaluator.to_state()
    assert len(state["windows"]) <= MAX_TRACKED_WINDOWS
    assert sizes[1500] <= sizes[600] * 1.02 and sizes[1000] <= sizes[600] * 1.02
    labelled = sum(w["labelled"] for w in state["windows"]) + state["open"]["labelled"]
    assert state["counters"]["outcomes_for_untracked_windows"] == 0
    assert labelled == observed == state["counters"]["outcomes"]
    indices = [w["index"] for w in state["windows"]]
    assert indices == sorted(indices) and indices[-1] == n_windows - 1 and indices[0] == 0
