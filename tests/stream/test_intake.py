"""Kafka messages into columnar batches, without a broker: single events and batch envelopes
from any client, each invalid event dead-lettered alone with its index, replays skipped."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from monitor.stream.intake import new_events, read_outcomes, read_predictions


def _prediction(i: int, **fields) -> dict:
    return {
        "model_id": "m",
        "prediction_id": f"p{i}",
        "timestamp": "2024-01-01T00:00:00Z",
        "features": {"x": float(i)},
        "prediction": 1,
        **fields,
    }


def _message(offset: int, value: bytes, partition: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic="predictions", partition=partition, offset=offset, key=b"m", value=value)


def _envelope(*events: dict, version: int = 1) -> bytes:
    return json.dumps({"batch_version": version, "events": list(events)}).encode()


def test_single_events_and_envelopes_become_one_batch_in_message_order():
    messages = [
        _message(10, json.dumps(_prediction(0)).encode()),
        _message(11, _envelope(_prediction(1), _prediction(2))),
        _message(3, json.dumps(_prediction(3)).encode(), partition=1),
    ]
    intake = read_predictions(messages)
    assert intake.batch.prediction_ids.tolist() == ["p0", "p1", "p2", "p3"]
    assert intake.batch.positions.tolist() == [10, 11, 11, 3]
    assert intake.partitions.tolist() == [0, 0, 0, 1]
    assert intake.batch.column("x") == [0.0, 1.0, 2.0, 3.0]
    assert intake.refused == []


def test_an_invalid_event_in_an_envelope_is_refused_alone_with_its_index_and_bytes():
    bad = _prediction(1, features={"x": {"nested": 1}})
    messages = [_message(5, _envelope(_prediction(0), bad, _prediction(2)))]
    intake = read_predictions(messages)
    assert intake.batch.prediction_ids.tolist() == ["p0", "p2"]
    (refused,) = intake.refused
    assert (refused.message.offset, refused.index, refused.error.reason.value) == (5, 1, "schema")
    assert json.loads(refused.original) == bad
    assert str(refused.error).startswith("features.x:")


def test_an_envelope_of_an_unknown_version_is_refused_whole():
    value = _envelope(_prediction(0), version=2)
    intake = read_predictions([_message(0, value), _message(1, json.dumps(_prediction(1)).encode())])
    assert intake.batch.prediction_ids.tolist() == ["p1"]
    (refused,) = intake.refused
    assert (refused.original, refused.index) == (value, None)
    assert str(refused.error) == "batch_version: 2 is not a version this worker reads (1)"


def test_a_message_that_is_not_json_is_refused_as_undecodable():
    intake = read_predictions([_message(0, b"\xff not json")])
    assert len(intake.batch) == 0
    assert [(r.original, r.error.reason.value) for r in intake.refused] == [(b"\xff not json", "undecodable")]


def test_outcomes_in_an_envelope():
    outcome = {"prediction_id": "p1", "label": 1, "timestamp": "2024-01-01T00:00:00Z"}
    intake = read_outcomes([_message(7, _envelope(outcome, {**outcome, "prediction_id": "p2"}), partition=2)])
    assert intake.batch.prediction_ids.tolist() == ["p1", "p2"]
    assert intake.batch.positions.tolist() == [7, 7]
    assert intake.partitions.tolist() == [2, 2]


def test_events_a_state_covers_are_skipped_per_partition_and_an_envelope_is_skipped_whole():
    covered = {"0": 11}
    positions, partitions = np.array([10, 10, 11, 11, 4]), np.array([0, 0, 0, 0, 1])
    assert new_events(positions, partitions, covered).tolist() == [False, False, True, True, True]
    assert covered == {"0": 12, "1": 5}
    assert new_events(positions, partitions, covered).tolist() == [False] * 5
    assert covered == {"0": 12, "1": 5}
