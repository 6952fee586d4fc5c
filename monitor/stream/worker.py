"""`driftline worker`: the monitoring core on Kafka, as a faust-streaming app.

Read top to bottom: the app, its topics, its tables, its agents, its timer. Each agent takes a
batch of messages and hands it to its method in `agents.WorkerAgents`, which decodes it into
columns (`intake`), calls the core (`ModelMonitor`, `JoinStore`) and sends on; the data flows one
way:

    predictions (key model_id) ─┬──────────────────────────────► monitor_models ─► alerts
                                └─ prediction items ─┐                ▲
    outcomes (key prediction_id) ─► forward_outcomes ─┴► join-input ─► join_outcomes ─► joined
                                                       (key prediction_id)      (key model_id)

- `join-input` is partitioned like `outcomes` (by `prediction_id`), and `joined` like
  `predictions` (by `model_id`), with the same partition count, so each worker holds whole
  partitions of every stage and `monitor_models` sees a model's predictions and its joined
  outcomes in one place.
- Invalid input never crashes an agent: it goes to the dead-letter topic as a `DeadLetter`
  (original bytes, topic/partition/offset, reason), counted by reason.
- State (a model's monitor; a join partition's store) lives in faust Tables backed by changelog
  topics, as msgpack records `{"state", "covered"}` (`records.encode_state`). `covered` is the
  input position the state already includes: a message below it (a replay after a crash under
  at-least-once) is skipped, not counted twice. The join reads a single topic, so a replay joins
  the same items at the same positions (`records.join_position`) and the model agent skips the
  joins it has counted. Every `kafka.checkpoint_seconds` each agent writes, in this order and
  each acknowledged by the broker before the next: what it sent downstream, the states that
  cover it, then the position where each of its input partitions resumes (table
  `input-positions`; `checkpoints`). A restarted worker resumes there, not at the offsets faust committed, and
  the agents take each partition's messages in sequence, seeking back over any faust dropped
  (`monitor.stream.positions`), so a crash can only replay, never lose. Alerts raised again by
  a replay carry the same `alert_id`.
- A timer closes time windows on the stream's event time when a model goes quiet, flushes the
  evaluators and refreshes the Prometheus metrics.

`run_worker(config)` creates the topics, serves `/metrics` and runs until SIGINT/SIGTERM; tests
build an app with `build_app(config)`.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from monitor.contracts.config import MonitorConfig
from monitor.kafka.settings import faust_settings
from monitor.kafka.topics import (
    JOIN_STATE_TABLE,
    MODEL_STATE_TABLE,
    POSITIONS_TABLE,
    ensure_topics,
    internal_topics,
)
from monitor.observability.metrics import DriftlineMetrics
from monitor.stream.agents import OutputTopics, WorkerAgents
from monitor.stream.checkpoints import Checkpointer
from monitor.stream.consumer import PositionedConsumer
from monitor.stream.positions import InputSequence

log = logging.getLogger(__name__)

BATCH_FETCHES = 8
"""At most this many fetched partitions per agent batch (`consumer.FetchedRecords`: each holds
what one fetch brought of one partition, up to the client's `max_partition_fetch_bytes`)."""
BATCH_SECONDS = 0.5
"""A batch is processed after this long even when it is not full."""
QUEUED_FETCHES = 2 * BATCH_FETCHES
"""Fetched partitions an agent's stream holds before faust stops fetching its partitions (faust's
default, `stream_buffer_maxsize` 4,096, counts messages, not fetches of up to a megabyte)."""
TIMER_SECONDS = 2.0
"""How often the timer closes quiet windows, flushes evaluators and refreshes metrics."""
RECOVERY_BUFFER_RECORDS = 8
"""Changelog records faust holds before applying them to a table, in recovery and on standby
replicas (its default, 1,000, is sized for small values: with state records of 0.2-10 MB a
standby worker held gigabytes; `bench/kafka_load.py`)."""


def build_app(config: MonitorConfig, registry: CollectorRegistry | None = None) -> faust.App:
    """A faust app for `config`: its app id is `kafka.consumer_group` (workers sharing it split
    the partitions), its topics `kafka.topics` plus `internal_topics`. Does not create topics
    (`run_worker` does). Metrics go to `registry` (a fresh one when not given)."""
    kafka = config.kafka
    partitions = kafka.partitions
    app = faust.App(
        kafka.consumer_group,
        **faust_settings(kafka),
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=max(kafka.max_state_bytes, 1024 * 1024),  # Kafka's default, or a state
    )
    metrics = DriftlineMetrics(registry or CollectorRegistry(), config.metrics.max_drift_features_per_model)
    internal = internal_topics(kafka)

    # -- topics: values are raw bytes, decoded by `intake` or `records`, never by faust
    def raw_topic(*names: str, maxsize: int | None = None) -> faust.TopicT:
        return app.topic(*names, key_serializer="raw", value_serializer="raw", maxsize=maxsize)

    model_input = raw_topic(kafka.topics.predictions, internal.joined, maxsize=QUEUED_FETCHES)
    outcomes_topic = raw_topic(kafka.topics.outcomes, maxsize=QUEUED_FETCHES)
    join_input = raw_topic(internal.join_input, maxsize=QUEUED_FETCHES)
    joined_topic = raw_topic(internal.joined)
    alerts_topic = raw_topic(kafka.topics.alerts)
    dead_letter_topic = raw_topic(kafka.topics.dead_letter)

    # -- tables: msgpack bytes (value_type=dict would break recovery: faust calls dict.from_data,
    # logs a WARNING and resumes empty). States outgrow Kafka's 1 MB default (the warm-up sample,
    # a join partition's pending predictions), hence the larger message size for the producer
    # (app setting above) and for the changelog topics (real Kafka checks it per topic).
    def state_table(name: str) -> faust.Table:
        return app.Table(
            name,
            default=None,
            partitions=partitions,
            key_type=str,
            value_type=bytes,
            extra_topic_configs={"max.message.bytes": str(kafka.max_state_bytes)},
            recovery_buffer_size=RECOVERY_BUFFER_RECORDS,
            standby_buffer_size=RECOVERY_BUFFER_RECORDS,
        )

    model_states = state_table(MODEL_STATE_TABLE)
    join_states = state_table(JOIN_STATE_TABLE)
    input_positions = state_table(POSITIONS_TABLE)
    app.transport.Consumer = PositionedConsumer
    sequence = app.input_sequence = InputSequence()  # next offset per input partition; resumed by PositionedConsumer
    app.input_topics = {kafka.topics.predictions, kafka.topics.outcomes, internal.join_input, internal.joined}

    checkpointer = Checkpointer(
        app, input_positions, metrics, max_state_bytes=kafka.max_state_bytes, every_seconds=kafka.checkpoint_seconds
    )
    agents = WorkerAgents(
        app,
        config,
        metrics,
        OutputTopics(join_input, joined_topic, alerts_topic, dead_letter_topic),
        model_states=model_states,
        join_states=join_states,
        checkpointer=checkpointer,
        sequence=sequence,
        joined_topic_name=internal.joined,
        join_input_topic_name=internal.join_input,
    )

    @app.agent(model_input)
    async def monitor_models(stream: Any) -> None:
        async for events in stream.take_events(BATCH_FETCHES, within=BATCH_SECONDS):
            await agents.monitor_models(events)

    @app.agent(outcomes_topic)
    async def forward_outcomes(stream: Any) -> None:
        async for events in stream.take_events(BATCH_FETCHES, within=BATCH_SECONDS):
            await agents.forward_outcomes(events)

    @app.agent(join_input)
    async def join_outcomes(stream: Any) -> None:
        async for events in stream.take_events(BATCH_FETCHES, within=BATCH_SECONDS):
            await agents.join_outcomes(events)

    @app.timer(TIMER_SECONDS)
    async def close_quiet_windows() -> None:
        await agents.close_quiet_windows()

    app.on_unreadable = agents.on_unreadable
    app.metrics = metrics
    app.model_states = model_states
    app.join_states = join_states
    return app


def run_worker(config: MonitorConfig, *, loglevel: str = "info") -> None:
    """Create the topics, serve `/metrics` on `metrics.port`, then run until SIGINT/SIGTERM."""
    ensure_topics(config.kafka)
    server, _ = start_http_server(config.metrics.port, addr=config.metrics.host, registry=REGISTRY)
    app = build_app(config, REGISTRY)

    @app.task
    async def announce_metrics() -> None:  # once faust has set up logging; port 0 picks one: say which
        log.info("metrics on http://%s:%d/metrics", config.metrics.host, server.server_port)

    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()
