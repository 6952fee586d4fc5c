"""Batches on the wire: many events of one model in one Kafka message, in a versioned envelope.

A service may publish each event as its own message (any client, any language), or pack up to
`MAX_ENVELOPE_EVENTS` of them in one message (what `DriftlinePublisher` does):

    {"batch_version": 1, "events": [{...a prediction...}, {...a prediction...}]}

Each event in `events` is exactly what would be sent alone (`prediction_event.json`,
`outcome_event.json`); the envelope is `schemas/event_envelope.json`. One message per event
costs the worker a Kafka record, a faust event and an acknowledgement each; an envelope costs
them once per batch.

Events are validated one by one, so a batch with some invalid events dead-letters those events
alone, each with its index in the envelope (`DeadLetterSource.index`); a message that is not a
readable envelope is dead-lettered whole.

>>> unpacked = unpack([b'{"batch_version": 1, "events": [{"a": 1}, {"b": 2}]}', b'{"c": 3}'])
>>> unpacked.raws, unpacked.message.tolist(), unpacked.index
([b'{"a": 1}', b'{"b": 2}', b'{"c": 3}'], [0, 0, 1], [0, 1, None])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from monitor.contracts.deadletter import DeadLetterReason
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.contracts.validation import InvalidEvent

BATCH_VERSION = 1
MAX_ENVELOPE_EVENTS = 1000
"""Most events one envelope may hold: bounds the work one message brings (the size of a message
is bounded by the broker's `max.message.bytes`, and each event by `limits.max_event_bytes`)."""


class EventEnvelope(BaseModel):
    """The contract of a batch on the wire, for `schemas/` and for producers in other languages.
    The worker reads envelopes with `unpack`, not with this model: it validates each event on
    its own, to dead-letter only the invalid ones."""

    model_config = ConfigDict(extra="forbid")

    batch_version: Literal[1] = Field(description="The envelope format; a reader refuses versions it does not know.")
    events: list[PredictionEvent | OutcomeEvent] = Field(
        min_length=1,
        max_length=MAX_ENVELOPE_EVENTS,
        description="Events as each would be sent alone; predictions on the predictions topic, outcomes on the"
        " outcomes topic.",
    )


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    batch_version: int
    events: list[msgspec.Raw]


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_OBJECT = msgspec.json.Decoder(dict[str, Any])
_MARK = b'"batch_version"'


@dataclass(slots=True)
class Unpacked:
    """The events of a batch of messages, in order, each still raw bytes."""

    raws: list[bytes]
    message: np.ndarray
    """Index of the message each event came from (int64)."""
    index: list[int | None]
    """Each event's index in its envelope; None for an event sent alone."""
    refused: list[tuple[int, InvalidEvent]]
    """(message index, why) of each message that claims to be an envelope and is not a valid one."""


def unpack(values: Sequence[bytes], max_events: int = MAX_ENVELOPE_EVENTS) -> Unpacked:
    """Split message `values` into events: an envelope's events one by one, any other message as
    one event (it is validated as an event later, so a message that is neither is refused there
    with the event's reasons). A message is an envelope when its top-level object has a
    `batch_version` field."""
    raws: list[bytes] = []
    message: list[int] = []
    index: list[int | None] = []
    refused: list[tuple[int, InvalidEvent]] = []
    for at, value in enumerate(values):
        if _MARK not in value:
            raws.append(value)
            message.append(at)
            index.append(None)
            continue
        try:
            envelope = _ENVELOPE.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            if not _claims_envelope(value):  # "batch_version" inside a value or a feature name
                raws.append(value)
                message.append(at)
                index.append(None)
                continue
            refused.append((at, InvalidEvent(DeadLetterReason.schema, f"envelope: {_lowered(error)}")))
            continue
        problem = _envelope_problem(envelope, max_events)
        if problem is not None:
            refused.append((at, problem))
            continue
        raws += map(bytes, envelope.events)
        message += [at] * len(envelope.events)
        index += range(len(envelope.events))
    return Unpacked(raws, np.asarray(message, dtype=np.int64), index, refused)


def _claims_envelope(value: bytes) -> bool:
    try:
        return "batch_version" in _OBJECT.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False


def _envelope_problem(envelope: _Envelope, max_events: int) -> InvalidEvent | None:
    if envelope.batch_version != BATCH_VERSION:
        return InvalidEvent(
            DeadLetterReason.schema,
            f"batch_version: {envelope.batch_version} is not a version this worker reads ({BATCH_VERSION})",
        )
    if not envelope.events:
        return InvalidEvent(DeadLetterReason.schema, "events: an envelope holds at least one event")
    if len(envelope.events) > max_events:
        return InvalidEvent(
            DeadLetterReason.limit, f"events: {len(envelope.events)} events in one envelope, over {max_events}"
        )
    return None


def _lowered(error: Exception) -> str:
    text = str(error)
    return text[:1].lower() + text[1:]
