"""The bodies of the worker's agents and timer: one method per batch, the core called per model.

`build_app` (`monitor.stream.worker`) makes the faust app, its topics and tables, and hands
each batch an agent takes to a method here:

- `monitor_models`: predictions and joined outcomes -> each model's monitor -> alerts; prediction
  items on to the join;
- `forward_outcomes`: outcomes -> items on the join-input partition of their prediction id;
- `join_outcomes`: items -> the partition's join store -> joined records on their model's
  partition;
- `close_quiet_windows` (the timer): event time moves on for quiet models too.

Messages become columnar batches in `intake`, without the raw values of features marked `pii`;
invalid input goes to the dead letters, never stops an agent; states and positions are saved by
`checkpoints`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import MonitorConfig
from monitor.contracts.deadletter import DeadLetter, DeadLetterReason, DeadLetterSource
from monitor.contracts.privacy import PrivacyPolicy
from monitor.evaluation.join import JoinedOutcome, JoinStore
from monitor.monitoring.fleet import ModelMonitor, RaisedAlert
from monitor.observability.metrics import DriftlineMetrics
from monitor.stream.checkpoints import Checkpoint, Checkpointer, StateEntry
from monitor.stream.intake import Refused, new_events, read_outcomes, read_predictions
from monitor.stream.positions import InputSequence, Verdict
from monitor.stream.records import (
    decode_join_input,
    decode_joined,
    decode_state,
    encode_joined,
    join_input_messages,
    join_position,
    outcome_items,
    partition_for,
    prediction_items,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputTopics:
    """Where the agents send (faust topics of raw bytes)."""

    join_input: faust.TopicT
    joined: faust.TopicT
    alerts: faust.TopicT
    dead_letter: faust.TopicT


class WorkerAgents:
    """The state and the per-batch work of one worker's agents."""

    def __init__(
        self,
        app: faust.App,
        config: MonitorConfig,
        metrics: DriftlineMetrics,
        topics: OutputTopics,
        *,
        model_states: faust.Table,
        join_states: faust.Table,
        checkpointer: Checkpointer,
        sequence: InputSequence,
        joined_topic_name: str,
        join_input_topic_name: str,
    ):
        self.app = app
        self.config = config
        self.metrics = metrics
        self.topics = topics
        self.model_states = model_states
        self.join_states = join_states
        self.checkpointer = checkpointer
        self.sequence = sequence
        self.joined_topic_name = joined_topic_name
        self.partitions = config.kafka.partitions
        self.privacy = PrivacyPolicy.from_config(config)
        """Features marked `pii` leave the events as they are decoded (`intake`): no state, record
        sent on, alert or dead letter holds their raw values."""
        self.models: dict[str, StateEntry] = {}
        self.joins: dict[str, StateEntry] = {}
        # model_checkpoint's lock: monitor_models and the timer change the same model monitors
        self.model_checkpoint = Checkpoint(model_states, self.models, config.kafka.topics.predictions)
        self.join_checkpoint = Checkpoint(join_states, self.joins, join_input_topic_name)
        self.outcome_checkpoint = Checkpoint(None, {}, config.kafka.topics.outcomes)
        self.event_time = -float("inf")
        """The latest prediction event time this worker has seen."""

    # -- agents ------------------------------------------------------------------------------------

    async def monitor_models(self, events: list[Any]) -> None:
        """Predictions and joined outcomes -> each model's monitor -> alerts; prediction items on
        to the join."""
        point = self.model_checkpoint
        async with point.lock:
            outcomes: dict[str, tuple[list[JoinedOutcome], list[int]]] = defaultdict(lambda: ([], []))
            replayed: list[int] = []
            prediction_messages = []
            for message in await self._taken(events, point):
                if message.topic != self.joined_topic_name:
                    prediction_messages.append(message)
                    continue
                for join_partition, position, joined in decode_joined(message.value):
                    entry = self._model_entry(joined.model_id, message.partition)
                    source = f"j{join_partition}"
                    if position < entry.covered.get(source, 0):
                        replayed.append(message.offset)
                        continue
                    entry.covered[source] = position + 1
                    outcomes[joined.model_id][0].append(joined)
                    outcomes[joined.model_id][1].append(message.offset)
            intake = read_predictions(prediction_messages, self.config.limits, self.privacy)
            await self._dead_letter(intake.refused)
            predictions: dict[str, PredictionBatch] = {}
            for model_id, index in intake.batch.by_model().items():
                partitions_of_model = intake.partitions[index]
                entry = self._model_entry(model_id, int(partitions_of_model[0]))
                positions = intake.batch.positions[index]
                new = new_events(positions, partitions_of_model, entry.covered)
                replayed += positions[~new].tolist()  # already in the state: a replay after a restart
                if new.any():
                    predictions[model_id] = intake.batch.take(index[new])
            self._skipped("monitor_models", replayed)

            items = [item for batch in predictions.values() for item in prediction_items(batch)]
            for partition, value in join_input_messages("p", items, self.partitions):
                await self.topics.join_input.send(partition=partition, value=value)
            for model_id in predictions.keys() | outcomes.keys():
                entry = self.models[model_id]
                batch = predictions.get(model_id) or PredictionBatch.empty()
                model_outcomes, outcome_offsets = outcomes.get(model_id, ([], []))
                if len(batch):
                    self.event_time = max(self.event_time, float(batch.timestamps.max()))
                try:
                    raised = entry.state.observe(batch, model_outcomes, outcome_offsets)
                except Exception:  # a bug in the core must not stop the other models
                    self.metrics.model_errors.labels(model=model_id).inc()
                    log.exception(
                        "model %s failed on a batch; it resumes from its last saved state, without the events "
                        "since (runbooks/DriftlineModelFailing.md)",
                        model_id,
                    )
                    del self.models[model_id]
                    continue
                for kind, handled in (("prediction", len(batch)), ("outcome", len(model_outcomes))):
                    if handled:  # no series before the first: a 0 would read as "outcomes stopped"
                        self.metrics.events.labels(model=model_id, type=kind).inc(handled)
                await self._publish(model_id, raised)
                point.dirty[model_id] = entry
            await self.checkpointer.save(point, now=time.monotonic())

    async def forward_outcomes(self, events: list[Any]) -> None:
        """Outcomes -> validated items on the join-input partition of their prediction id. No
        state: a replay sends duplicates, which the join counts and drops (first outcome wins)."""
        point = self.outcome_checkpoint
        async with point.lock:
            intake = read_outcomes(await self._taken(events, point), self.config.limits, self.privacy)
            await self._dead_letter(intake.refused)
            for partition, value in join_input_messages("o", outcome_items(intake.batch), self.partitions):
                await self.topics.join_input.send(partition=partition, value=value)
            await self.checkpointer.save(point, now=time.monotonic())

    async def join_outcomes(self, events: list[Any]) -> None:
        """Prediction and outcome items -> the partition's join store -> joined records, on the
        `joined` partition of their model."""
        point = self.join_checkpoint
        async with point.lock:
            joined: dict[int, list[tuple[int, int, JoinedOutcome]]] = defaultdict(list)
            replayed: list[int] = []
            for message in await self._taken(events, point):
                entry = self._join_entry(message.partition)
                if message.offset < entry.covered.get("input", 0):
                    replayed.append(message.offset)
                    continue
                entry.covered["input"] = message.offset + 1
                point.dirty[str(message.partition)] = entry
                kind, items = decode_join_input(message.value)
                store: JoinStore = entry.state
                add = store.add_prediction_fields if kind == "p" else store.add_outcome_fields
                for index, item in enumerate(items):
                    result = add(*item)
                    if result is not None:
                        position = join_position(message.offset, index)
                        joined[partition_for(result.model_id, self.partitions)].append(
                            (message.partition, position, result)
                        )
            self._skipped("join_outcomes", replayed)
            for partition, records in joined.items():
                await self.topics.joined.send(partition=partition, value=encode_joined(records))
            await self.checkpointer.save(point, now=time.monotonic())

    # -- timer -------------------------------------------------------------------------------------

    async def close_quiet_windows(self) -> None:
        """Event time moves on for quiet models too: close their time windows, flush what the
        evaluators buffer, save the checkpoints of agents with no new input, refresh the metrics.

        Not while faust rebalances: it then re-reads the tables from their changelogs, and a
        model's record may be an older one for a moment; a state built from it and saved would
        become the newest record, behind the input positions already saved. The entries are
        resolved before the first `await` for the same reason."""
        app, metrics, sequence = self.app, self.metrics, self.sequence
        if app.rebalancing:
            return
        predictions_topic = self.config.kafka.topics.predictions
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == predictions_topic}
        async with self.model_checkpoint.lock:
            raised: dict[str, list[RaisedAlert]] = {}
            for model_id in self.model_states.keys() | self.models.keys():  # with those restored, no event since
                known = self.models.get(model_id)
                partition = known.partition if known else partition_for(model_id, self.partitions)
                if partition not in assigned:  # moved to another worker in a rebalance
                    if known:
                        del self.models[model_id]
                        metrics.forget_model(model_id)
                    continue
                entry = self._model_entry(model_id, partition)  # the table's record if it is newer
                found = entry.state.flush()
                if self.event_time > -float("inf"):
                    found += entry.state.advance_to(datetime.fromtimestamp(self.event_time, UTC))
                if found:
                    raised[model_id] = found
                metrics.observe_model(model_id, entry.state)
            for model_id, found in raised.items():
                await self._publish(model_id, found)
                self.model_checkpoint.dirty[model_id] = self.models[model_id]
        for point in (self.model_checkpoint, self.join_checkpoint, self.outcome_checkpoint):  # idle agents
            async with point.lock:
                await self.checkpointer.save(point, now=time.monotonic())
        metrics.observe_joins([entry.state for entry in self.joins.values()])
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

    # -- unreadable records (called by positions.PositionedConsumer) --------------------------------

    async def on_unreadable(self, partition: tuple[str, int], offset: int, error: Exception) -> None:
        """A record the Kafka client cannot read was skipped (`PositionedConsumer._getmany`):
        count it and dead-letter where it was."""
        topic, number = partition
        self.metrics.invalid_events.labels(source=topic, reason=DeadLetterReason.unreadable.value).inc()
        runbook = "runbooks/DriftlineUnreadableRecords.md"
        log.error("%s[%d]@%d cannot be read, skipped (%s): %s", topic, number, offset, runbook, error)
        letter = DeadLetter.of(
            b"",
            DeadLetterSource(topic=topic, partition=number, offset=offset),
            DeadLetterReason.unreadable,
            f"the record cannot be read: {error}",
        )
        await self.topics.dead_letter.send(value=letter.model_dump_json().encode())

    # -- helpers -----------------------------------------------------------------------------------

    def _model_entry(self, model_id: str, partition: int) -> StateEntry:
        record = self.model_states.get(model_id)
        entry = self.models.get(model_id)
        if entry is None or entry.record is not record:  # new model, or the table was recovered
            if record is None:
                entry = StateEntry(ModelMonitor(model_id, self.config), {}, None, partition)
            else:
                state, covered = decode_state(record)
                entry = StateEntry(ModelMonitor(model_id, self.config, state), covered, record, partition)
            self.models[model_id] = entry
        return entry

    def _join_entry(self, partition: int) -> StateEntry:
        key = str(partition)
        record = self.join_states.get(key)
        entry = self.joins.get(key)
        if entry is None or entry.record is not record:
            store = JoinStore.from_config(self.config)
            covered: dict[str, int] = {}
            if record is not None:
                state, covered = decode_state(record)
                store.restore(state)
            entry = self.joins[key] = StateEntry(store, covered, record, partition)
        return entry

    async def _taken(self, events: list[Any], point: Checkpoint) -> list[Any]:
        """The records of a batch an agent handles, in order: each the next one of its partition
        (`InputSequence`), noted in `point` as reached. Each event brings one partition's records
        of a fetch (`consumer.FetchedRecords`). A record past a gap faust left is dropped and the
        partition sought back."""
        messages = []
        for event in events:
            for message in event.message.records:
                partition = (message.topic, message.partition)
                verdict = self.sequence.admit(partition, message.offset, time.monotonic())
                if verdict is Verdict.SEEK:
                    self.metrics.input_reseeks.labels(topic=message.topic).inc()
                    await self.app.consumer.seek_back(partition, self.sequence.next[partition])
                if verdict is Verdict.TAKE:
                    point.reached[partition] = message.offset + 1
                    messages.append(message)
        return messages

    async def _dead_letter(self, refused: list[Refused]) -> None:
        for item in refused:
            message, error = item.message, item.error
            source = DeadLetterSource(
                topic=message.topic, partition=message.partition, offset=message.offset, index=item.index
            )
            letter = DeadLetter.of(item.original, source, error.reason, str(error))
            self.metrics.invalid_events.labels(source=message.topic, reason=str(error.reason)).inc()
            at = f"{message.topic}[{message.partition}]@{message.offset}" + (
                f" event {item.index}" if item.index is not None else ""
            )
            log.warning("dead letter %s: %s", at, error)
            await self.topics.dead_letter.send(key=message.key, value=letter.model_dump_json().encode())

    async def _publish(self, model_id: str, raised: list[RaisedAlert]) -> None:
        for item in raised:
            self.metrics.observe_alert(item.alert)
            await self.topics.alerts.send(key=model_id.encode(), value=item.alert.model_dump_json().encode())

    def _skipped(self, agent: str, positions: list[int]) -> None:
        """Count and log what `agent` skipped as already in its states (`positions`: the input
        offset of each skipped message or join)."""
        if positions:
            self.metrics.replayed_messages.labels(agent=agent).inc(len(positions))
            log.info(
                "%s skipped %d replayed inputs the state already covers (offsets %d to %d)",
                agent,
                len(positions),
                min(positions),
                max(positions),
            )
