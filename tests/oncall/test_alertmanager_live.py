"""A real Alertmanager (Debian's 0.25) running the repository's configuration on loopback: alerts
posted to its API v2 with the labels the Prometheus rules produce are inhibited, routed and
delivered to a webhook receiver started by the test, as the configuration says."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

from oncall_support import GENERATOR, http_json, wait_until

from monitor.contracts.alert import AlertKind
from monitor.contracts.config import AlertingConfig


def _generator():
    spec = importlib.util.spec_from_file_location("generate_rules", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RULES = _generator()


def kind_alert(kind: AlertKind, model: str, feature: str | None = None, severity: str | None = None) -> dict:
    """An alert as the kind's Prometheus rule makes it (labels of driftline_alert_active plus the
    rule's; empty labels are absent in Prometheus)."""
    labels = {
        "alertname": RULES.alert_name(kind),
        "kind": kind.value,
        "model": model,
        "severity": severity or AlertingConfig().severity[kind].value,
        "pipeline": "driftline",
        "job": "driftline",
    }
    if feature:
        labels["feature"] = feature
    return {
        "labels": labels,
        "annotations": {
            "summary": f"{kind.value} on {model}",
            "runbook_url": RULES.runbook_url(RULES.RUNBOOK_BASE_URL, kind.value),
        },
        "startsAt": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
    }


def pipeline_alert(name: str, severity: str, **labels: str) -> dict:
    return {
        "labels": {"alertname": name, "severity": severity, "pipeline": "driftline", **labels},
        "annotations": {"summary": name, "runbook_url": RULES.runbook_url(RULES.RUNBOOK_BASE_URL, name)},
    }


def post(alertmanager, *alerts: dict) -> None:
    http_json(alertmanager.url + "/api/v2/alerts", list(alerts), method="POST")


def states(alertmanager, expected: int) -> dict[tuple, dict]:
    """(alertname, model, feature) -> {"state", "inhibitedBy"}, once `expected` alerts are known
    and the inhibitor has settled (a source alert reaches the inhibitor a moment after the API)."""

    def read():
        alerts = http_json(alertmanager.url + "/api/v2/alerts")
        if len(alerts) < expected:
            return None
        return {
            (a["labels"]["alertname"], a["labels"].get("model"), a["labels"].get("feature")): a["status"]
            for a in alerts
        }

    return wait_until(read, 10, what=f"{expected} alerts in Alertmanager")


def wait_for_state(alertmanager, key: tuple, state: str, expected: int) -> dict[tuple, dict]:
    def reached():
        current = states(alertmanager, expected)
        return current if current[key]["state"] == state else None

    return wait_until(reached, 10, what=f"{key} to become {state}")


