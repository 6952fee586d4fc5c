"""The on-call path end to end with the real pieces: predictions published to Kafka, a
`driftline worker` process, a real Prometheus scraping the worker's `/metrics` with the
repository's rules, a real Alertmanager with the repository's routing and inhibitions, and a
webhook receiver started by the test on loopback. A feature drifts: the webhook gets
`DriftlineFeatureDrift` with the labels and `runbook_url` the worker's alert carries; the
stream returns to normal: the worker resolves the alert and the webhook gets the resolution.

Test-only changes to the repository's files: loopback addresses, 1 s scrape and evaluation
intervals, `keep_firing_for` shortened from 5 min to 1 s (a test copy of the rules; the kind
rules have no `for:`), and 1 s Alertmanager grouping timers. The worker runs with small windows
and a small warm-up; its other settings are the defaults.
"""

from __future__ import annotations

import random
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from oncall_support import binary, http_json, running_prometheus, wait_until
from prometheus_client.parser import text_string_to_metric_families
from worker_support import log_tail, metrics_port, start_worker, stop_worker

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert, AlertKind, AlertStatus
from monitor.contracts.config import AlertingConfig, KafkaConfig
from monitor.kafka.settings import consumer_settings
from monitor.kafka.topics import ensure_topics

pytestmark = pytest.mark.broker


MODEL = "fraud-scorer"
FEATURE = "amount"
WARMUP = 400
"""Events forming the reference (uniform `amount` on [0, 1))."""
WINDOW = 100
"""Events per window: also the window tests' `min_events` (the default, 100)."""
DRIFTED = 400
"""Events with `amount` on [0.7, 1): far from the reference, yet inside its range, so the
data-quality rules (out of range) stay quiet and do not inhibit the drift alert."""
CLEAN_WINDOWS = AlertingConfig().resolve_after_clean_windows
NORMAL = (CLEAN_WINDOWS + 2) * WINDOW
"""Back to the reference: one window may still hold drifted events, then `CLEAN_WINDOWS` clean
ones resolve the alert; one spare."""
SETTINGS = {"reference": {"warmup_events": WARMUP}, "window": {"size_events": WINDOW}}
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def publish(kafka_config: KafkaConfig, first: int, last: int, *, drifted: bool) -> None:
    """Predictions `first` to `last - 1` of `MODEL`: `amount` uniform on [0, 1), or on [0.7, 1)
    when `drifted`; the score stays uniform (no prediction drift)."""
    rng = random.Random(first)
    with DriftlinePublisher(kafka_config) as publisher:
        for i in range(first, last):
            publisher.publish_prediction(
                model_id=MODEL,
                prediction_id=f"p{i}",
                features={FEATURE: rng.uniform(0.7, 1.0) if drifted else rng.random()},
                prediction=rng.random(),
                model_version="v1",
                timestamp=START + timedelta(seconds=i),
            )
        publisher.flush(timeout=10)
    assert publisher.failed == 0


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """The worker's `/metrics`: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def samples(metrics: dict[tuple[str, frozenset], float], name: str, **labels: str) -> dict[frozenset, float]:
    """Samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return {key: value for (sample, key), value in metrics.items() if sample == name and wanted <= key}


def drift_scores(metrics: dict[tuple[str, frozenset], float]) -> dict[str, tuple[float, float]]:
    """detector -> (score, threshold) exported for `FEATURE` of `MODEL`."""
    scores = samples(metrics, "driftline_drift_score", model=MODEL, feature=FEATURE)
    thresholds = samples(metrics, "driftline_drift_threshold", model=MODEL, feature=FEATURE)
    return {dict(key)["detector"]: (value, thresholds.get(key, float("nan"))) for key, value in scores.items()}


ALERT_ACTIVE_LABELS = frozenset(
    {"kind": "feature_drift", "model": MODEL, "feature": FEATURE, "slice": "", "severity": "warning"}.items()
)


def read_alerts(consumer: KafkaConsumer, alerts: list[Alert]) -> list[Alert]:
    alerts += [Alert.model_validate_json(record.value) for record in consumer]
    return alerts


