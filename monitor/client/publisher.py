"""`DriftlinePublisher`: how a model service tells Driftline what it predicted and what happened.

    from monitor.client import DriftlinePublisher

    with DriftlinePublisher(bootstrap_servers="kafka:9092") as publisher:
        publisher.publish_prediction(
            model_id="fraud", model_version="2024-06-01", prediction_id=request_id,
            features={"amount": 129.5, "country": "DE", "new_device": True},
            prediction=1, probabilities={"0": 0.13, "1": 0.87}, latency_ms=12.4,
        )
        # ... later, when the truth is known (any process, any time):
        publisher.publish_outcome(prediction_id=request_id, label=0, model_id="fraud")
    # leaving the block flushes what is still batched and closes the connection

Every event is validated before it is sent, by the same code the worker uses to accept it
(`monitor.contracts.validation`), so what the publisher sends, the worker takes: a bad event
raises `InvalidEvent` naming the field and nothing is sent. The same check runs with no broker
at all in `validate_prediction` / `validate_outcome` (`monitor.client.events`), for a service's
unit tests. The publisher connects on its first send, not when it is built: building one never
blocks, and a broker that does not answer within `bootstrap_timeout_ms` (10 s) makes that send
raise `BrokerUnreachable`, one line naming the servers. Sending is asynchronous and batched:
a model's predictions are packed into one message of up to `batch_events` (100) events, a batch
envelope (`schemas/event_envelope.json`), sent when full or `batch_linger_ms` (20 ms) after its
first event, and on `flush` and `close`; a worker then handles a message per hundred events
instead of one each. Outcomes are packed the same way, per partition of the outcomes topic.
`batch_events=1` sends one event per message. Each call returns a future for callers that want
to wait: a `concurrent.futures.Future` resolved when the envelope holding the event is
acknowledged (kafka-python's own future with `batch_events=1`). Predictions are keyed by
`model_id` (one worker owns a model). An outcome goes to the partition its `prediction_id`
hashes to, as it would alone keyed by it, so two outcomes of one prediction stay in order (the
worker keeps the first). Security settings (SASL, SSL) come from `KafkaConfig`, whose password
is read from the environment (`DRIFTLINE_KAFKA__SASL_PASSWORD`).

NaN and infinite feature values are sent as null (missing): JSON has no such numbers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import kafka.errors
from kafka import KafkaProducer
from kafka.partitioner.default import murmur2
from kafka.producer.future import FutureRecordMetadata

from monitor.client.events import outcome_record, prediction_record
from monitor.client.packing import EnvelopePacker, Packed
from monitor.contracts.config import KafkaConfig, load_config
from monitor.contracts.limits import EventLimits
from monitor.kafka.settings import close_producer, producer_settings

log = logging.getLogger(__name__)

_UNREACHABLE = tuple(
    getattr(kafka.errors, name) for name in ("KafkaTimeoutError", "NoBrokersAvailable") if hasattr(kafka.errors, name)
)
"""What building a kafka-python producer raises when no broker answers: `KafkaTimeoutError`
(kafka-python 3), `NoBrokersAvailable` (before 3)."""

Destination = tuple[str, bytes | None, int | None]
"""Where an envelope goes: topic, Kafka key (a prediction's: its model id), partition (an
outcome's: the one its prediction id hashes to)."""

PUBLISHER_DEFAULTS: dict[str, Any] = {
    "client_id": "driftline-publisher",
    "linger_ms": 5,
    "max_block_ms": 10_000,
    "bootstrap_timeout_ms": 10_000,
}
"""kafka-python producer settings the publisher starts from: batch for 5 ms, and never block
the serving path longer than 10 s when the broker is away, neither on a send (kafka-python's
default is 60 s) nor on the first connection (30 s). kafka-python's own defaults (acks=all,
idempotence) are kept. Any of them can be overridden. (`bootstrap_timeout_ms` is left out
with a kafka-python older than 2.1, which has no such setting.)"""


class BrokerUnreachable(ConnectionError):
    """The publisher could not reach any Kafka broker when it first needed one. The message is
    one line naming the servers and how long it waited; the event was valid and was not sent."""


class DriftlinePublisher:
    """Publishes `PredictionEvent`s and `OutcomeEvent`s to Kafka.

    Give either a `KafkaConfig` (topics, security, profile) or just `bootstrap_servers`; with
    neither, the configuration comes from the environment (`DRIFTLINE_KAFKA__...`). Keyword
    arguments left over go to `kafka.KafkaProducer` and win over everything else, e.g.
    `linger_ms=20` or `compression_type="gzip"`. Thread-safe, like the producer under it.

    `batch_events`, `batch_bytes` and `batch_linger_ms` bound an envelope: a model's predictions,
    or outcomes bound for one partition (`monitor.client.packing`); `batch_events=1` sends each
    event alone.

    Building the publisher checks the settings (a SASL protocol without its user fails here)
    but does not connect: the producer is made on the first send, or when `producer` is read.
    """

    def __init__(
        self,
        kafka_config: KafkaConfig | None = None,
        *,
        bootstrap_servers: str | None = None,
        limits: EventLimits | None = None,
        batch_events: int = 100,
        batch_bytes: int = 512 * 1024,
        batch_linger_ms: float = 20.0,
        **client_overrides: Any,
    ):
        config = kafka_config if kafka_config is not None else load_config(None).kafka
        if bootstrap_servers is not None:
            config = config.model_copy(update={"bootstrap_servers": bootstrap_servers})
        self.kafka_config = config
        self.limits = limits or EventLimits.default()
        self.predictions_topic = config.topics.predictions
        self.outcomes_topic = config.topics.outcomes
        defaults = {name: value for name, value in PUBLISHER_DEFAULTS.items() if name in KafkaProducer.DEFAULT_CONFIG}
        self._settings = producer_settings(config, **{**defaults, **client_overrides})
        self._producer: KafkaProducer | None = None
        self._closed = False
        self._connect_lock = threading.Lock()
        self._lock = threading.Lock()
        self._failed = 0
        self._sent = 0
        self._packer = (
            EnvelopePacker(max_events=batch_events, max_bytes=batch_bytes, linger_ms=batch_linger_ms)
            if batch_events > 1
            else None
        )
        self._lingering: threading.Thread | None = None
        self._stop_lingering = threading.Event()
        self._sending = threading.Lock()
        """Held from taking envelopes out of the packer to handing them to the producer: the caller
        and the linger thread both send, and a model's envelopes must reach its partition in order."""

    @property
    def producer(self) -> KafkaProducer:
        """The kafka-python producer underneath, for its `metrics()` and `config`; reading it
        connects if the publisher has not yet (raising `BrokerUnreachable` if that fails)."""
        return self._connected()

    @property
    def connected(self) -> bool:
        """Whether the producer underneath exists (made by a first send or by `producer`)."""
        return self._producer is not None

    @property
    def sent(self) -> int:
        """Events taken for sending (not all of them acknowledged yet; some may still wait in an
        envelope)."""
        return self._sent

    @property
    def failed(self) -> int:
        """Events the broker did not take after the producer's retries (each one logged)."""
        return self._failed

    def publish_prediction(
        self,
        *,
        model_id: str,
        prediction_id: str,
        features: Mapping[str, Any],
        prediction: bool | int | float | str,
        model_version: str,
        timestamp: datetime | str | None = None,
        probabilities: Mapping[str, float] | None = None,
        slices: Mapping[str, str] | None = None,
        latency_ms: float | None = None,
        request_status: str | None = None,
        attributions: Mapping[str, float] | None = None,
    ) -> Future[object] | FutureRecordMetadata:
        """Validate one prediction and send it to the predictions topic, keyed by `model_id`, in
        the model's next envelope (alone with `batch_events=1`).

        `timestamp` is the event time (now, UTC, when omitted); a naive datetime is refused.
        Raises `InvalidEvent` naming the field when the event would be refused by the worker
        (nothing is sent), `BrokerUnreachable` when the first connection fails."""
        raw, _ = prediction_record(
            model_id=model_id,
            prediction_id=prediction_id,
            features=features,
            prediction=prediction,
            model_version=model_version,
            timestamp=timestamp,
            probabilities=probabilities,
            slices=slices,
            latency_ms=latency_ms,
            request_status=request_status,
            attributions=attributions,
            limits=self.limits,
        )
        if self._packer is None:
            return self._send(self.predictions_topic, model_id, raw)
        return self._pack((self.predictions_topic, model_id.encode("utf-8"), None), raw)

    def publish_outcome(
        self,
        *,
        prediction_id: str,
        label: bool | int | float | str,
        timestamp: datetime | str | None = None,
        model_id: str | None = None,
    ) -> Future[object] | FutureRecordMetadata:
        """Validate one outcome and send it to the outcomes topic, in the next envelope of the
        partition `prediction_id` hashes to (alone, keyed by `prediction_id`, with
        `batch_events=1`).

        `timestamp` is when the outcome became known (now, UTC, when omitted). Giving
        `model_id` lets the worker account for the label even if its prediction expired."""
        raw, _ = outcome_record(
            prediction_id=prediction_id, label=label, timestamp=timestamp, model_id=model_id, limits=self.limits
        )
        if self._packer is None:
            return self._send(self.outcomes_topic, prediction_id, raw)
        partitions = sorted(self._connected().partitions_for(self.outcomes_topic))
        hashed = murmur2(prediction_id.encode("utf-8")) & 0x7FFFFFFF  # Kafka's default for a keyed record
        return self._pack((self.outcomes_topic, None, partitions[hashed % len(partitions)]), raw)

    def _pack(self, destination: Destination, raw: bytes) -> Future[object]:
        """Hold `raw` in the envelope bound for `destination` (topic, key, partition); send the
        envelopes that filled up."""
        self._connected()  # an unreachable broker fails this call, not a later one
        self._linger()
        assert self._packer is not None
        with self._sending:
            future, ready = self._packer.add(destination, raw, now=time.monotonic())
            with self._lock:
                self._sent += 1
            for packed in ready:
                self._send_envelope(packed)
        return future

    def _connected(self) -> KafkaProducer:
        producer = self._producer
        if producer is not None:
            return producer
        with self._connect_lock:
            if self._closed:
                raise RuntimeError("this DriftlinePublisher is closed")
            if self._producer is None:
                try:
                    self._producer = KafkaProducer(**self._settings)
                except _UNREACHABLE:
                    timeout_ms = self._settings.get("bootstrap_timeout_ms")
                    within = f" within {timeout_ms / 1000:g} s" if timeout_ms is not None else ""
                    raise BrokerUnreachable(
                        f"no Kafka broker answered at {self.kafka_config.bootstrap_servers}{within}"
                        " (kafka.bootstrap_servers); the event was not sent"
                    ) from None
            return self._producer

    def _send(self, topic: str, key: str, raw: bytes) -> FutureRecordMetadata:
        future = self._connected().send(topic, value=raw, key=key.encode("utf-8"))
        future.add_errback(self._on_failure, topic, key)
        with self._lock:
            self._sent += 1
        return future

    def _send_envelope(self, packed: Packed) -> None:
        """Send one envelope; its delivery (or failure) resolves each event's future."""
        destination, value, futures = packed
        topic, key, partition = destination
        try:
            sent = self._connected().send(topic, value=value, key=key, partition=partition)
        except Exception as exc:
            self._envelope_failed(futures, destination, exc)
            raise
        sent.add_callback(lambda metadata: [future.set_result(metadata) for future in futures])
        sent.add_errback(lambda exc: self._envelope_failed(futures, destination, exc))

    def _envelope_failed(self, futures: list[Future[object]], destination: Destination, exc: BaseException) -> None:
        with self._lock:
            self._failed += len(futures)
        for future in futures:
            future.set_exception(exc)
        topic, key, partition = destination
        to = f"key {key.decode(errors='replace')!r}" if key is not None else f"partition {partition}"
        log.error("driftline: an envelope of %d events for %s (%s) was not delivered: %s", len(futures), topic, to, exc)

    def _linger(self) -> None:
        """Start the thread that sends envelopes `batch_linger_ms` after their first event."""
        if self._lingering is not None:
            return
        with self._connect_lock:
            if self._lingering is None:
                self._lingering = threading.Thread(target=self._send_due, name="driftline-linger", daemon=True)
                self._lingering.start()

    def _send_due(self) -> None:
        assert self._packer is not None
        while not self._stop_lingering.wait(self._packer.linger / 2):
            with self._sending:
                self._send_quietly(self._packer.due(time.monotonic()))

    def _send_held(self) -> None:
        """Send every envelope still held (flush, close)."""
        if self._packer is not None:
            with self._sending:
                self._send_quietly(self._packer.drain())

    def _send_quietly(self, envelopes: list[Packed]) -> None:
        """Send each envelope; one that cannot be sent is counted in `failed` and logged, and the
        others are still sent."""
        for packed in envelopes:
            try:
                self._send_envelope(packed)
            except Exception:  # noqa: BLE001 - _send_envelope counted and logged it
                continue

    def _on_failure(self, topic: str, key: str, exc: BaseException) -> None:
        with self._lock:
            self._failed += 1
        log.error("driftline: an event for %s (key %r) was not delivered: %s", topic, key, exc)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything batched and wait for the broker's answers (at most `timeout` s).
        Nothing to do when nothing was ever sent."""
        self._send_held()
        if self._producer is not None:
            self._producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then close the connections. The publisher cannot be used afterwards. What the
        broker has not taken after `timeout` s is dropped, each event counted in `failed` and
        logged (kafka-python's own `close` would raise and leave the producer open)."""
        self._stop_lingering.set()
        if self._lingering is not None:
            self._lingering.join()
        if self._producer is not None:
            self._send_held()
        with self._connect_lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            close_producer(producer, timeout=threading.TIMEOUT_MAX if timeout is None else timeout)

    def __enter__(self) -> DriftlinePublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
