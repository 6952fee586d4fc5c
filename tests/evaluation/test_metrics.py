"""Metrics against reference computations on the same data (scikit-learn's definitions, in numpy)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.contracts.config import CostConfig
from monitor.evaluation.metrics import (
    RELIABILITY_BINS,
    MetricsAccumulator,
    OutcomeBatch,
    ServingStats,
)
from monitor.evaluation.significance import LossStats, difference_test


def exact_roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney: average ranks (ties share their mean rank)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reference_per_class(y_true, y_pred, classes):
    out = {}
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        predicted = np.sum(y_pred == c)
        actual = np.sum(y_true == c)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[c] = (precision, recall, f1, actual)
    return out


@pytest.fixture
def binary_data():
    rng = np.random.default_rng(3)
    n = 20_000
    y = (rng.random(n) < 0.3).astype(np.int64)
    # Informative, slightly miscalibrated scores with many exact ties and extremes.
    score = 1 / (1 + np.exp(-(1.5 * y - 0.8 + rng.normal(0, 1.2, n))))
    score[:200] = 0.5
    score[200:300] = 1.0
    score[300:400] = 0.0
    score = np.round(score, 4)
    prediction = (score >= 0.5).astype(np.int64)
    return y, prediction, score


def test_binary_classification_metrics_match_reference(binary_data):
    y, prediction, score = binary_data
    acc = MetricsAccumulator("classification", n_groups=1, n_classes=2)
    batch = OutcomeBatch.classification(prediction, y, score, positive=1)
    acc.update(np.zeros(len(y), dtype=np.int64), np.arange(len(y)), batch)
    m = acc.summary(0, class_names=["0", "1"], positive=1, cost=CostConfig(false_positive=1.0, false_negative=5.0))

    assert m["count"] == len(y)
    assert m["accuracy"] == pytest.approx(np.mean(prediction == y), abs=1e-4)
    ref = reference_per_class(y, prediction, [0, 1])
    assert m["precision"] == pytest.approx(ref[1][0], abs=1e-4)
    assert m["recall"] == pytest.approx(ref[1][1], abs=1e-4)
    assert m["f1"] == pytest.approx(ref[1][2], abs=1e-4)
    assert m["macro_f1"] == pytest.approx((ref[0][2] + ref[1][2]) / 2, abs=1e-4)
    for c in (0, 1):
        assert m["per_class"][str(c)]["f1"] == pytest.approx(ref[c][2], abs=1e-4)
        assert m["per_class"][str(c)]["support"] == ref[c][3]

    p = np.clip(score, 1e-15, 1 - 1e-15)
    log_loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert m["log_loss"] == pytest.approx(log_loss, rel=1e-5)
    assert m["brier"] == pytest.approx(np.mean((score - y) ** 2), abs=1e-6)

    exact = exact_roc_auc(y, score)
    assert abs(m["roc_auc"] - exact) <= m["roc_auc_max_error"] + 1e-4
    assert m["roc_auc_max_error"] < 0.005
    assert m["roc_auc"] == pytest.approx(exact, abs=0.002)

    bins = np.minimum((score * RELIABILITY_BINS).astype(int), RELIABILITY_BINS - 1)
    ece = sum(
        np.sum(bins == b) / len(y) * abs(score[bins == b].mean() - y[bins == b].mean())
        for b in range(RELIABILITY_BINS)
        if np.any(bins == b)
    )
    assert m["ece"] == pytest.approx(ece, abs=1e-6)
    table = m["reliability"]
    assert sum(row[2] for row in table) == len(y)
    b = 7
    assert table[b][3] == pytest.approx(score[bins == b].mean(), abs=1e-4)
    assert table[b][4] == pytest.approx(y[bins == b].mean(), abs=1e-4)

    false_positive = np.sum((prediction == 1) & (y == 0))
    false_negative = np.sum((prediction == 0) & (y == 1))
    assert (m["false_positives"], m["false_negatives"]) == (false_positive, false_negative)
    assert m["cost_per_1000"] == pytest.approx(1000 * (false_positive + 5 * false_negative) / len(y), abs=1e-3)


def test_multiclass_metrics_match_reference():
    rng = np.random.default_rng(5)
    n, k = 5000, 4
    y = rng.integers(0, k, n)
    prediction = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    prediction[prediction == 3] = 2  # class 3 is never predicted: precision undefined, counted 0
    acc = MetricsAccumulator("classification", n_groups=1, n_classes=k)
    acc.update(np.zeros(n, dtype=np.int64), np.arange(n), OutcomeBatch.classification(prediction, y))
    m = acc.summary(0, class_names=["a", "b", "c", "d"])
    ref = reference_per_class(y, prediction, range(k))
    assert m["accuracy"] == pytest.approx(np.mean(y == prediction), abs=1e-4)
    assert m["macro_f1"] == pytest.approx(np.mean([ref[c][2] for c in range(k)]), abs=1e-4)
    assert m["macro_precision"] == pytest.approx(np.mean([ref[c][0] for c in range(k)]), abs=1e-4)
    assert m["macro_recall"] == pytest.approx(np.mean([ref[c][1] for c in range(k)]), abs=1e-4)
    assert m["per_class"]["d"]["precision"] == 0.0 and m["per_class"]["d"]["recall"] == 0.0


def test_regression_metrics_match_reference():
    rng = np.random.default_rng(9)
    label = rng.normal(10, 3, 3000)
    prediction = label + rng.normal(0.5, 1.0, 3000)
    acc = MetricsAccumulator("regression")
    acc.update(np.zeros(3000, dtype=np.int64), np.arange(3000), OutcomeBatch.regression(prediction, label))
    m = acc.summary(0)
    assert m["mae"] == pytest.approx(np.mean(np.abs(prediction - label)), abs=1e-6)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((prediction - label) ** 2)), abs=1e-6)
    assert m["bias"] == pytest.approx(np.mean(prediction - label), abs=1e-6)


def test_groups_batches_and_merge_equal_one_pass_per_group(binary_data):
    y, prediction, score = binary_data
    group = np.arange(len(y)) % 3
    whole = MetricsAccumulator("classification", n_groups=3, n_classes=2)
    halves = [MetricsAccumulator("classification", n_groups=3, n_classes=2) for _ in range(2)]
    batch = OutcomeBatch.classification(prediction, y, score, positive=1)
    whole.update(group, np.arange(len(y)), batch)
    cut = len(y) // 2
    for half, rows in zip(halves, (np.arange(cut), np.arange(cut, len(y))), strict=True):
        half.update(group[rows], rows, batch)
    halves[0].merge(halves[1])
    for g in range(3):
        rows = group == g
        alone = MetricsAccumulator("classification", n_groups=1, n_classes=2)
        alone.update(np.zeros(rows.sum(), dtype=np.int64), np.flatnonzero(rows), batch)
        expected = alone.summary(0, ["0", "1"], 1)
        assert whole.summary(g, ["0", "1"], 1) == expected
        assert halves[0].summary(g, ["0", "1"], 1) == expected


def test_accumulator_state_round_trips_as_json(binary_data):
    y, prediction, score = binary_data
    acc = MetricsAccumulator("classification", n_groups=2, n_classes=2)
    acc.update(np.arange(len(y)) % 2, np.arange(len(y)), OutcomeBatch.classification(prediction, y, score, 1))
    back = MetricsAccumulator.from_state(json.loads(json.dumps(acc.to_state(), allow_nan=False)))
    assert back.summary(1, ["0", "1"], 1) == acc.summary(1, ["0", "1"], 1)


def test_serving_stats_quantiles_and_error_rate():
    rng = np.random.default_rng(1)
    latency = rng.exponential(20.0, 10_000)
    stats = ServingStats()
    for i, value in enumerate(latency):
        stats.add(float(value), "timeout" if i % 50 == 0 else "ok")
    summary = stats.summary()
    assert summary["request_error_rate"] == 0.02
    # KLL (k=200) ranks are within 1.65% with 99% confidence (datasketches' normalized rank error),
    # and the sketch's compaction is random: compare ranks, within that bound (0.005 failed once).
    assert np.mean(latency <= summary["latency_ms_p99"]) == pytest.approx(0.99, abs=0.0165)
    assert np.mean(latency <= summary["latency_ms_p50"]) == pytest.approx(0.50, abs=0.015)
    back = ServingStats.from_state(json.loads(json.dumps(stats.to_state(), allow_nan=False)))
    assert back.summary() == summary


def test_two_proportion_test_matches_the_textbook_formula():
    base, other = LossStats(1000, 100, 100), LossStats(400, 60, 60)
    z, p_value = difference_test(base, other, proportion=True)
    pooled = 160 / 1400
    expected = (0.15 - 0.10) / np.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 400))
    assert z == pytest.approx(expected)
    assert 0 < p_value < 0.01
    assert difference_test(other, base, proportion=True)[1] > 0.99  # one-sided


def test_invalid_task_fails_in_the_constructor():
    with pytest.raises(ValueError, match="Valid values are"):
        MetricsAccumulator("ranking")
