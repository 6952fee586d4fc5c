"""Where each input partition of a worker goes on: its own saved positions, not faust's commits.

faust's committed offsets cannot be trusted for exactly-once counting. It acknowledges, and
later commits, messages its streams took but never handed to an agent: those taken while its
flow control is paused or from an older consumer generation around a rebalance
(`Stream._py_aiter`), or whose delivery a suspended flow interrupted (`Consumer._drain_messages`).
Under CPU contention a worker restarted after SIGKILL lost up to 1,000 messages of a partition
that way (the soak in tests/production/test_reliability.py). So the worker keeps its own books:

- `InputSequence` holds the next offset each input partition must deliver. A message past it is
  dropped and the partition sought back (`Verdict.SEEK`) until the expected offset comes; one
  below it was taken already (delivered again after a seek) and is dropped. Until the consumer
  has resumed a partition, its messages are dropped too (faust may deliver from its committed
  offset first).
- After each batch, once everything it changed is acknowledged by the broker, the worker writes
  where each of the batch's partitions resumes (table `POSITIONS_TABLE`).
- `PositionedConsumer` resumes every input partition there after a (re)assignment, not at the
  committed offset. What lies between the saved position and the states (saved just before it)
  is read again and skipped as a replay.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

from monitor.kafka.topics import POSITIONS_TABLE

log = logging.getLogger(__name__)

RESEEK_SECONDS = 2.0
"""A partition waiting for its expected offset is sought back again after this long (a seek can
be overtaken by records fetched before it)."""
GAP_SECONDS = 60.0
"""A gap that lasts this long, sought back every `RESEEK_SECONDS`, is taken as the log's own."""
STALL_SECONDS = 10.0
"""A partition whose log goes past its next offset but that delivered nothing for this long is
sought back (faust dropped its last messages, so no later one shows the gap). A seek that was
not needed (an agent busy saving a large state takes nothing for seconds: the 200k soak) only
reads a few messages again. The wait doubles after each such seek that brings nothing, up to
`STALL_MAX_SECONDS`: the end of a log can be a transaction marker no fetch returns."""
STALL_MAX_SECONDS = 600.0

Partition = tuple[str, int]
"""(topic, partition)"""


class Verdict(enum.Enum):
    """What an agent does with a message (`InputSequence.admit`)."""

    TAKE = "take"
    """The next message of its partition: handle it."""
    SEEN = "seen"
    """Below the next offset: taken already, delivered again after a seek. Drop it."""
    SEEK = "seek"
    """Past the next offset: drop it and seek the partition to `InputSequence.next`."""
    HOLD = "hold"
    """Past the next offset while a seek back is under way, or from a partition whose position is
    not known yet (before its first `InputSequence.resume`): drop it. The seek delivers it again."""


@dataclass(slots=True)
class _Gap:
    expected: int
    """The offset the partition waits for."""
    since: float
    """When the gap showed (monotonic seconds)."""
    sought: float
    """When the partition was last sought back (monotonic seconds)."""


