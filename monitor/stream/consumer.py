"""The worker's Kafka consumer: faust's, with the input partitions delivered a fetch at a time,
resumed at their saved positions, and records the client cannot read skipped.

faust hands every message to its streams on its own: one callback through the conductor, one
queue put, one stream step, one `wait_first` and one ack per message, ~0.18 CPU-ms each, which
held a worker to ~5,000 events/s with one event per message before any monitoring. The agents
decode a batch into columns at once (`intake`), so nothing needs the messages one by one:
`PositionedConsumer.getmany` hands each input partition's records of a fetch to faust as one
`FetchedRecords` message. faust's flow control, rebalances, acks and commits then run once per
fetched partition instead of once per record; the agents read `FetchedRecords.records`.
Changelog records go through faust one by one, as before (table recovery reads them so).

This subclasses faust's aiokafka consumer and relies on its internals (`getmany`,
`_drain_messages`, `_read_offset`, `_getmany`): faust-streaming is pinned in pyproject.toml,
and the SIGKILL tests (tests/stream/test_worker.py, tests/production/test_reliability.py), which
count every event exactly, guard an upgrade.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from monitor.kafka.topics import POSITIONS_TABLE
from monitor.stream.positions import InputSequence, Partition

log = logging.getLogger(__name__)


class FetchedRecords(ConsumerMessage):
    """One input partition's records of one fetch, handed to faust as one message.

    Its offset is the last record's, so when the agent's batch is done faust acks, and later
    commits, past all of them (`Consumer._drain_messages` marks the offsets before it as a gap
    it may commit over once this one is acked). `records` are aiokafka's `ConsumerRecord`s, in
    offset order: what `intake` reads (topic, partition, offset, key, value)."""

    def __init__(self, tp: TP, records: Sequence[Any], generation_id: int | None):
        last = records[-1]
        timestamp = None if last.timestamp is None else last.timestamp / 1000.0
        super().__init__(
            last.topic,
            last.partition,
            last.offset,
            timestamp,
            last.timestamp_type,
            None,
            None,
            b"",
            None,
            0,
            0,
            tp,
            generation_id=generation_id,
        )
        self.records = records


CAREFUL_RECORDS = 1000
"""Records read one at a time per fetch while looking for the one that cannot be read."""
UNREADABLE = (CorruptRecordException,)
"""What the Kafka client raises for records it cannot read, naming their partition."""
_NAMED_PARTITION = re.compile(r"TopicPartition\(topic='([^']*)', partition=(\d+)\)")


def unreadable_partition(error: BaseException) -> TopicPartition | None:
    """The partition an unreadable-record error names (aiokafka names it in the message).

    >>> unreadable_partition(CorruptRecordException("Invalid CRC - TopicPartition(topic='t', partition=1)"))
    TopicPartition(topic='t', partition=1)
    """
    found = _NAMED_PARTITION.search(str(error))
    return TopicPartition(found[1], int(found[2])) if found else None


async def _seek(consumer: Any, tp: TopicPartition, offset: int) -> None:
    """Move the client's position (in faust's consumer thread) without faust's read offset, which
    would drop the records handed out below it."""
    consumer.seek(tp, offset)


class _ReadOffsets(dict):
    """faust's read offset per partition (`Consumer._read_offset`; its fetch loop drops a record
    below it and then sets it to the record's offset), held at the offset a partition was sought
    to (`pinned`: a resume or a seek back) until the fetch loop delivers that offset.

    Without the hold the seek back did not take: the rest of a batch fetched before the seek
    still went through the fetch loop and moved the read offset past the offset sought, so the
    loop dropped the records read again, and a partition stalled for seconds (the soak in
    tests/production/test_reliability.py logged stalls of 10-14 s on every input)."""

    def __init__(self) -> None:
        super().__init__()
        self.pinned: dict[Any, int] = {}

    def __missing__(self, partition: Any) -> None:
        return None

    def pin(self, partition: Any, offset: int) -> None:
        self.pinned[partition] = offset
        super().__setitem__(partition, offset)

    def delivering(self, partition: Any, first: int, last: int) -> None:
        """Records `first` to `last` of `partition` are about to be delivered as one
        `FetchedRecords`: if they hold the offset the partition is pinned at, the hold ends, and
        faust's fetch loop sets the read offset to `last`."""
        pinned = self.pinned.get(partition)
        if pinned is not None and first <= pinned <= last:
            del self.pinned[partition]

    def __setitem__(self, partition: Any, offset: int | None) -> None:
        pinned = self.pinned.get(partition)
        if pinned is not None:
            if offset != pinned:
                return
            del self.pinned[partition]
        super().__setitem__(partition, offset)