def test_worker_alert_reaches_the_webhook_through_prometheus_and_alertmanager_then_resolves(
    tmp_path: Path, kafka_config: KafkaConfig, alertmanager, webhook
):
    binary("prometheus")  # skip, with the install command, before starting anything
    started = time.monotonic()
    ensure_topics(kafka_config)
    alerts_consumer = KafkaConsumer(
        kafka_config.topics.alerts,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=200),
    )
    worker = start_worker(tmp_path, kafka_config, SETTINGS)  # metrics.port 0: the worker logs its pick
    worker_log = tmp_path / "worker.log"
    alerts: list[Alert] = []

    def diagnosis() -> str:
        delivered = [(path, [a["labels"].get("alertname") for a in body["alerts"]]) for path, body in webhook.received]
        return f"\nwebhook got: {delivered}\nworker log:\n{log_tail(worker_log)}"

    try:
        port = metrics_port(worker_log)
        with running_prometheus(tmp_path, f"127.0.0.1:{port}", alertmanager.url) as prometheus:
            # -- drift: the worker fires, Prometheus turns driftline_alert_active into an alert,
            # Alertmanager routes it (warning -> team) to the webhook
            publish(kafka_config, 0, WARMUP, drifted=False)
            publish(kafka_config, WARMUP, WARMUP + DRIFTED, drifted=True)
            try:
                firing = wait_until(
                    lambda: [
                        a for a in webhook.alerts("/team", "firing") if a["labels"].get("kind") == "feature_drift"
                    ],
                    45,
                    what="the feature_drift alert at the team webhook",
                )
            except AssertionError as error:
                raise AssertionError(f"{error}{diagnosis()}") from None
            fired_after = time.monotonic() - started
            delivered = firing[0]
            assert delivered["labels"] == {
                "alertname": "DriftlineFeatureDrift",
                "kind": "feature_drift",
                "model": MODEL,
                "feature": FEATURE,
                "severity": "warning",
                "pipeline": "driftline",
                "job": "driftline",
            }
            assert delivered["annotations"]["runbook_url"].endswith("/feature_drift.md")
            assert delivered["annotations"]["summary"] == f"Model {MODEL}: feature {FEATURE} drifted from its reference"

            # the same alert the worker published on the alerts topic
            [worker_alert] = [
                a
                for a in wait_until(lambda: read_alerts(alerts_consumer, alerts), 10, what="the worker's alert")
                if a.kind is AlertKind.feature_drift
            ]
            assert (worker_alert.status, worker_alert.model_id, worker_alert.feature) == (
                AlertStatus.firing,
                MODEL,
                FEATURE,
            )
            assert delivered["annotations"]["runbook_url"] == worker_alert.runbook_url

            # the worker's /metrics while the alert fires: the alert, and the window test over its threshold
            def drifting():
                metrics = scrape(port)
                scores = drift_scores(metrics)
                alert_on = samples(metrics, "driftline_alert_active").get(ALERT_ACTIVE_LABELS) == 1
                return scores if alert_on and "ks" in scores and scores["ks"][0] > scores["ks"][1] else None

            scores = wait_until(drifting, 10, what="ks score over its threshold on the worker's /metrics")
            assert set(scores) == {"cusum", "ks"}  # the default numeric detectors
            assert all(0 < threshold < float("inf") for _, threshold in scores.values())

            # the heartbeat made the same trip; nothing paged (feature drift is a warning)
            wait_until(lambda: webhook.alerts("/watchdog"), 10, what="the Watchdog at its receiver")
            assert webhook.alerts("/pager") == []

            # -- back to normal: after CLEAN_WINDOWS clean windows the worker resolves the alert,
            # driftline_alert_active goes to 0 and the webhook gets the resolved notification
            publish(kafka_config, WARMUP + DRIFTED, WARMUP + DRIFTED + NORMAL, drifted=False)
            try:
                resolved = wait_until(
                    lambda: [
                        a for a in webhook.alerts("/team", "resolved") if a["labels"].get("kind") == "feature_drift"
                    ],
                    30,
                    what="the resolved feature_drift notification",
                )
            except AssertionError as error:
                raise AssertionError(f"{error}{diagnosis()}") from None
            resolved_after = time.monotonic() - started
            assert resolved[0]["labels"] == delivered["labels"]
            assert resolved[0]["startsAt"] == delivered["startsAt"]  # the same alert, not a new one

            read_alerts(alerts_consumer, alerts)
            drift_alerts = [(a.status, a.alert_id) for a in alerts if a.kind is AlertKind.feature_drift]
            assert drift_alerts == [
                (AlertStatus.firing, worker_alert.alert_id),
                (AlertStatus.resolved, worker_alert.alert_id),
            ]

            metrics = scrape(port)
            total = WARMUP + DRIFTED + NORMAL
            assert samples(metrics, "driftline_events_total", model=MODEL, type="prediction") == {
                frozenset({"model": MODEL, "type": "prediction"}.items()): total
            }
            assert samples(metrics, "driftline_alert_active") == {ALERT_ACTIVE_LABELS: 0}
            assert set(drift_scores(metrics)) == {"cusum", "ks"}
            # Alertmanager no longer lists it; only feature drift went to the team
            states = http_json(alertmanager.url + "/api/v2/alerts?filter=alertname%3D%22DriftlineFeatureDrift%22")
            assert states == []
            assert {a["labels"]["alertname"] for a in webhook.alerts("/team")} == {"DriftlineFeatureDrift"}
            # Prometheus scraped the worker (its `up` is 1)
            up = http_json(prometheus + "/api/v1/query?query=up%7Bjob%3D%22driftline%22%7D")["data"]["result"]
            assert [sample["value"][1] for sample in up] == ["1"]
        print(f"fired after {fired_after:.1f} s, resolved after {resolved_after:.1f} s (from worker start)")
    finally:
        alerts_consumer.close()
        stop_worker(worker)