def test_data_quality_inhibits_drift_on_the_same_feature_only(alertmanager, webhook, amtool):
    dq = kind_alert(AlertKind.data_quality, "fraud", "amount")
    post(alertmanager, dq)
    wait_for_state(alertmanager, ("DriftlineDataQuality", "fraud", "amount"), "active", 1)
    post(
        alertmanager,
        kind_alert(AlertKind.feature_drift, "fraud", "amount"),
        kind_alert(AlertKind.feature_drift, "fraud", "age"),
        kind_alert(AlertKind.feature_drift, "churn", "amount"),  # same feature, another model
    )
    result = wait_for_state(alertmanager, ("DriftlineFeatureDrift", "fraud", "amount"), "suppressed", 4)
    assert result[("DriftlineFeatureDrift", "fraud", "age")]["state"] == "active"
    assert result[("DriftlineFeatureDrift", "churn", "amount")]["state"] == "active"
    assert len(result[("DriftlineFeatureDrift", "fraud", "amount")]["inhibitedBy"]) == 1

    # amtool sees the same thing as the API
    query = subprocess.run(
        [
            amtool,
            f"--alertmanager.url={alertmanager.url}",
            "alert",
            "query",
            "--inhibited",
            "-o",
            "json",
            "alertname=DriftlineFeatureDrift",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    inhibited = [a for a in json.loads(query.stdout) if a["status"]["state"] == "suppressed"]
    assert [(a["labels"]["model"], a["labels"]["feature"]) for a in inhibited] == [("fraud", "amount")]

    # the team's webhook gets the warning alerts, grouped by alert and model, without the inhibited one
    def delivered():
        alerts = webhook.alerts("/team")
        keys = {(a["labels"]["alertname"], a["labels"]["model"], a["labels"].get("feature")) for a in alerts}
        return keys if len(keys) >= 3 else None

    keys = wait_until(delivered, 15, what="team notifications")
    assert keys == {
        ("DriftlineDataQuality", "fraud", "amount"),
        ("DriftlineFeatureDrift", "fraud", "age"),
        ("DriftlineFeatureDrift", "churn", "amount"),
    }
    [dq_delivered] = [a for a in webhook.alerts("/team") if a["labels"]["alertname"] == "DriftlineDataQuality"]
    assert dq_delivered["annotations"]["runbook_url"] == (
        "https://github.com/driftline/driftline/blob/main/runbooks/data_quality.md"
    )
    groups = {(n["groupLabels"]["alertname"], n["groupLabels"]["model"]) for n in webhook.notifications("/team")}
    assert groups == {
        ("DriftlineDataQuality", "fraud"),
        ("DriftlineFeatureDrift", "fraud"),
        ("DriftlineFeatureDrift", "churn"),
    }
    assert webhook.notifications("/pager") == []


def test_labels_missing_mutes_performance_and_critical_alerts_page(alertmanager, webhook):
    post(alertmanager, kind_alert(AlertKind.labels_missing, "fraud"))
    wait_for_state(alertmanager, ("DriftlineLabelsMissing", "fraud", None), "active", 1)
    post(
        alertmanager,
        kind_alert(AlertKind.performance_degradation, "fraud"),  # inhibited: labels missing
        kind_alert(AlertKind.performance_degradation, "churn"),  # pages
        kind_alert(AlertKind.estimated_performance_drop, "churn"),  # inhibited: measured drop
    )
    result = wait_for_state(alertmanager, ("DriftlineEstimatedPerformanceDrop", "churn", None), "suppressed", 4)
    assert result[("DriftlinePerformanceDegradation", "fraud", None)]["state"] == "suppressed"
    assert result[("DriftlinePerformanceDegradation", "churn", None)]["state"] == "active"

    paged = wait_until(lambda: webhook.alerts("/pager"), 15, what="a page")
    assert [(a["labels"]["alertname"], a["labels"]["model"]) for a in paged] == [
        ("DriftlinePerformanceDegradation", "churn")
    ]
    assert paged[0]["labels"]["severity"] == "critical"
    assert paged[0]["annotations"]["runbook_url"].endswith("/runbooks/performance_degradation.md")


def test_worker_down_inhibits_the_pipeline_but_not_the_watchdog(alertmanager, webhook):
    post(alertmanager, pipeline_alert("DriftlineWorkerDown", "critical", job="driftline", instance="w1:9108"))
    wait_for_state(alertmanager, ("DriftlineWorkerDown", None, None), "active", 1)
    post(
        alertmanager,
        pipeline_alert("DriftlineWorkerDown", "critical", job="driftline", instance="w2:9108"),
        kind_alert(AlertKind.canary_regression, "fraud"),
        kind_alert(AlertKind.feature_drift, "fraud", "amount"),
        pipeline_alert("DriftlineConsumerLagGrowing", "warning", job="driftline", topic="predictions"),
        pipeline_alert("Watchdog", "none"),
    )
    result = wait_for_state(alertmanager, ("DriftlineCanaryRegression", "fraud", None), "suppressed", 6)
    assert result[("DriftlineFeatureDrift", "fraud", "amount")]["state"] == "suppressed"
    assert result[("DriftlineConsumerLagGrowing", None, None)]["state"] == "suppressed"
    assert result[("Watchdog", None, None)]["state"] == "active"
    workers = http_json(alertmanager.url + "/api/v2/alerts?filter=alertname%3D%22DriftlineWorkerDown%22")
    assert sorted(a["status"]["state"] for a in workers) == ["active", "active"]  # never inhibit each other

    wait_until(lambda: webhook.alerts("/watchdog"), 15, what="the watchdog heartbeat")
    wait_until(lambda: webhook.alerts("/pager"), 15, what="the worker-down page")
    time.sleep(2.5)  # two more group intervals: anything not inhibited would have been sent by now
    assert {a["labels"]["alertname"] for a in webhook.alerts("/pager")} == {"DriftlineWorkerDown"}
    assert webhook.alerts("/team") == []
