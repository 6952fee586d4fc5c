"""Alertmanager inhibits a slice's drift alert while the same drift fires on all traffic, as the
core mutes it (`AlertLifecycle._is_muted`), and inhibits nothing else on that account."""

from __future__ import annotations

import re

import pytest
import yaml
from oncall_support import ALERTMANAGER_CONFIG

_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"(.*)"\s*$')


def inhibited(source: dict[str, str], target: dict[str, str]) -> bool:
    """Whether an inhibit rule lets `source` inhibit `target` (Alertmanager's matcher semantics:
    a missing label is the empty string)."""

    def matches(matchers: list[str], labels: dict[str, str]) -> bool:
        for matcher in matchers:
            name, op, value = _MATCHER.match(matcher).groups()
            actual = labels.get(name, "")
            full = re.fullmatch(value, actual) is not None
            if not {"=": actual == value, "!=": actual != value, "=~": full, "!~": not full}[op]:
                return False
        return True

    return any(
        matches(rule["source_matchers"], source)
        and matches(rule["target_matchers"], target)
        and all(source.get(name, "") == target.get(name, "") for name in rule.get("equal", []))
        for rule in yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["inhibit_rules"]
    )


@pytest.mark.parametrize("kind", ["feature_drift", "prediction_drift"])
def test_all_traffic_drift_inhibits_the_same_drift_on_a_slice(kind):
    feature = {"feature": "amount"} if kind == "feature_drift" else {}
    all_traffic = {"kind": kind, "model": "fraud", **feature}
    assert inhibited(all_traffic, {**all_traffic, "slice": "country=DE"})
    assert not inhibited(all_traffic, {**all_traffic, "model": "churn", "slice": "country=DE"})
    assert not inhibited({**all_traffic, "slice": "country=DE"}, all_traffic)
    if feature:
        assert not inhibited(all_traffic, {**all_traffic, "feature": "age", "slice": "country=DE"})


def test_a_slice_regression_is_not_inhibited_by_drift():
    assert not inhibited(
        {"kind": "feature_drift", "model": "fraud"},
        {"kind": "slice_regression", "model": "fraud", "slice": "country=DE"},
    )
