"""`driftline worker`: the monitoring core on Kafka, as a faust-streaming app.

Read top to bottom: the app, its topics, its tables, its agents, its timer. Agents are short
loops that decode, call the core (`ModelMonitor`, `JoinStore`) and send on; the data flows one
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
  `input-positions`). A restarted worker resumes there, not at the offsets faust committed, and
  the agents take each partition's messages in sequence, seeking back over any faust dropped
  (`monitor.stream.positions`), so a crash can only replay, never lose. Alerts raised again by
  a replay carry the same `alert_id`.
- A timer closes time windows on the stream's event time when a model goes quiet, flushes the
  evaluators and refreshes the Prometheus metrics.

`run_worker(config)` creates the topics, serves `/metrics` and runs until SIGINT/SIGTERM; tests
build an app with `build_app(config)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import MonitorConfig
from monitor.contracts.deadletter import DeadLetter, DeadLetterReason, DeadLetterSource
from monitor.evaluation.join import JoinedOutcome, JoinStore
from monitor.kafka.settings import faust_settings
from monitor.kafka.topics import (
    JOIN_STATE_TABLE,
    MODEL_STATE_TABLE,
    POSITIONS_TABLE,
    ensure_topics,
    internal_topics,
)
from monitor.monitoring.fleet import ModelMonitor, RaisedAlert
from monitor.observability.metrics import DriftlineMetrics
from monitor.stream.intake import Refused, new_events, read_outcomes, read_predictions
from monitor.stream.positions import InputSequence, PositionedConsumer, Verdict, position_records
from monitor.stream.records import (
    decode_join_input,
    decode_joined,
    decode_state,
    encode_joined,
    encode_state,
    join_input_messages,
    join_position,
    outcome_items,
    partition_for,
    prediction_items,
)

log = logging.getLogger(__name__)

BATCH_EVENTS = 500
"""At most this many messages per batch of `monitor_models` (one state write per model per batch)."""
BATCH_SECONDS = 0.5
"""A batch is processed after this long even when it is not full."""
JOIN_BATCH_MESSAGES = 50
"""join-input messages per join batch (each holds up to a whole input batch of items): the join
writes its partition's store once per batch, so its batches are large."""
TIMER_SECONDS = 2.0
"""How often the timer closes quiet windows, flushes evaluators and refreshes metrics."""
RECOVERY_BUFFER_RECORDS = 8
"""Changelog records faust holds before applying them to a table, in recovery and on standby
replicas (its default, 1,000, is sized for small values: with state records of 0.2-10 MB a
standby worker held gigabytes; `bench/kafka_load.py`)."""


@dataclass(slots=True)
class _Entry:
    """A live state object (model monitor or join store), the input positions it covers, and the
    table record it was last saved as (to notice a newer one after recovery)."""

    state: Any
    covered: dict[str, int]
    record: bytes | None
    partition: int
    """Changelog partition: the input partition this state belongs to."""