class InputSequence:
    """The next offset each input partition must deliver to its agent, and what to do with a
    message that is not it.

    A gap can also be the log's own (transaction markers, compaction, retention). No message of
    faust's tells which it is (in the 1M soak, the message that showed a gap came a second time
    before the offsets sought, and taking it then lost 938 outcomes), so a partition is sought
    back every `RESEEK_SECONDS` until the expected offset comes, and only a gap that lasts
    `GAP_SECONDS` is taken as the log's own, with an error logged.

    >>> sequence = InputSequence()
    >>> sequence.resume({("predictions", 0): 10}, now=0.0)
    >>> [sequence.admit(("predictions", 0), offset, now=0.0).value for offset in (10, 12, 13, 11, 12, 9)]
    ['take', 'seek', 'hold', 'take', 'take', 'seen']
    """

    def __init__(self) -> None:
        self.next: dict[Partition, int] = {}
        self.repeats: Counter[Partition] = Counter()
        """Messages dropped as `Verdict.SEEN` per partition, until the caller clears it."""
        self._gaps: dict[Partition, _Gap] = {}
        self._moved: dict[Partition, float] = {}  # when each partition last took a message or was sought
        self._stall_wait: dict[Partition, float] = {}  # seconds without a message before `stalled` seeks
        self._skipped: dict[Partition, set[int]] = {}  # offsets that cannot be read, not reached yet

    def resume(self, offsets: Mapping[Partition, int], now: float) -> None:
        """The partitions were (re)assigned and sought to `offsets`."""
        for partition, offset in offsets.items():
            self.next[partition] = offset
            self._gaps.pop(partition, None)
            self._stall_wait.pop(partition, None)
            self._moved[partition] = now

    def admit(self, partition: Partition, offset: int, now: float) -> Verdict:
        """Whether the message at `offset` of `partition` is the next one; on `Verdict.TAKE` it
        is recorded as taken."""
        expected = self._expected(partition)
        if expected is None:
            # Before the consumer resumed the partition: faust can deliver from its committed
            # offset, past messages it dropped, and a state that took those would cover the gap.
            return Verdict.HOLD
        if offset < expected:
            self.repeats[partition] += 1
            return Verdict.SEEN
        if offset > expected:
            gap = self._gaps.get(partition)
            if gap is None or gap.expected != expected:
                self._gaps[partition] = _Gap(expected, now, now)
                self._moved[partition] = now
                log.warning(
                    "%s[%d]: offset %d came, %d expected: reading again from %d", *partition, offset, expected, expected
                )
                return Verdict.SEEK
            if now - gap.since < GAP_SECONDS:
                if now - gap.sought < RESEEK_SECONDS:
                    return Verdict.HOLD
                gap.sought = self._moved[partition] = now
                return Verdict.SEEK
            log.error(
                "%s[%d]: offsets %d to %d did not come in %.0f s of seeking back: taken as not in the log, going on",
                *partition,
                expected,
                offset - 1,
                GAP_SECONDS,
            )
        self._gaps.pop(partition, None)
        self._stall_wait.pop(partition, None)
        self.next[partition] = offset + 1
        self._moved[partition] = now
        return Verdict.TAKE

    def skip(self, partition: Partition, offset: int) -> None:
        """The message at `offset` cannot be read and was skipped (`PositionedConsumer`): once the
        partition has taken every message before it, it expects the one after it.

        >>> sequence = InputSequence()
        >>> sequence.resume({("predictions", 0): 10}, now=0.0)
        >>> sequence.skip(("predictions", 0), 11)
        >>> [sequence.admit(("predictions", 0), offset, now=0.0).value for offset in (10, 12)]
        ['take', 'take']
        """
        self._skipped.setdefault(partition, set()).add(offset)

    def _expected(self, partition: Partition) -> int | None:
        """The next offset of `partition`, past the skipped ones it has reached."""
        expected = self.next.get(partition)
        skipped = self._skipped.get(partition)
        while skipped and expected in skipped:
            skipped.discard(expected)
            expected = self.next[partition] = expected + 1
        return expected

    def stalled(self, ends: Mapping[Partition, int], now: float) -> dict[Partition, int]:
        """Partitions whose log end (`ends`) is past their next offset but that took nothing for
        `STALL_SECONDS` (or longer, after stalls that a seek did not end), each with the offset
        to seek it to (and counted as sought now)."""
        found = {}
        for partition, end in ends.items():
            expected = self._expected(partition)
            wait = self._stall_wait.get(partition, STALL_SECONDS)
            if expected is not None and end > expected and now - self._moved.get(partition, now) >= wait:
                found[partition] = expected
                self._moved[partition] = now
                self._stall_wait[partition] = min(2 * wait, STALL_MAX_SECONDS)
                log.info(
                    "%s[%d]: nothing taken for %.0f s below the log end %d: reading again from %d",
                    *partition,
                    wait,
                    end,
                    expected,
                )
        return found


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


def position_records(reached: Mapping[Partition, int]) -> dict[str, tuple[int, bytes]]:
    """`POSITIONS_TABLE` records (key -> changelog partition, value) for the next offsets `reached`."""
    return {f"{topic}:{partition}": (partition, b"%d" % offset) for (topic, partition), offset in reached.items()}


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

    def __setitem__(self, partition: Any, offset: int | None) -> None:
        pinned = self.pinned.get(partition)
        if pinned is not None:
            if offset != pinned:
                return
            del self.pinned[partition]
        super().__setitem__(partition, offset)


class PositionedConsumer(AIOKafkaConsumer):
    """faust's Kafka consumer, seeking each input partition to its saved position
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

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        """faust's fetch, but a record the client cannot read is skipped, not raised.

        aiokafka raises `CorruptRecordException` for a fetch that holds a batch failing its CRC
        check (the broker keeps it as written), handing out none of the fetch's records. Raised
        here, it stopped faust's fetcher and the worker; restarted, the worker fetched the same
        batch and stopped again. Now the partition is read one record at a time
        (`_read_up_to_unreadable`) up to the one that cannot be read. An error that names no
        partition is raised as before: aiokafka's `UnsupportedCodecError` names none, and cannot
        happen for gzip, snappy, lz4 or zstd (cramjam is a dependency)."""
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
