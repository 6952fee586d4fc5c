"""`PlaybookRunner`: the Kafka shell around `PlaybookEngine`.

It consumes `alerts` and `approvals` in its own consumer group (`playbooks.consumer_group`),
hands each record to the engine, and commits the offsets once a batch is decided (at least
once; the engine's idempotency keys make a redelivered alert harmless). It publishes retraining
and review requests (waiting for the broker's acknowledgement, so a failure is retried and
audited) and every decision to the `audit` topic.

No exception leaves the loop: a broker that goes away makes kafka-python reconnect by itself;
anything else is logged, counted in `errors`, and the clients are rebuilt after a pause
(1 s, doubling to 30 s). Stop it with the `threading.Event` given to `run`, or use `run_for`.

Run one runner per audit file: its memory (idempotency keys, cooldowns, approvals) is that file.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

from monitor.contracts.config import MonitorConfig
from monitor.contracts.retrain import PlaybookDecision
from monitor.kafka.settings import close_producer, consumer_settings, producer_settings
from monitor.kafka.topics import ensure_topics
from monitor.playbooks.actions import ActionExecutor
from monitor.playbooks.audit import AuditTrail
from monitor.playbooks.engine import OnDecision, PlaybookEngine

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
SEND_TIMEOUT_SECONDS = 10.0
MAX_RECONNECT_PAUSE_SECONDS = 30.0


@dataclass
class RunSummary:
    """What one `run` did."""

    alerts: int = 0
    approvals: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    """Exceptions caught in the loop (connection failures, commit failures, ...)."""
    audit_publish_errors: int = 0
    seconds: float = 0.0


class _SetWhenAssigned(ConsumerRebalanceListener):
    def __init__(self, event: threading.Event):
        self.event = event

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.event.set()


class PlaybookRunner:
    """Consume alerts and approvals, decide and act, until stopped.

    `on_decision(decision)` is called for every decision as it is made (the demo shows them
    beside the alerts); `clock` and `sleep` are for tests."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        on_decision: OnDecision | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        create_topics: bool = True,
    ):
        self.config = config
        self.on_decision = on_decision
        self.clock = clock
        self.sleep = sleep
        self.create_topics = create_topics
        self._producer: Any = None
        self._audit_publish_errors = 0
        self.ready = threading.Event()
        """Set once the consumer has its partitions (tests and the demo wait for it)."""

    # --- the producer, as the engine sees it --------------------------------------------------

    def _publish_audit(self, key: bytes | None, value: bytes) -> None:
        if self._producer is None:
            raise RuntimeError("no producer yet")

        def failed(exc: BaseException) -> None:
            self._audit_publish_errors += 1
            log.warning("audit topic: %s", exc)

        self._producer.send(self.config.kafka.topics.audit, key=key, value=value).add_errback(failed)

    def _publish_and_wait(self, topic: str, key: bytes | None, value: bytes) -> dict[str, Any]:
        if self._producer is None:
            raise RuntimeError("no producer yet")
        metadata = self._producer.send(topic, key=key, value=value).get(timeout=SEND_TIMEOUT_SECONDS)
        return {"topic": metadata.topic, "partition": metadata.partition, "offset": metadata.offset}

    # --- the loop -----------------------------------------------------------------------------

    def _connect(self) -> Any:
        kafka, playbooks = self.config.kafka, self.config.playbooks
        if self.create_topics:
            try:
                ensure_topics(kafka)
            except Exception as exc:  # the topics may exist already; the consumer will tell
                log.warning("could not ensure topics: %s", exc)
        settings = producer_settings(kafka, acks="all", linger_ms=5, client_id="driftline-playbooks")
        self._producer = KafkaProducer(**settings)
        consumer = KafkaConsumer(
            **consumer_settings(
                kafka,
                group_id=playbooks.consumer_group,
                enable_auto_commit=False,
                auto_offset_reset=playbooks.start_from,
                client_id="driftline-playbooks",
            )
        )
        consumer.subscribe([kafka.topics.alerts, kafka.topics.approvals], listener=_SetWhenAssigned(self.ready))
        return consumer

    def _close(self, consumer: Any) -> None:
        for closing in (
            lambda: consumer is not None and consumer.close(autocommit=False),
            lambda: self._producer is not None and self._producer.flush(timeout=SEND_TIMEOUT_SECONDS),
            lambda: self._producer is not None and close_producer(self._producer, timeout=5),
        ):
            try:
                closing()
            except Exception as exc:
                log.warning("closing: %s", exc)
        self._producer = None

    def run(self, stop: threading.Event) -> RunSummary:
        """Run until `stop` is set; never raises for a bad alert or a broker failure."""
        started = time.monotonic()
        summary = RunSummary()
        playbooks, topics = self.config.playbooks, self.config.kafka.topics
        audit = AuditTrail(playbooks.audit_file, publish=self._publish_audit)
        executor = ActionExecutor(publish=self._publish_and_wait)
        engine = PlaybookEngine(
            playbooks, topics, executor, audit, clock=self.clock, sleep=self.sleep, on_decision=self.on_decision
        )
        if not playbooks.rules:
            log.warning("no playbook rules: every alert is audited as skipped (no matching rule)")
        consumer = None
        pause = 1.0
        try:
            while not stop.is_set():
                try:
                    if consumer is None:
                        consumer = self._connect()
                    batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                    for records in batch.values():
                        for record in records:
                            source = f"{record.topic}/{record.partition}/{record.offset}"
                            if record.topic == topics.approvals:
                                summary.approvals += 1
                                engine.handle_approval_bytes(record.value or b"", source)
                            else:
                                summary.alerts += 1
                                engine.handle_alert_bytes(record.value or b"", source)
                    if batch:
                        self._producer.flush(timeout=SEND_TIMEOUT_SECONDS)
                        consumer.commit()
                    pause = 1.0
                except Exception as exc:
                    summary.errors += 1
                    log.warning("playbook runner: %s: %s; reconnecting in %.0f s", type(exc).__name__, exc, pause)
                    self._close(consumer)
                    consumer = None
                    stop.wait(pause)
                    pause = min(pause * 2, MAX_RECONNECT_PAUSE_SECONDS)
        finally:
            self._close(consumer)
            audit.close()
            executor.close()
        summary.outcomes = engine.outcomes
        summary.audit_publish_errors = self._audit_publish_errors + audit.publish_errors
        summary.seconds = time.monotonic() - started
        return summary

    def run_for(self, seconds: float) -> RunSummary:
        """Run for `seconds` of wall time, then stop (the demo runs it in a thread)."""
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.daemon = True
        timer.start()
        try:
            return self.run(stop)
        finally:
            timer.cancel()

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a daemon thread; set the returned event to stop it, then join the thread."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="driftline-playbooks", daemon=True)
        thread.start()
        return thread, stop


def decision_line(decision: PlaybookDecision) -> str:
    """One line for a log or a terminal: time, outcome, rule/action, model, kind, reason."""
    parts = [
        decision.time.strftime("%H:%M:%S"),
        decision.outcome.value,
        f"{decision.rule}/{decision.action}" if decision.rule else "-",
        decision.model_id or "-",
        decision.kind.value if decision.kind else "-",
        decision.reason + (f" ({decision.error})" if decision.error else ""),
    ]
    return " | ".join(parts)


def run_playbooks(config: MonitorConfig, *, on_decision: OnDecision | None = None) -> RunSummary:
    """`driftline playbooks`: run until SIGINT or SIGTERM."""
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return PlaybookRunner(config, on_decision=on_decision).run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
