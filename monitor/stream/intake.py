"""Kafka messages -> columnar batches: the worker's door into the core, testable without a broker.

A batch of messages from any partitions becomes one `PredictionBatch` (or `OutcomeBatch`) whose
positions are the messages' offsets, with each event's partition beside it, and the dead letters
of what was refused. Messages may hold one event each or a batch envelope
(`monitor.contracts.envelope`); the events of an envelope share its offset, so a replay after a
restart skips or takes the whole message. With a `PrivacyPolicy`, the features marked `pii` are
gone from the batch, and the refused keep only what a dead letter may (`PrivacyPolicy.refusal`).

>>> from types import SimpleNamespace as Message
>>> good = (b'{"model_id": "m", "prediction_id": "p1", "timestamp": "2024-01-01T00:00:00Z",'
...         b' "features": {"x": 1.0}, "prediction": 1}')
>>> envelope = b'{"batch_version": 1, "events": [' + good.replace(b"p1", b"p2") + b', {"model_id": "m"}]}'
>>> intake = read_predictions([Message(topic="predictions", partition=3, offset=7, key=b"m", value=good),
...                            Message(topic="predictions", partition=3, offset=8, key=b"m", value=envelope)])
>>> intake.batch.prediction_ids.tolist(), intake.batch.positions.tolist(), intake.partitions.tolist()
(['p1', 'p2'], [7, 8], [3, 3])
>>> [(letter.message.offset, letter.index, letter.error.reason.value) for letter in intake.refused]
[(8, 1, 'schema')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from monitor.contracts.batch import EventKind, OutcomeBatch, PredictionBatch, decode_batch
from monitor.contracts.envelope import unpack
from monitor.contracts.limits import EventLimits
from monitor.contracts.privacy import PrivacyPolicy
from monitor.contracts.validation import InvalidEvent


class Message(Protocol):
    """What the worker reads of a Kafka message (faust's `Message` has these)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Refused:
    """An input the worker cannot accept: the message, the event's bytes (the whole message for a
    message of one event or an unreadable envelope), its index in the envelope, and why. Under a
    privacy policy the bytes may be a `RedactedOriginal` and the reason quotes no value."""

    message: Message
    original: bytes
    index: int | None
    error: InvalidEvent


@dataclass(slots=True)
class PredictionIntake:
    batch: PredictionBatch
    """Accepted predictions in message order; `positions` are their messages' offsets."""
    partitions: np.ndarray
    """Each accepted prediction's partition (int64)."""
    refused: list[Refused]


@dataclass(slots=True)
class OutcomeIntake:
    batch: OutcomeBatch
    partitions: np.ndarray
    refused: list[Refused]


def read_predictions(
    messages: Sequence[Message], limits: EventLimits | None = None, privacy: PrivacyPolicy | None = None
) -> PredictionIntake:
    """The predictions in `messages`, validated and decoded into one batch."""
    return PredictionIntake(*_read(messages, limits, "prediction", privacy))


def read_outcomes(
    messages: Sequence[Message], limits: EventLimits | None = None, privacy: PrivacyPolicy | None = None
) -> OutcomeIntake:
    """The outcomes in `messages`, validated and decoded into one batch (outcomes carry no
    features, but a prediction sent to the outcomes topic by mistake is refused redacted)."""
    return OutcomeIntake(*_read(messages, limits, "outcome", privacy))


def _read(
    messages: Sequence[Message], limits: EventLimits | None, kind: EventKind, privacy: PrivacyPolicy | None
) -> tuple[Any, np.ndarray, list[Refused]]:
    """The batch of `kind` in `messages` with its messages' offsets as positions, each event's
    partition, and the refused. Decoded with each event's index as its position, then
    positioned."""
    values = [message.value if isinstance(message.value, bytes) else b"" for message in messages]
    unpacked = unpack(values)
    refused = [Refused(messages[at], values[at], None, error) for at, error in unpacked.refused]
    decoded = decode_batch(unpacked.raws, np.arange(len(unpacked.raws)), limits, kind, privacy)
    for event, error in decoded.rejected:
        refused.append(Refused(messages[unpacked.message[event]], unpacked.raws[event], unpacked.index[event], error))
    if refused and privacy is not None and privacy.active:
        for item in refused:
            item.original, item.error = privacy.refusal(item.original, item.error)
    offsets = np.fromiter((message.offset for message in messages), dtype=np.int64, count=len(messages))
    partitions = np.fromiter((message.partition for message in messages), dtype=np.int64, count=len(messages))
    batch = decoded.predictions if kind == "prediction" else decoded.outcomes
    event_message = unpacked.message[batch.positions]
    batch.positions = offsets[event_message]
    return batch, partitions[event_message], refused


def new_events(positions: np.ndarray, partitions: np.ndarray, covered: dict[str, int]) -> np.ndarray:
    """Which events a state that `covered` (partition as a string -> next offset) does not yet
    include: a boolean mask. Moves `covered` past the events taken.

    >>> covered = {"0": 5}
    >>> new_events(np.array([4, 5, 6]), np.array([0, 0, 1]), covered).tolist(), covered
    ([False, True, True], {'0': 6, '1': 7})
    """
    if not len(positions):
        return np.zeros(0, dtype=bool)
    first = partitions[0]
    if (partitions == first).all():
        keep = positions >= covered.get(str(first), 0)
        if keep.any():
            covered[str(first)] = int(positions[keep].max()) + 1
        return keep
    keep = np.zeros(len(positions), dtype=bool)
    for partition in np.unique(partitions).tolist():
        mine = partitions == partition
        keep |= mine & (positions >= covered.get(str(partition), 0))
        if (taken := keep & mine).any():
            covered[str(partition)] = int(positions[taken].max()) + 1
    return keep
