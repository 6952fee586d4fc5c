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
- `PositionedConsumer` (`monitor.stream.consumer`) resumes every input partition there after a
  (re)assignment, not at the committed offset. What lies between the saved position and the
  states (saved just before it) is read again and skipped as a replay.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

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


def position_records(reached: Mapping[Partition, int]) -> dict[str, tuple[int, bytes]]:
    """`POSITIONS_TABLE` records (key -> changelog partition, value) for the next offsets `reached`."""
    return {f"{topic}:{partition}": (partition, b"%d" % offset) for (topic, partition), offset in reached.items()}