@dataclass
class _Checkpoint:
    """What one agent has changed since it last saved: the states it touched and where each of
    its input partitions resumes. Saved together every `kafka.checkpoint_seconds`, not after
    every batch: state records are large (the whole monitor of a model, a join partition's
    pending predictions), and a crash between checkpoints only replays input the saved states
    do not cover."""

    table: faust.Table | None
    """Where the states go (None: an agent without state)."""
    live: dict[str, _Entry]
    """The agent's live entries: a dirty entry replaced since (recovered, or dropped after a
    model error) is not saved."""
    owner: str
    """The input topic whose partition an entry's `partition` is (held by this worker or not)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by the agent for a whole batch, and by the timer to save an idle agent's checkpoint."""
    dirty: dict[str, _Entry] = field(default_factory=dict)
    reached: dict[tuple[str, int], int] = field(default_factory=dict)
    saved_at: float = field(default_factory=time.monotonic)


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

    # -- topics: values are raw bytes, decoded by monitor.contracts.validation or records, never by faust
    def raw_topic(*names: str) -> faust.TopicT:
        return app.topic(*names, key_serializer="raw", value_serializer="raw")

    model_input = raw_topic(kafka.topics.predictions, internal.joined)
    outcomes_topic = raw_topic(kafka.topics.outcomes)
    join_input = raw_topic(internal.join_input)
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

    models: dict[str, _Entry] = {}
    joins: dict[str, _Entry] = {}
    # model_checkpoint's lock: monitor_models and the timer change the same model monitors
    model_checkpoint = _Checkpoint(model_states, models, kafka.topics.predictions)
    join_checkpoint = _Checkpoint(join_states, joins, internal.join_input)
    outcome_checkpoint = _Checkpoint(None, {}, kafka.topics.outcomes)
    event_time = [-float("inf")]  # latest prediction event time this worker has seen

    def model_entry(model_id: str, partition: int) -> _Entry:
        record = model_states.get(model_id)
        entry = models.get(model_id)
        if entry is None or entry.record is not record:  # new model, or the table was recovered
            if record is None:
                entry = _Entry(ModelMonitor(model_id, config), {}, None, partition)
            else:
                state, covered = decode_state(record)
                entry = _Entry(ModelMonitor(model_id, config, state), covered, record, partition)
            models[model_id] = entry
        return entry

    def join_entry(partition: int) -> _Entry:
        key = str(partition)
        record = join_states.get(key)
        entry = joins.get(key)
        if entry is None or entry.record is not record:
            store = JoinStore.from_config(config)
            covered: dict[str, int] = {}
            if record is not None:
                state, covered = decode_state(record)
                store.restore(state)
            entry = joins[key] = _Entry(store, covered, record, partition)
        return entry

    async def write(table: faust.Table, records: dict[str, tuple[int, bytes]]) -> None:
        """Put each record (key -> changelog partition, value) in `table` and its changelog, and
        wait until the broker has acknowledged every one.

        Not `Table.send_changelog`: it queues in faust's producer buffer, whose flush returns
        once no message has left the buffer for 0.1 s (`ProducerBuffer.flush_atmost`), so under
        load a state could still be queued when faust commits the offsets it covers, and a
        SIGKILL then lost those events (the soak in tests/production/test_reliability.py)."""
        sent = []
        for key, (partition, value) in records.items():
            table.data[key] = value
            sent.append(
                await table.changelog_topic.send(
                    key=key,
                    value=value,
                    partition=partition,
                    key_serializer=table.key_serializer,
                    value_serializer=table.value_serializer,
                )
            )
        await asyncio.gather(*sent)

    async def save(table: faust.Table, entries: dict[str, _Entry]) -> set[str]:
        """Write each entry's state and covered positions (changelog partition: the input
        partition of the state); call after flushing what the entries sent. Returns the keys of
        the states too large to write: the input positions must then not be saved either, so that
        a restart replays from the last saved state."""
        records, oversize = {}, set()
        for key, entry in entries.items():
            record = encode_state(entry.state.to_state(), entry.covered)
            if len(record) > kafka.max_state_bytes:
                log.error(
                    "state %s/%s is %d bytes, over %d: not saved, nor the input positions (runbooks/"
                    "DriftlineStateTooLarge.md)",
                    table.name,
                    key,
                    len(record),
                )
                metrics.oversize_states.labels(table=table.name).inc()
                oversize.add(key)
                continue
            records[key] = (entry.partition, record)
            entry.record = record
        await write(table, records)
        return oversize

    async def save_checkpoint(point: _Checkpoint, *, now: float) -> None:
        """Save what `point` holds if `kafka.checkpoint_seconds` have passed since it was last
        saved: first flush what the agent sent downstream, then the states that cover it, then
        where its input partitions resume, each acknowledged by the broker before the next. A
        crash before the positions are saved replays input the states already cover: it is
        skipped, not counted twice. Only partitions this worker still holds are saved: after a
        rebalance their new owner resumes from the last checkpoint."""
        if now - point.saved_at < kafka.checkpoint_seconds or not (point.dirty or point.reached):
            return
        held = {(tp.topic, tp.partition) for tp in app.consumer.assignment()}
        point.reached = {tp: offset for tp, offset in point.reached.items() if tp in held}
        point.dirty = {
            key: entry
            for key, entry in point.dirty.items()
            if point.live.get(key) is entry and (point.owner, entry.partition) in held
        }
        await app.producer.flush()
        oversize = await save(point.table, point.dirty) if point.table is not None else set()
        point.dirty = {key: point.dirty[key] for key in oversize}
        if not oversize:
            await write(input_positions, position_records(point.reached))
            point.reached = {}
        point.saved_at = now

    async def taken(events: Any, point: _Checkpoint) -> list[Any]:
        """The messages of a batch an agent handles, in order: each the next one of its partition
        (`InputSequence`), noted in `point` as reached. A message past a gap faust left is dropped
        and the partition sought back."""
        messages = []
        for event in events:
            message = event.message
            partition = (message.topic, message.partition)
            verdict = sequence.admit(partition, message.offset, time.monotonic())
            if verdict is Verdict.SEEK:
                metrics.input_reseeks.labels(topic=message.topic).inc()
                await app.consumer.seek_back(partition, sequence.next[partition])
            if verdict is Verdict.TAKE:
                point.reached[partition] = message.offset + 1
                messages.append(message)
        return messages

    async def dead_letter(refused: list[Refused]) -> None:
        for item in refused:
            message, error = item.message, item.error
            source = DeadLetterSource(
                topic=message.topic, partition=message.partition, offset=message.offset, index=item.index
            )
            letter = DeadLetter.of(item.original, source, error.reason, str(error))
            metrics.invalid_events.labels(source=message.topic, reason=str(error.reason)).inc()
            at = f"{message.topic}[{message.partition}]@{message.offset}" + (
                f" event {item.index}" if item.index is not None else ""
            )
            log.warning("dead letter %s: %s", at, error)
            await dead_letter_topic.send(key=message.key, value=letter.model_dump_json().encode())

    async def on_unreadable(partition: tuple[str, int], offset: int, error: Exception) -> None:
        """A record the Kafka client cannot read was skipped (`PositionedConsumer._getmany`):
        count it and dead-letter where it was."""
        topic, number = partition
        metrics.invalid_events.labels(source=topic, reason=DeadLetterReason.unreadable.value).inc()
        runbook = "runbooks/DriftlineUnreadableRecords.md"
        log.error("%s[%d]@%d cannot be read, skipped (%s): %s", topic, number, offset, runbook, error)
        letter = DeadLetter.of(
            b"",
            DeadLetterSource(topic=topic, partition=number, offset=offset),
            DeadLetterReason.unreadable,
            f"the record cannot be read: {error}",
        )
        await dead_letter_topic.send(value=letter.model_dump_json().encode())

    async def publish(model_id: str, raised: list[RaisedAlert]) -> None:
        for item in raised:
            metrics.observe_alert(item.alert)
            await alerts_topic.send(key=model_id.encode(), value=item.alert.model_dump_json().encode())

    def skipped(agent: str, positions: list[int]) -> None:
        """Count and log what `agent` skipped as already in its states (`positions`: the input
        offset of each skipped message or join)."""
        if positions:
            metrics.replayed_messages.labels(agent=agent).inc(len(positions))
            log.info(
                "%s skipped %d replayed inputs the state already covers (offsets %d to %d)",
                agent,
                len(positions),
                min(positions),
                max(positions),
            )

    # -- agents ------------------------------------------------------------------------------------

    @app.agent(model_input)
    async def monitor_models(stream: Any) -> None:
        """Predictions and joined outcomes -> each model's monitor -> alerts; prediction items on
        to the join."""
        async for events in stream.take_events(BATCH_EVENTS, within=BATCH_SECONDS):
            async with model_checkpoint.lock:
                outcomes: dict[str, tuple[list[JoinedOutcome], list[int]]] = defaultdict(lambda: ([], []))
                replayed: list[int] = []
                prediction_messages = []
                for message in await taken(events, model_checkpoint):
                    if message.topic != internal.joined:
                        prediction_messages.append(message)
                        continue
                    for join_partition, position, joined in decode_joined(message.value):
                        entry = model_entry(joined.model_id, message.partition)
                        source = f"j{join_partition}"
                        if position < entry.covered.get(source, 0):
                            replayed.append(message.offset)
                            continue
                        entry.covered[source] = position + 1
                        outcomes[joined.model_id][0].append(joined)
                        outcomes[joined.model_id][1].append(message.offset)
                intake = read_predictions(prediction_messages, config.limits)
                await dead_letter(intake.refused)
                predictions: dict[str, PredictionBatch] = {}
                for model_id, index in intake.batch.by_model().items():
                    partitions_of_model = intake.partitions[index]
                    entry = model_entry(model_id, int(partitions_of_model[0]))
                    positions = intake.batch.positions[index]
                    new = new_events(positions, partitions_of_model, entry.covered)
                    replayed += positions[~new].tolist()  # already in the state: a replay after a restart
                    if new.any():
                        predictions[model_id] = intake.batch.take(index[new])
                skipped("monitor_models", replayed)

                items = [item for batch in predictions.values() for item in prediction_items(batch)]
                for partition, value in join_input_messages("p", items, partitions):
                    await join_input.send(partition=partition, value=value)
                for model_id in predictions.keys() | outcomes.keys():
                    entry = models[model_id]
                    batch = predictions.get(model_id) or PredictionBatch.empty()
                    model_outcomes, outcome_offsets = outcomes.get(model_id, ([], []))
                    if len(batch):
                        event_time[0] = max(event_time[0], float(batch.timestamps.max()))
                    try:
                        raised = entry.state.observe(batch, model_outcomes, outcome_offsets)
                    except Exception:  # a bug in the core must not stop the other models
                        metrics.model_errors.labels(model=model_id).inc()
                        log.exception(
                            "model %s failed on a batch; it resumes from its last saved state, without the events "
                            "since (runbooks/DriftlineModelFailing.md)",
                            model_id,
                        )
                        del models[model_id]
                        continue
                    for kind, handled in (("prediction", len(batch)), ("outcome", len(model_outcomes))):
                        if handled:  # no series before the first: a 0 would read as "outcomes stopped"
                            metrics.events.labels(model=model_id, type=kind).inc(handled)
                    await publish(model_id, raised)
                    model_checkpoint.dirty[model_id] = entry
                await save_checkpoint(model_checkpoint, now=time.monotonic())

    @app.agent(outcomes_topic)
    async def forward_outcomes(stream: Any) -> None:
        """Outcomes -> validated items on the join-input partition of their prediction id. No
        state: a replay sends duplicates, which the join counts and drops (first outcome wins)."""
        async for events in stream.take_events(BATCH_EVENTS, within=BATCH_SECONDS):
            async with outcome_checkpoint.lock:
                intake = read_outcomes(await taken(events, outcome_checkpoint), config.limits)
                await dead_letter(intake.refused)
                for partition, value in join_input_messages("o", outcome_items(intake.batch), partitions):
                    await join_input.send(partition=partition, value=value)
                await save_checkpoint(outcome_checkpoint, now=time.monotonic())

    @app.agent(join_input)
    async def join_outcomes(stream: Any) -> None:
        """Prediction and outcome items -> the partition's join store -> joined records, on the
        `joined` partition of their model."""
        async for events in stream.take_events(JOIN_BATCH_MESSAGES, within=BATCH_SECONDS):
            async with join_checkpoint.lock:
                joined: dict[int, list[tuple[int, int, JoinedOutcome]]] = defaultdict(list)
                replayed: list[int] = []
                for message in await taken(events, join_checkpoint):
                    entry = join_entry(message.partition)
                    if message.offset < entry.covered.get("input", 0):
                        replayed.append(message.offset)
                        continue
                    entry.covered["input"] = message.offset + 1
                    join_checkpoint.dirty[str(message.partition)] = entry
                    kind, items = decode_join_input(message.value)
                    store: JoinStore = entry.state
                    add = store.add_prediction_fields if kind == "p" else store.add_outcome_fields
                    for index, item in enumerate(items):
                        result = add(*item)
                        if result is not None:
                            position = join_position(message.offset, index)
                            joined[partition_for(result.model_id, partitions)].append(
                                (message.partition, position, result)
                            )
                skipped("join_outcomes", replayed)
                for partition, records in joined.items():
                    await joined_topic.send(partition=partition, value=encode_joined(records))
                await save_checkpoint(join_checkpoint, now=time.monotonic())

    # -- timer -------------------------------------------------------------------------------------

    @app.timer(TIMER_SECONDS)
    async def close_quiet_windows() -> None:
        """Event time moves on for quiet models too: close their time windows, flush what the
        evaluators buffer, save the checkpoints of agents with no new input, refresh the metrics.

        Not while faust rebalances: it then re-reads the tables from their changelogs, and a
        model's record may be an older one for a moment; a state built from it and saved would
        become the newest record, behind the input positions already saved. The entries are
        resolved before the first `await` for the same reason."""
        if app.rebalancing:
            return
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == kafka.topics.predictions}
        async with model_checkpoint.lock:
            raised: dict[str, list[RaisedAlert]] = {}
            for model_id in model_states.keys() | models.keys():  # with those restored, no event since
                known = models.get(model_id)
                partition = known.partition if known else partition_for(model_id, partitions)
                if partition not in assigned:  # moved to another worker in a rebalance
                    if known:
                        del models[model_id]
                        metrics.forget_model(model_id)
                    continue
                entry = model_entry(model_id, partition)  # the table's record if it is newer
                found = entry.state.flush()
                if event_time[0] > -float("inf"):
                    found += entry.state.advance_to(datetime.fromtimestamp(event_time[0], UTC))
                if found:
                    raised[model_id] = found
                metrics.observe_model(model_id, entry.state)
            for model_id, found in raised.items():
                await publish(model_id, found)
                model_checkpoint.dirty[model_id] = models[model_id]
        for point in (model_checkpoint, join_checkpoint, outcome_checkpoint):  # idle agents' last batches
            async with point.lock:
                await save_checkpoint(point, now=time.monotonic())
        metrics.observe_joins([entry.state for entry in joins.values()])
        ends = {
            (tp.topic, tp.partition): end
            for tp in app.consumer.assignment()
            if tp.topic in app.input_topics and (end := app.consumer.highwater(tp)) is not None
        }
        metrics.observe_lag(ends, sequence.next)
        if sequence.repeats:
            log.info(
                "dropped messages below the next offset of their partition (delivered again after a seek, or a "
                "reset log): %s",
                ", ".join(
                    f"{topic}[{partition}] {count}" for (topic, partition), count in sorted(sequence.repeats.items())
                ),
            )
            sequence.repeats.clear()
        for partition, offset in sequence.stalled(ends, time.monotonic()).items():
            metrics.input_reseeks.labels(topic=partition[0]).inc()
            await app.consumer.seek_back(partition, offset)

    app.on_unreadable = on_unreadable
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
