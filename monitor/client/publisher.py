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
raises `InvalidEvent` naming the field and nothing is sent. Sending is asynchronous and
batched (`linger_ms`); each call returns kafka-python's future for callers that want to wait.
Predictions are keyed by `model_id` (one worker owns a model), outcomes by `prediction_id`
(co-partitioned with the join). Security settings (SASL, SSL) come from `KafkaConfig`, whose
password is read from the environment (`DRIFTLINE_KAFKA__SASL_PASSWORD`).

NaN and infinite feature values are sent as null (missing): JSON has no such numbers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata
from pydantic import ValidationError

from monitor.contracts.config import KafkaConfig, load_config
from monitor.contracts.deadletter import DeadLetterReason
from monitor.contracts.events import SCHEMA_VERSION, OutcomeEvent, PredictionEvent
from monitor.contracts.limits import EventLimits
from monitor.contracts.validation import InvalidEvent, decode_outcome, decode_prediction, format_validation_error
from monitor.stream.kafka_settings import producer_settings

log = logging.getLogger(__name__)

PUBLISHER_DEFAULTS: dict[str, Any] = {
    "client_id": "driftline-publisher",
    "linger_ms": 5,
    "max_block_ms": 10_000,
}
"""kafka-python producer settings the publisher starts from: batch for 5 ms, and never block
the serving path longer than 10 s when the broker is away (kafka-python's default is 60 s).
kafka-python's own defaults (acks=all, idempotence) are kept. Any of them can be overridden."""

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z


class DriftlinePublisher:
    """Publishes `PredictionEvent`s and `OutcomeEvent`s to Kafka.

    Give either a `KafkaConfig` (topics, security, profile) or just `bootstrap_servers`; with
    neither, the configuration comes from the environment (`DRIFTLINE_KAFKA__...`). Keyword
    arguments left over go to `kafka.KafkaProducer` and win over everything else, e.g.
    `linger_ms=20` or `compression_type="gzip"`. Thread-safe, like the producer under it.
    """

    def __init__(
        self,
        kafka_config: KafkaConfig | None = None,
        *,
        bootstrap_servers: str | None = None,
        limits: EventLimits | None = None,
        **client_overrides: Any,
    ):
        config = kafka_config if kafka_config is not None else load_config(None).kafka
        if bootstrap_servers is not None:
            config = config.model_copy(update={"bootstrap_servers": bootstrap_servers})
        self.kafka_config = config
        self.limits = limits or EventLimits.default()
        self.predictions_topic = config.topics.predictions
        self.outcomes_topic = config.topics.outcomes
        self._producer = KafkaProducer(**producer_settings(config, **{**PUBLISHER_DEFAULTS, **client_overrides}))
        self._lock = threading.Lock()
        self._failed = 0
        self._sent = 0

    @property
    def producer(self) -> KafkaProducer:
        """The kafka-python producer underneath, for its `metrics()` and `config`."""
        return self._producer

    @property
    def sent(self) -> int:
        """Events handed to the producer (not all of them acknowledged yet)."""
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
    ) -> FutureRecordMetadata:
        """Validate one prediction and send it to the predictions topic, keyed by `model_id`.

        `timestamp` is the event time (now, UTC, when omitted); a naive datetime is refused.
        Raises `InvalidEvent` naming the field when the event would be refused by the worker."""
        event: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": _now() if timestamp is None else timestamp,
            "model_id": model_id,
            "model_version": model_version,
            "prediction_id": prediction_id,
            "features": features,
            "prediction": prediction,
        }
        optional = {
            "probabilities": probabilities,
            "slices": slices,
            "latency_ms": latency_ms,
            "request_status": request_status,
        }
        event.update({name: value for name, value in optional.items() if value is not None})
        raw = self._encode(event, PredictionEvent)
        decode_prediction(raw, self.limits)
        return self._send(self.predictions_topic, model_id, raw)

    def publish_outcome(
        self,
        *,
        prediction_id: str,
        label: bool | int | float | str,
        timestamp: datetime | str | None = None,
        model_id: str | None = None,
    ) -> FutureRecordMetadata:
        """Validate one outcome and send it to the outcomes topic, keyed by `prediction_id`.

        `timestamp` is when the outcome became known (now, UTC, when omitted). Giving
        `model_id` lets the worker account for the label even if its prediction expired."""
        event: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": _now() if timestamp is None else timestamp,
            "prediction_id": prediction_id,
            "label": label,
        }
        if model_id is not None:
            event["model_id"] = model_id
        raw = self._encode(event, OutcomeEvent)
        decode_outcome(raw, self.limits)
        return self._send(self.outcomes_topic, prediction_id, raw)

    def _encode(self, event: dict[str, Any], model: type[PredictionEvent | OutcomeEvent]) -> bytes:
        try:
            return orjson.dumps(event, option=_JSON_OPTIONS)
        except (orjson.JSONEncodeError, TypeError):
            # A value JSON cannot carry (a set, a Decimal, an object): let the model say which field.
            try:
                model.model_validate(event, context=self.limits.context())
            except ValidationError as exc:
                raise InvalidEvent(DeadLetterReason.schema, format_validation_error(exc)) from None
            raise  # the model accepted it, so the encoder's own message is the best there is

    def _send(self, topic: str, key: str, raw: bytes) -> FutureRecordMetadata:
        future = self._producer.send(topic, value=raw, key=key.encode("utf-8"))
        future.add_errback(self._on_failure, topic, key)
        with self._lock:
            self._sent += 1
        return future

    def _on_failure(self, topic: str, key: str, exc: BaseException) -> None:
        with self._lock:
            self._failed += 1
        log.error("driftline: an event for %s (key %r) was not delivered: %s", topic, key, exc)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything batched and wait for the broker's answers (at most `timeout` s)."""
        self._producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then close the connections. The publisher cannot be used afterwards."""
        self._producer.close(timeout)

    def __enter__(self) -> DriftlinePublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _now() -> datetime:
    return datetime.now(UTC)
