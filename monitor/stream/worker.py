"""`driftline worker`: the monitoring core on Kafka, as a faust-streaming app.

Read top to bottom: the app, its topics, its table, its agent. The agent is a short loop that
decodes predictions and calls the core (`ModelMonitor`); everything else is plumbing.

- Invalid input never crashes the agent: it goes to the dead-letter topic as a `DeadLetter`
  (original bytes, topic/partition/offset, reason).
- Per-model state lives in a faust Table backed by a changelog topic, as msgpack:
  `{"monitor": ModelMonitor.to_state(), "covered": {"<partition>": next_offset}}`. `covered`
  is the input position the state already includes, so a message below it (a replay after a
  crash, at-least-once) is skipped, not counted twice.
- Live `ModelMonitor` objects are cached in memory; the table is written once per batch.

Not yet here: the outcome join (repartition by `prediction_id`), timers closing windows when a
model goes quiet, metrics per dead-letter reason, `caps.max_models`.

Run it with `run_worker(config)`; tests build one app per test with `build_app(config)`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import faust
import msgpack

from monitor.contracts.config import MonitorConfig
from monitor.contracts.deadletter import DeadLetter, DeadLetterSource
from monitor.contracts.events import PredictionEvent
from monitor.contracts.validation import InvalidEvent, decode_prediction
from monitor.monitoring.fleet import ModelMonitor
from monitor.stream.kafka_settings import faust_settings
from monitor.stream.topics import ensure_topics

log = logging.getLogger(__name__)

STATE_TABLE = "model-state"
"""faust table name; its changelog topic is `<consumer_group>-model-state-changelog`."""
BATCH_EVENTS = 500
"""At most this many messages per batch (one table write per model per batch)."""
BATCH_SECONDS = 0.5
"""A batch is processed after this long even when it is not full."""


STATE_MAX_BYTES = 32 * 1024 * 1024
"""Largest state record (msgpack) the worker writes: 25 features at the default warm-up of
5,000 events take about 2 MB; the limit leaves room for wide models and caps the damage."""


def encode_record(monitor_state: dict[str, Any], covered: dict[str, int]) -> bytes:
    """A table record: the monitor's state and the input offsets it covers, as msgpack.

    >>> decode_record(encode_record({"drift": {"events": 3}}, {"0": 3}))
    ({'drift': {'events': 3}}, {'0': 3})
    """
    return msgpack.packb({"monitor": monitor_state, "covered": covered})


def decode_record(raw: bytes) -> tuple[dict[str, Any], dict[str, int]]:
    record = msgpack.unpackb(raw)
    return record["monitor"], record["covered"]


class _ModelEntry:
    """A live monitor and the table record it was last saved as (to notice a newer one)."""

    __slots__ = ("monitor", "covered", "record")

    def __init__(self, monitor: ModelMonitor, covered: dict[str, int], record: bytes | None):
        self.monitor = monitor
        self.covered = covered
        self.record = record


def build_app(config: MonitorConfig) -> faust.App:
    """A faust app for `config`: its app id is `kafka.consumer_group` (workers sharing it split
    the partitions), its topics `kafka.topics`. Does not create topics (`run_worker` does)."""
    kafka = config.kafka
    app = faust.App(
        kafka.consumer_group,
        **faust_settings(kafka),
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=STATE_MAX_BYTES,
    )

    # Topics: values are raw bytes, decoded by monitor.contracts.validation, never by faust.
    predictions_topic = app.topic(kafka.topics.predictions, key_serializer="raw", value_serializer="raw")
    alerts_topic = app.topic(kafka.topics.alerts, key_serializer="raw", value_serializer="raw")
    dead_letter_topic = app.topic(kafka.topics.dead_letter, key_serializer="raw", value_serializer="raw")

    # Table: model_id -> msgpack {"monitor": state, "covered": {"<partition>": next offset}}.
    # Values are msgpack bytes (`encode_record`): a model's state outgrows 1 MB during warm-up
    # (the reference builder keeps the warm-up sample), hence the larger message size, for the
    # producer (app setting above) and for the changelog topic (real Kafka checks it per topic).
    # (value_type=dict would break recovery: faust calls dict.from_data, logs a WARNING and
    # resumes with an empty table.)
    states = app.Table(
        STATE_TABLE,
        default=None,
        partitions=kafka.partitions,
        key_type=str,
        value_type=bytes,
        extra_topic_configs={"max.message.bytes": str(STATE_MAX_BYTES)},
    )

    cache: dict[str, _ModelEntry] = {}
    app.dead_letters = Counter()  # by reason, for tests and (later) metrics
    app.replayed = 0  # messages skipped because the state already covered them

    def entry_for(model_id: str) -> _ModelEntry:
        record = states.get(model_id)
        entry = cache.get(model_id)
        if entry is None or entry.record is not record:  # new model, or the table was recovered
            if record is None:
                entry = _ModelEntry(ModelMonitor(model_id, config), {}, None)
            else:
                monitor_state, covered = decode_record(record)
                entry = _ModelEntry(ModelMonitor(model_id, config, monitor_state), covered, record)
            cache[model_id] = entry
        return entry

    async def dead_letter(message: Any, error: InvalidEvent) -> None:
        letter = DeadLetter.of(
            message.value if isinstance(message.value, bytes) else b"",
            DeadLetterSource(topic=message.topic, partition=message.partition, offset=message.offset),
            error.reason,
            str(error),
        )
        app.dead_letters[str(error.reason)] += 1
        log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)
        await dead_letter_topic.send(key=message.key, value=letter.model_dump_json().encode())

    @app.agent(predictions_topic)
    async def monitor_predictions(stream: Any) -> None:
        async for events in stream.take_events(BATCH_EVENTS, within=BATCH_SECONDS):
            batches: dict[str, tuple[list[PredictionEvent], list[int], list[int]]] = {}
            replayed: list[int] = []
            for event in events:
                message = event.message
                try:
                    prediction = decode_prediction(message.value, config.limits)
                except InvalidEvent as error:
                    await dead_letter(message, error)
                    continue
                entry = entry_for(prediction.model_id)
                if message.offset < entry.covered.get(str(message.partition), 0):
                    replayed.append(message.offset)  # already in the state: a replay after a restart
                    continue
                batch = batches.setdefault(prediction.model_id, ([], [], []))
                batch[0].append(prediction)
                batch[1].append(message.offset)
                batch[2].append(message.partition)
            if replayed:
                app.replayed += len(replayed)
                log.info(
                    "skipped %d replayed messages the state already covers (offsets %d to %d)",
                    len(replayed),
                    min(replayed),
                    max(replayed),
                )
            for model_id, (predictions, offsets, partitions) in batches.items():
                entry = entry_for(model_id)
                raised = entry.monitor.observe(predictions, offsets, [], [])
                for item in raised:
                    await alerts_topic.send(key=model_id.encode(), value=item.alert.model_dump_json().encode())
                for partition, offset in zip(partitions, offsets, strict=True):
                    entry.covered[str(partition)] = max(entry.covered.get(str(partition), 0), offset + 1)
                record = encode_record(entry.monitor.to_state(), entry.covered)
                if len(record) > STATE_MAX_BYTES:  # not saved: a restart replays from the last saved state
                    log.error(
                        "state of model %s is %d bytes, over %d: not saved", model_id, len(record), STATE_MAX_BYTES
                    )
                    continue
                # Explicit partition: the changelog partition is the input partition of the model.
                states.data[model_id] = record
                states.send_changelog(partitions[-1], model_id, record)
                entry.record = record

    app.monitor_predictions = monitor_predictions
    app.model_states = states
    return app


def run_worker(config: MonitorConfig, *, loglevel: str = "info") -> None:
    """Create the topics, then run the worker until SIGINT/SIGTERM."""
    ensure_topics(config.kafka)
    app = build_app(config)
    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()
