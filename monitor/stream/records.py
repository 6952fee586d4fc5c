"""The worker's internal records, as msgpack: what goes between its agents and into its tables.

Services never see these; they are Driftline's own topics (`<group>-join-input`,
`<group>-joined`) and changelogs. Each message carries a batch (one message per destination
partition per input batch, not one per event: on the embedded broker every message is its own
produce request).

- join input, keyed by `prediction_id`: `{"p": [prediction, ...]}` or `{"o": [outcome, ...]}`,
  each item the plain fields `JoinStore.add_prediction_fields` / `add_outcome_fields` take;
- joined, keyed by `model_id`: `[[join partition, position, JoinedOutcome.to_dict()], ...]`
  where `position` orders the joins of one join partition (`join_position`);
- state: `{"state": ..., "covered": {"<input>": next position}}` for a model or a join partition.
"""

from __future__ import annotations

from typing import Any

import msgpack
from kafka.partitioner.default import murmur2

from monitor.contracts.batch import OutcomeBatch, PredictionBatch
from monitor.evaluation.join import JoinedOutcome

MAX_ITEMS_PER_MESSAGE = 1024
"""A join-input message holds at most this many items, so `join_position` stays unique."""


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client, kafka-python
    and aiokafka) gives `key`: a service keying outcomes by `prediction_id` lands where the
    worker sends that prediction.

    >>> partition_for("p-1", 4) == partition_for("p-1", 4), 0 <= partition_for("p-1", 4) < 4
    (True, True)
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def join_position(offset: int, index: int) -> int:
    """Order of the `index`-th item of the join-input message at `offset`: the join agent reads a
    partition in one order, so after a restart it joins the same items at the same positions and
    the model agent can skip those it has already counted.

    >>> join_position(3, 1) > join_position(2, 1023)
    True
    """
    return offset * MAX_ITEMS_PER_MESSAGE + index


def prediction_items(batch: PredictionBatch) -> list[tuple[Any, ...]]:
    """Each prediction of `batch` as the join takes it (`JoinStore.add_prediction_fields`)."""
    return list(
        zip(
            batch.prediction_ids,
            batch.model_ids,
            batch.model_versions,
            batch.timestamps.tolist(),
            batch.predictions,
            batch.probabilities,
            batch.slices,
            strict=True,
        )
    )


def outcome_items(batch: OutcomeBatch) -> list[tuple[Any, ...]]:
    """Each outcome of `batch` as the join takes it (`JoinStore.add_outcome_fields`)."""
    return list(zip(batch.prediction_ids, batch.labels, batch.timestamps.tolist(), batch.model_ids, strict=True))


def join_input_messages(kind: str, items: list[tuple[Any, ...]], partitions: int) -> list[tuple[int, bytes]]:
    """`items` (each led by its prediction id) as join-input messages: (partition, value), grouped
    by the partition of their prediction id, at most `MAX_ITEMS_PER_MESSAGE` to a message.

    >>> messages = join_input_messages("o", [("p", 1, 9.5, None)], 1)
    >>> [(partition, decode_join_input(value)) for partition, value in messages]
    [(0, ('o', [['p', 1, 9.5, None]]))]
    """
    by_partition: dict[int, list[tuple[Any, ...]]] = {}
    for item in items:
        by_partition.setdefault(partition_for(item[0], partitions), []).append(item)
    return [
        (partition, encode_join_input(kind, group[start : start + MAX_ITEMS_PER_MESSAGE]))
        for partition, group in by_partition.items()
        for start in range(0, len(group), MAX_ITEMS_PER_MESSAGE)
    ]


def encode_join_input(kind: str, items: list[tuple[Any, ...]] | list[list[Any]]) -> bytes:
    """`kind` is "p" (predictions) or "o" (outcomes).

    >>> decode_join_input(encode_join_input("o", [["p-1", 1, 10.0, None]]))
    ('o', [['p-1', 1, 10.0, None]])
    """
    if len(items) > MAX_ITEMS_PER_MESSAGE:
        raise ValueError(f"{len(items)} items in one join-input message, over {MAX_ITEMS_PER_MESSAGE}")
    return msgpack.packb({kind: items})


def decode_join_input(raw: bytes) -> tuple[str, list[list[Any]]]:
    ((kind, items),) = msgpack.unpackb(raw).items()
    return kind, items


def encode_joined(joined: list[tuple[int, int, JoinedOutcome]]) -> bytes:
    return msgpack.packb([[partition, position, outcome.to_dict()] for partition, position, outcome in joined])


def decode_joined(raw: bytes) -> list[tuple[int, int, JoinedOutcome]]:
    return [(partition, position, JoinedOutcome.from_dict(data)) for partition, position, data in msgpack.unpackb(raw)]


def encode_state(state: dict[str, Any], covered: dict[str, int]) -> bytes:
    """A table record: a state and the input positions it covers.

    >>> decode_state(encode_state({"drift": {"events": 3}}, {"0": 3}))
    ({'drift': {'events': 3}}, {'0': 3})
    """
    return msgpack.packb({"state": state, "covered": covered})


def decode_state(raw: bytes) -> tuple[dict[str, Any], dict[str, int]]:
    record = msgpack.unpackb(raw)
    return record["state"], record["covered"]
