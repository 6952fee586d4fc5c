"""`PlaybookRunner` on the real broker with a real HTTP server on loopback.

One scenario covers the cases an operator cares about, then a second runner (a new consumer
group reading every alert again, the same audit file) proves a restart does not act twice.
A storm of 1,000 alerts checks the global rate limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from playbook_support import LoopbackServer, make_alert

from monitor.contracts.config import KafkaConfig, MonitorConfig
from monitor.contracts.retrain import Approval, Outcome, PlaybookDecision, RetrainRequest
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import ensure_topics
from monitor.playbooks.audit import AuditTrail
from monitor.playbooks.runner import PlaybookRunner

pytestmark = pytest.mark.broker


def _config(kafka: KafkaConfig, tmp_path: Path, group: str, rules: list[dict], **playbooks: Any) -> MonitorConfig:
    return MonitorConfig.model_validate(
        {
            "kafka": kafka.model_dump(),
            "playbooks": {
                "rules": rules,
                "start_from": "earliest",
                "audit_file": str(tmp_path / "audit.jsonl"),
                "consumer_group": f"{kafka.consumer_group}.{group}",
                "retry": {"attempts": 3, "backoff_seconds": 0.05},
                **playbooks,
            },
        }
    )


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _read_topic(kafka: KafkaConfig, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic, **consumer_settings(kafka, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=1500)
    )
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


class Running:
    """A runner in a thread, collecting its decisions through the callback."""

    def __init__(self, config: MonitorConfig):
        self.decisions: list[PlaybookDecision] = []
        self.runner = PlaybookRunner(config, on_decision=self.decisions.append)

    def __enter__(self) -> Running:
        self.thread, self.stop = self.runner.start()
        _wait(self.runner.ready.is_set, 30, "the runner's partitions")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()

    def alert_decisions(self) -> int:
        """Alerts decided (each gives at least one decision with an alerts-topic source)."""
        return len({d.source for d in self.decisions if d.source and "approvals" not in d.source})


def test_runner_acts_once_per_case_and_not_again_after_a_restart(tmp_path, kafka_config, monkeypatch):
    monkeypatch.setenv("TEST_ROLLBACK_TOKEN", "t0ken")
    ensure_topics(kafka_config)
    with LoopbackServer({"/fail": 503}) as server:
        rules = [
            {"name": "retrain-drift", "kinds": ["feature_drift"], "dry_run": False, "action": {"type": "retrain"}},
            {
                "name": "rollback-perf",
                "kinds": ["performance_degradation"],
                "dry_run": False,
                "action": {
                    "type": "rollback",
                    "target_versions": {"fraud": "v1"},
                    "http": {
                        "url": server.url + "/models/{model_id}/rollback?to={target_version}",
                        "headers_from_env": {"Authorization": "TEST_ROLLBACK_TOKEN"},
                    },
                },
            },
            {
                "name": "notify-serving",
                "kinds": ["serving_degradation"],
                "dry_run": False,
                "action": {"type": "notify", "webhook": {"url": server.url + "/fail/{kind}"}},
            },
            {"name": "review-labels", "kinds": ["labels_missing"], "action": {"type": "human_review"}},
        ]
        drift = make_alert("feature_drift", feature="amount")
        perf = make_alert("performance_degradation", feature=None)
        alerts = [
            b"\xff not an alert",
            drift.model_dump_json().encode(),
            drift.model_dump_json().encode(),  # redelivered
            perf.model_dump_json().encode(),
            make_alert("serving_degradation", feature=None).model_dump_json().encode(),
            make_alert("labels_missing", feature=None).model_dump_json().encode(),
            make_alert("prediction_drift", feature=None, status="resolved", firing_for=60).model_dump_json().encode(),
            make_alert("data_quality", feature="age").model_dump_json().encode(),
            make_alert("feature_drift", feature="age").model_dump_json().encode(),  # muted by the one above
        ]
        config = _config(kafka_config, tmp_path, "first", rules)
        with KafkaProducer(**producer_settings(kafka_config)) as producer, Running(config) as first:
            for raw in alerts:
                producer.send(kafka_config.topics.alerts, key=b"fraud", value=raw)
            producer.flush(timeout=10)
            _wait(lambda: any(d.outcome is Outcome.awaiting_approval for d in first.decisions), 20, "the rollback")
            approval = Approval(fingerprint=perf.fingerprint, approved_by="alice").model_dump_json().encode()
            producer.send(kafka_config.topics.approvals, value=approval)
            producer.flush(timeout=10)
            _wait(lambda: first.alert_decisions() == len(alerts) and server.requests_to("/models"), 30, "every alert")
            _wait(lambda: len(server.requests_to("/fail")) == 3, 10, "the retried webhook")

        decisions = AuditTrail(tmp_path / "audit.jsonl").read()
        by = {(d.rule, d.outcome.value) for d in decisions}
        reasons = [d.reason for d in decisions]
        assert ("retrain-drift", "acted") in by and ("rollback-perf", "acted") in by
        assert [d.outcome.value for d in decisions if d.rule == "notify-serving"] == [
            "started",
            "retried",
            "retried",
            "failed",
        ]
        assert ("review-labels", "dry_run") in by
        assert any(r.startswith("invalid alert") for r in reasons)
        assert "already handled for this firing period" in reasons
        assert "resolved alert" in reasons
        assert any(r.startswith("muted by firing alert") for r in reasons)
        assert "approved by alice" in reasons

        [rollback] = server.requests_to("/models")
        assert rollback["path"] == "/models/fraud/rollback?to=v1"
        assert rollback["headers"]["Authorization"] == "t0ken"
        assert rollback["body"]["to_version"] == "v1" and rollback["body"]["fingerprint"] == perf.fingerprint
        retrain_requests = _read_topic(kafka_config, kafka_config.topics.retrain_requests)
        [request] = [RetrainRequest.model_validate_json(value) for value in retrain_requests]
        assert request.alert.evidence == drift.evidence and request.model_id == "fraud"
        assert request.data_window.end == drift.evidence.window_end

        # restart: a new consumer group reads every alert again, the audit file remembers
        with Running(_config(kafka_config, tmp_path, "second", rules)) as second:
            _wait(lambda: second.alert_decisions() == len(alerts), 30, "the redelivered alerts")
        assert not {Outcome.started, Outcome.acted, Outcome.failed} & {d.outcome for d in second.decisions}
        assert len(server.requests_to("/models")) == 1 and len(server.requests_to("/fail")) == 3
        assert len(_read_topic(kafka_config, kafka_config.topics.retrain_requests)) == 1

    # every line of the audit file is on the audit topic
    file_lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_bytes().splitlines()]
    topic_lines = [json.loads(value) for value in _read_topic(kafka_config, kafka_config.topics.audit)]
    assert len(file_lines) > 20
    assert sorted(map(json.dumps, topic_lines)) == sorted(map(json.dumps, file_lines))


def test_a_storm_of_1000_alerts_acts_no_more_than_the_rate_limit(tmp_path, kafka_config):
    ensure_topics(kafka_config)
    with LoopbackServer() as server:
        rules = [
            {
                "name": "notify-drift",
                "kinds": ["feature_drift"],
                "dry_run": False,
                "action": {"type": "notify", "webhook": {"url": server.url + "/hook"}},
            }
        ]
        config = _config(kafka_config, tmp_path, "storm", rules, rate_limit={"actions": 5, "per_seconds": 60})
        with KafkaProducer(**producer_settings(kafka_config, linger_ms=5)) as producer, Running(config) as running:
            started = time.monotonic()
            for i in range(1000):
                alert = make_alert(model_id=f"model-{i}")
                producer.send(
                    kafka_config.topics.alerts, key=alert.model_id.encode(), value=alert.model_dump_json().encode()
                )
            producer.flush(timeout=10)
            _wait(lambda: running.alert_decisions() == 1000, 40, "1000 decisions")
            elapsed = time.monotonic() - started
        acted = [d for d in running.decisions if d.outcome is Outcome.acted]
        limited = [d for d in running.decisions if d.reason.startswith("rate limited")]
        assert 5 <= len(acted) <= 5 + int(elapsed / 12)
        assert len(acted) + len(limited) == 1000
        assert len(server.requests_to("/hook")) == len(acted)


def test_the_runner_survives_a_broker_restart(tmp_path):
    """Own embedded broker, stopped and started again on the same port (empty, as it loses
    everything): the runner keeps running and acts on an alert sent after the restart."""
    from monitor.kafka.broker import EmbeddedBroker

    broker = EmbeddedBroker().start()
    try:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, profile="embedded", consumer_group="restart")
        rules = [{"name": "retrain-drift", "kinds": ["feature_drift"], "dry_run": False, "action": {"type": "retrain"}}]
        ensure_topics(kafka)
        with Running(_config(kafka, tmp_path, "restart", rules, rate_limit={"actions": 100})) as running:

            def publish(model_id: str) -> None:
                producer = KafkaProducer(**producer_settings(kafka))
                alert = make_alert(model_id=model_id)
                producer.send(kafka.topics.alerts, key=model_id.encode(), value=alert.model_dump_json().encode())
                producer.flush(timeout=10)
                producer.close()

            def acted_for(model_id: str) -> bool:
                return any(d.model_id == model_id and d.outcome is Outcome.acted for d in running.decisions)

            publish("before")
            _wait(lambda: acted_for("before"), 20, "the alert before the restart")
            broker.stop()
            time.sleep(2)
            broker = EmbeddedBroker(port=broker.port).start()
            ensure_topics(kafka)
            publish("after")
            _wait(lambda: acted_for("after"), 60, "the alert after the restart")
            assert running.thread.is_alive()
    finally:
        broker.stop()
