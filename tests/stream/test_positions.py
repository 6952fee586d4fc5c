"""InputSequence: which messages an agent takes, and when a partition is sought back (no broker)."""

from __future__ import annotations

from monitor.stream.consumer import _ReadOffsets
from monitor.stream.positions import GAP_SECONDS, RESEEK_SECONDS, STALL_SECONDS, InputSequence, Verdict

P = ("predictions", 0)


def _admit(sequence: InputSequence, offsets: list[int], now: float = 0.0) -> list[str]:
    return [sequence.admit(P, offset, now).value for offset in offsets]


def test_a_partition_is_held_until_the_consumer_resumes_it():
    """faust can deliver from its committed offset before the consumer has sought the partition
    to its saved position: a state that took those messages would cover what faust dropped."""
    sequence = InputSequence()
    assert _admit(sequence, [7, 8]) == ["hold", "hold"]
    sequence.resume({P: 5}, now=0.0)
    assert _admit(sequence, [5, 6, 8]) == ["take", "take", "seek"]
    assert sequence.next[P] == 7


def test_messages_dropped_by_faust_are_read_again_and_nothing_past_them_is_taken_first():
    """faust dropped 11 and 12: 13 and 14 (fetched before the seek) are held, then the seek
    delivers 11 onwards, and the copies of 13 and 14 that were held are taken in order."""
    sequence = InputSequence()
    sequence.resume({P: 11}, now=0.0)
    assert _admit(sequence, [13, 14, 11, 12, 13, 14, 12]) == ["seek", "hold", "take", "take", "take", "take", "seen"]
    assert sequence.next[P] == 15
    assert sequence.repeats[P] == 1


def test_a_message_past_a_gap_is_not_taken_until_the_gap_has_lasted_long_enough():
    """The message that showed the gap can come again before the offsets sought (the 1M soak
    lost 938 outcomes when that was taken as "not in the log"): only a gap that outlasts
    `GAP_SECONDS` of seeking back is the log's own (transaction markers, compaction)."""
    sequence = InputSequence()
    sequence.resume({P: 20}, now=0.0)
    assert _admit(sequence, [25, 26, 25]) == ["seek", "hold", "hold"]
    assert sequence.admit(P, 25, now=GAP_SECONDS - 1) is Verdict.SEEK
    assert sequence.admit(P, 25, now=GAP_SECONDS) is Verdict.TAKE
    assert sequence.next[P] == 26


def test_a_partition_still_waiting_is_sought_again_after_the_reseek_interval():
    sequence = InputSequence()
    sequence.resume({P: 5}, now=0.0)
    assert sequence.admit(P, 9, now=0.0) is Verdict.SEEK
    assert sequence.admit(P, 10, now=RESEEK_SECONDS / 2) is Verdict.HOLD
    assert sequence.admit(P, 11, now=RESEEK_SECONDS) is Verdict.SEEK
    assert sequence.admit(P, 12, now=RESEEK_SECONDS + 0.1) is Verdict.HOLD


def test_a_resume_replaces_the_next_offset_and_forgets_a_pending_gap():
    sequence = InputSequence()
    sequence.resume({P: 5}, now=0.0)
    assert sequence.admit(P, 9, now=0.0) is Verdict.SEEK
    sequence.resume({P: 9}, now=1.0)  # a rebalance sought the partition to 9
    assert _admit(sequence, [9, 10]) == ["take", "take"]


def test_a_partition_whose_last_messages_faust_dropped_is_sought_back_once_it_stalls():
    """No later message shows the gap: the log end does, once nothing was taken for a while."""
    sequence = InputSequence()
    sequence.resume({P: 0, ("outcomes", 1): 4}, now=0.0)
    assert _admit(sequence, [0, 1, 2], now=1.0) == ["take"] * 3
    ends = {P: 6, ("outcomes", 1): 4}  # outcomes[1] has read all it holds
    assert sequence.stalled(ends, now=1.0 + STALL_SECONDS / 2) == {}
    assert sequence.stalled(ends, now=1.0 + STALL_SECONDS) == {P: 3}
    assert sequence.stalled(ends, now=1.0 + STALL_SECONDS + 1) == {}, "sought just now: wait again"
    # The seek brought nothing (the log ends in a transaction marker): the next wait is longer.
    assert sequence.stalled(ends, now=1.0 + 2 * STALL_SECONDS) == {}
    assert sequence.stalled(ends, now=1.0 + 3 * STALL_SECONDS) == {P: 3}
    assert sequence.admit(P, 3, now=1.0 + 3 * STALL_SECONDS) is Verdict.TAKE
    assert sequence.stalled(ends, now=1.0 + 4 * STALL_SECONDS) == {P: 4}, "a message taken: back to the first wait"


def test_a_seek_back_is_not_undone_by_the_rest_of_a_batch_fetched_before_it():
    """faust's fetch loop drops a record below its read offset and then sets the offset to the
    record's: held at the offset sought, the records read again get through."""
    read_offsets = _ReadOffsets()
    read_offsets[P] = 14  # delivered up to 14; the agent saw a gap at 13 and seeks back to 11
    read_offsets.pin(P, 11)
    for offset in (15, 16):  # the rest of the earlier batch
        read_offsets[P] = offset
    assert read_offsets[P] == 11
    read_offsets[P] = 11  # read again: the hold ends
    read_offsets[P] = 12
    assert read_offsets[P] == 12 and not read_offsets.pinned
    assert read_offsets[("outcomes", 3)] is None
