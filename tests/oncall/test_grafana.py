"""The Grafana dashboard: valid JSON, a model variable, a data source variable, every query
naming only Driftline's metrics and labels, and every query valid PromQL for promtool."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from oncall_support import DASHBOARD, DEPLOY, PROMETHEUS_SERIES, driftline_series, unknown_names

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$model": ".*", "$metric": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def expressions() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel.get("targets", [])]


def as_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_dashboard_has_model_and_data_source_variables():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["model"]["query"]["query"] == "label_values(driftline_events_total, model)"
    assert variables["model"]["definition"] == "label_values(driftline_events_total, model)"
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"


def test_every_query_uses_the_data_source_variable():
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_panels_cover_what_on_call_needs():
    text = " ".join(expr for _, expr in expressions())
    for metric in (
        "driftline_events_total",
        "driftline_invalid_events_total",
        "driftline_drift_score",
        "driftline_drift_threshold",
        "driftline_model_performance",
        "driftline_label_coverage_ratio",
        "driftline_alert_active",
        "driftline_consumer_lag_messages",
    ):
        assert metric in text, metric
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("title", "expr"), expressions(), ids=[t for t, _ in expressions()])
def test_query_names_only_metrics_and_labels_from_metrics_py(title, expr):
    # `up` and `ALERTS` are the only other series: Prometheus writes them itself.
    assert unknown_names(as_promql(expr), {**driftline_series(), **PROMETHEUS_SERIES}) == []


def test_variable_queries_name_only_driftline_metrics():
    known = driftline_series()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((\w+)(?:\{.*\})?, (\w+)\)", variable["query"]["query"]).groups()
        assert metric in known and label in known[metric], variable["name"]


def test_every_query_is_valid_promql(promtool, tmp_path):
    """promtool parses each query (Grafana variables replaced by plain values) as a recording rule."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
                    for i, (_, expr) in enumerate(expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_files_point_at_the_dashboard():
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/driftline.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    assert provider["providers"][0]["options"]["path"]