class PositionedConsumer(AIOKafkaConsumer):
    """faust's Kafka consumer, handing out each input partition's records of a fetch at once
    (`getmany`), seeking each input partition to its saved position
    (`POSITIONS_TABLE`, recovered from its changelog before faust seeks) instead of the committed
    offset, and telling `app.input_sequence` where each input partition resumes.

    A saved position is trusted even past the end of its partition (the embedded broker reads
    the end low, BROKER.md). So when a log is reset under a running worker (an embedded broker
    restarted empty, a topic deleted and recreated), its messages below the saved position are
    dropped as seen (`Verdict.SEEN`): reset the consumer group's offsets and restart the worker,
    as for any reset log.

    An input partition with no saved position is read from its start, not from the committed
    offset: faust may have committed messages no agent took before any position was saved (in
    the soak, the `joined` partitions of a worker killed before it counted an outcome), and the
    states skip what they have counted. The changelogs seek to the committed offset as faust
    does. Install with `app.transport.Consumer = PositionedConsumer` before the app starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _ReadOffsets()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, ConsumerMessage]]:
        """faust's `Consumer.getmany` (what its fetch loop hands to the streams), but each input
        partition's records come as one `FetchedRecords` (see the module's docstring); other
        partitions' records (changelogs) come one by one, as in faust.

        As faust's: nothing is handed out while the flow is paused (faust then seeks back to
        the committed offsets) or once the consumer generation changes; a partition is handed
        out only while active or buffered. Records below faust's read offset (a seek moved
        back past them) are dropped here, where faust's loop would drop them one by one."""
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as error:
                log.warning("seek while the flow is paused failed: %r", error)
            return
        inputs = self.app.input_topics
        others = {}
        for tp, fetched in records.items():
            if not (active_partitions is None or tp in active_partitions or tp in self._buffered_partitions):
                continue
            if tp.topic not in inputs:
                others[tp] = fetched
                continue
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                return
            read = self._read_offset[tp]
            if read is not None and fetched[0].offset < read:
                fetched = [record for record in fetched if record.offset >= read]
            if fetched:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                self._read_offset.delivering(tp, fetched[0].offset, fetched[-1].offset)
                yield tp, FetchedRecords(tp, fetched, generation_id)
        for tp, record in self.scheduler.iterate(others):
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                return
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, self._to_message(tp, record)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        """faust's fetch, but a record the client cannot read is skipped, not raised.

        aiokafka raises `CorruptRecordException` for a fetch that holds a batch failing its CRC
        check (the broker keeps it as written), handing out none of the fetch's records. Raised
        here, it stopped faust's fetcher and the worker; restarted, the worker fetched the same
        batch and stopped again. Now the partition is read one record at a time
        (`_read_up_to_unreadable`) up to the one that cannot be read. An error that names no
        partition is raised as before: aiokafka's `UnsupportedCodecError` names none, and cannot
        happen: cramjam (a dependency) reads gzip, snappy, lz4 and zstd, and the broker refuses a
        batch in a codec Kafka does not define (the embedded broker answers the producer with an
        error; tried with a batch naming codec 5)."""
        try:
            return await super()._getmany(active_partitions, timeout)
        except UNREADABLE as error:
            tp = unreadable_partition(error)
            if tp is None:
                raise
            return await self._read_up_to_unreadable(tp)

    async def _read_up_to_unreadable(self, tp: TopicPartition) -> dict[TopicPartition, list[Any]]:
        """The records of `tp` before the first one the client cannot read, fetched one at a time
        (the client raises for a whole fetch, so this finds the offset that fails). That record
        is skipped: the consumer goes on after it, `app.input_sequence` takes the gap as no gap,
        and `app.on_unreadable` counts it and dead-letters where it was (its bytes cannot be had).
        At most `CAREFUL_RECORDS` records per call: the next fetch fails again and goes on here."""
        thread = self._thread
        consumer = thread._ensure_consumer()
        records: list[Any] = []
        while len(records) < CAREFUL_RECORDS:
            try:
                got = await thread.call_thread(consumer.getmany, tp, timeout_ms=1000, max_records=1)
            except UNREADABLE as error:
                offset = await thread.position(tp)
                await thread.call_thread(_seek, consumer, tp, offset + 1)
                self.app.input_sequence.skip((tp.topic, tp.partition), offset)
                await self.app.on_unreadable((tp.topic, tp.partition), offset, error)
                break
            if not got:
                break
            records += got[tp]
        return {tp: records} if records else {}

    async def seek_back(self, partition: Partition, offset: int) -> None:
        """Seek an input partition back to `offset` (a message faust did not deliver), through
        faust's consumer thread (aiokafka is not thread-safe)."""
        tp = TopicPartition(*partition)
        await self.seek_wait({tp: offset})
        self._read_offset.pin(tp, offset)

    def _saved(self, partitions: Iterable[Any]) -> dict[Any, int]:
        data = self.app.tables[POSITIONS_TABLE].data
        keys = {tp: f"{tp.topic}:{tp.partition}" for tp in partitions}
        return {tp: int(data[key]) for tp, key in keys.items() if key in data}

    async def seek_to_committed(self) -> dict[Any, int]:
        sequence: InputSequence = self.app.input_sequence
        thread = self._thread
        consumer = thread._ensure_consumer()
        assigned = consumer.assignment()
        inputs = {tp for tp in assigned if tp.topic in self.app.input_topics}
        saved = self._saved(inputs)
        for tp in inputs:  # the seeks below set the read offsets
            self._read_offset.pinned.pop(tp, None)
        unsaved = inputs - saved.keys()
        resumed = {**saved, **(await self.earliest_offsets(*unsaved) if unsaved else {})}
        others = assigned - inputs
        committed = dict(await thread.call_thread(consumer.seek_to_committed, *others)) if others else {}
        if resumed:
            await self.seek_wait(resumed)
            for tp, offset in resumed.items():  # as for a seek back: records fetched before must not undo it
                self._read_offset.pin(tp, offset)
        for tp in sorted(inputs):
            log.info(
                "%s[%d] resumes at %s %d (committed: %s)",
                tp.topic,
                tp.partition,
                "its saved offset" if tp in saved else "the start of its log (no saved position):",
                resumed[tp],
                await thread.call_thread(consumer.committed, tp),
            )
        sequence.resume({(tp.topic, tp.partition): offset for tp, offset in resumed.items()}, time.monotonic())
        return {**committed, **resumed}
