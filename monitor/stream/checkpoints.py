"""Checkpoints: what an agent saves, and in which order, so that a crash only replays.

Every `kafka.checkpoint_seconds` each agent writes, in this order and each acknowledged by the
broker before the next: what it sent downstream (a producer flush), the states that cover it
(records of its table's changelog, `records.encode_state`), then the position where each of its
input partitions resumes (table `input-positions`). A restarted worker resumes there
(`positions.PositionedConsumer`); input below a state's `covered` positions is skipped as a
replay, so a crash between two checkpoints replays, never loses or counts twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust

from monitor.observability.metrics import DriftlineMetrics
from monitor.stream.positions import position_records
from monitor.stream.records import encode_state

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StateEntry:
    """A live state object (model monitor or join store), the input positions it covers, and the
    table record it was last saved as (to notice a newer one after recovery)."""

    state: Any
    covered: dict[str, int]
    record: bytes | None
    partition: int
    """Changelog partition: the input partition this state belongs to."""


@dataclass
class Checkpoint:
    """What one agent has changed since it last saved: the states it touched and where each of
    its input partitions resumes. Saved together every `kafka.checkpoint_seconds`, not after
    every batch: state records are large (the whole monitor of a model, a join partition's
    pending predictions), and a crash between checkpoints only replays input the saved states
    do not cover."""

    table: faust.Table | None
    """Where the states go (None: an agent without state)."""
    live: dict[str, StateEntry]
    """The agent's live entries: a dirty entry replaced since (recovered, or dropped after a
    model error) is not saved."""
    owner: str
    """The input topic whose partition an entry's `partition` is (held by this worker or not)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by the agent for a whole batch, and by the timer to save an idle agent's checkpoint."""
    dirty: dict[str, StateEntry] = field(default_factory=dict)
    reached: dict[tuple[str, int], int] = field(default_factory=dict)
    saved_at: float = field(default_factory=time.monotonic)


class Checkpointer:
    """Saves `Checkpoint`s of one app: states to their tables, positions to `positions`."""

    def __init__(
        self,
        app: faust.App,
        positions: faust.Table,
        metrics: DriftlineMetrics,
        *,
        max_state_bytes: int,
        every_seconds: float,
    ):
        self.app = app
        self.positions = positions
        self.metrics = metrics
        self.max_state_bytes = max_state_bytes
        self.every_seconds = every_seconds

    async def save(self, point: Checkpoint, *, now: float) -> None:
        """Save what `point` holds if `every_seconds` have passed since it was last saved: first
        flush what the agent sent downstream, then the states that cover it, then where its input
        partitions resume, each acknowledged by the broker before the next. A crash before the
        positions are saved replays input the states already cover: it is skipped, not counted
        twice. Only partitions this worker still holds are saved: after a rebalance their new
        owner resumes from the last checkpoint."""
        if now - point.saved_at < self.every_seconds or not (point.dirty or point.reached):
            return
        held = {(tp.topic, tp.partition) for tp in self.app.consumer.assignment()}
        point.reached = {tp: offset for tp, offset in point.reached.items() if tp in held}
        point.dirty = {
            key: entry
            for key, entry in point.dirty.items()
            if point.live.get(key) is entry and (point.owner, entry.partition) in held
        }
        await self.app.producer.flush()
        oversize = await self._save_states(point.table, point.dirty) if point.table is not None else set()
        point.dirty = {key: point.dirty[key] for key in oversize}
        if not oversize:
            await self._write(self.positions, position_records(point.reached))
            point.reached = {}
        point.saved_at = now

    async def _save_states(self, table: faust.Table, entries: dict[str, StateEntry]) -> set[str]:
        """Write each entry's state and covered positions (changelog partition: the input
        partition of the state); call after flushing what the entries sent. Returns the keys of
        the states too large to write: the input positions must then not be saved either, so that
        a restart replays from the last saved state."""
        records, oversize = {}, set()
        for key, entry in entries.items():
            record = encode_state(entry.state.to_state(), entry.covered)
            if len(record) > self.max_state_bytes:
                log.error(
                    "state %s/%s is %d bytes, over %d: not saved, nor the input positions (runbooks/"
                    "DriftlineStateTooLarge.md)",
                    table.name,
                    key,
                    len(record),
                    self.max_state_bytes,
                )
                self.metrics.oversize_states.labels(table=table.name).inc()
                oversize.add(key)
                continue
            records[key] = (entry.partition, record)
            entry.record = record
        await self._write(table, records)
        return oversize

    @staticmethod
    async def _write(table: faust.Table, records: dict[str, tuple[int, bytes]]) -> None:
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
