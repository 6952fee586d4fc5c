"""The Prometheus side: the rules file is valid, fresh, covers every alert kind with the labels
and runbook link the core uses, names only real metrics, and its unit tests pass in promtool."""

from __future__ import annotations

import doctest
import importlib.util
import subprocess
import sys

import pytest
import yaml
from oncall_support import (
    GENERATOR,
    PROMETHEUS_CONFIG,
    PROMETHEUS_SERIES,
    RULES,
    RULES_TEST,
    driftline_series,
    unknown_names,
)

from monitor.contracts.alert import AlertKind
from monitor.contracts.config import AlertingConfig

PIPELINE_RULES = {
    "DriftlineWorkerDown",
    "DriftlineConsumerLagGrowing",
    "DriftlineDeadLetterRateHigh",
    "DriftlineUnreadableRecords",
    "DriftlineModelFailing",
    "DriftlineOutcomesStopped",
    "DriftlineStateTooLarge",
    "DriftlineLabelCoverageFalling",
    "Watchdog",
}


def _generator():
    spec = importlib.util.spec_from_file_location("generate_rules", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def kind_rules() -> dict[str, dict]:
    """Alert kind -> its rule (the one whose expression selects `kind="<kind>"`)."""
    found = {}
    for rule in rules():
        for kind in AlertKind:
            if f'driftline_alert_active{{kind="{kind.value}"}}' in rule["expr"]:
                found[kind.value] = rule
    return found


def test_promtool_check_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool):
    """Runs every case of driftline.rules.test.yml: each rule fires with its exact labels and
    annotations, and the control series next to it does not."""
    result = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name], capture_output=True, text=True, cwd=RULES_TEST.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_unit_test():
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules()} <= tested


def test_promtool_check_config(promtool):
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert "driftline" in {job["job_name"] for job in config["scrape_configs"]}
    assert config["rule_files"] == ["rules/driftline.rules.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


def test_rules_file_is_generated_from_current_code():
    assert _generator().render() == RULES.read_text(), (
        "deploy/prometheus/rules/driftline.rules.yml is stale: run .venv/bin/python deploy/prometheus/generate_rules.py"
    )


def test_generator_doctests():
    failures, attempted = doctest.testmod(_generator())
    assert attempted and not failures


def test_generator_check_mode_reports_staleness(tmp_path):
    stale = tmp_path / "rules.yml"
    stale.write_text("groups: []\n")
    command = [sys.executable, str(GENERATOR), "--check", "--out", str(stale)]
    assert subprocess.run(command, capture_output=True).returncode == 1
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(stale)], check=True, capture_output=True)
    assert subprocess.run(command, capture_output=True).returncode == 0


def test_every_alert_kind_has_exactly_one_rule():
    found = kind_rules()
    assert sorted(found) == sorted(kind.value for kind in AlertKind)
    assert len([r for r in rules() if "driftline_alert_active" in r["expr"]]) == len(AlertKind)


@pytest.mark.parametrize("kind", list(AlertKind), ids=str)
def test_kind_rule_labels_and_runbook_match_the_core(kind):
    rule = kind_rules()[kind.value]
    core_runbook = f"{AlertingConfig().runbook_base_url.rstrip('/')}/{kind.value}.md"
    assert rule["annotations"]["runbook_url"] == core_runbook
    assert rule["annotations"]["summary"]
    assert rule["labels"]["pipeline"] == "driftline"
    default = AlertingConfig().severity[kind].value
    assert rule["labels"]["severity"] == "{{ with $labels.severity }}{{ . }}{{ else }}" + default + "{{ end }}"
    # the series' own labels (kind, model, feature, slice, severity) pass through: no aggregation drops them
    assert rule["expr"].startswith("max without (instance) (")


def test_pipeline_rules_exist_with_severity_summary_and_runbook():
    by_name = {rule["alert"]: rule for rule in rules()}
    assert PIPELINE_RULES <= set(by_name)
    for name in PIPELINE_RULES:
        rule = by_name[name]
        assert rule["labels"]["severity"] in {"critical", "warning", "none"}, name
        assert rule["labels"]["pipeline"] == "driftline", name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook_url"].endswith(f"/runbooks/{name}.md"), name
    assert by_name["Watchdog"]["expr"] == "vector(1)"
    assert 'up{job="driftline"} == 0' in by_name["DriftlineWorkerDown"]["expr"]


def test_every_rule_carries_the_pipeline_label_the_worker_down_inhibition_needs():
    assert all(rule["labels"]["pipeline"] == "driftline" for rule in rules())


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_rule_names_only_metrics_and_labels_that_exist(rule):
    known = {**driftline_series(), **PROMETHEUS_SERIES}
    assert unknown_names(rule["expr"], known) == []


def test_unknown_metric_and_label_are_caught():
    known = {**driftline_series(), **PROMETHEUS_SERIES}
    assert unknown_names('rate(driftline_event_total{model="a"}[5m])', known) == [
        "unknown metric 'driftline_event_total'"
    ]
    assert unknown_names('driftline_consumer_lag_messages{model="a"}', known) == [
        "driftline_consumer_lag_messages has no label 'model'"
    ]
    assert unknown_names("sum by (modle) (driftline_label_coverage_ratio)", known) == [
        "grouping by unknown label 'modle'"
    ]
