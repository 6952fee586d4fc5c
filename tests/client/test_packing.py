"""`EnvelopePacker`, without a broker: envelopes bounded by events, bytes and linger time, each
one a valid batch envelope holding its events in order."""

from __future__ import annotations

import pytest

from monitor.client.packing import EnvelopePacker
from monitor.contracts.envelope import EventEnvelope, unpack

EVENT = b'{"model_id": "m", "prediction_id": "p", "features": {}, "prediction": 1}'


def test_an_envelope_closes_at_max_events_and_keeps_its_events_in_order():
    packer = EnvelopePacker(max_events=3, linger_ms=1_000)
    ready = [packed for i in range(7) for packed in packer.add("m", EVENT.replace(b'"p"', b'"p%d"' % i), now=0)[1]]
    assert [len(futures) for _, _, futures in ready] == [3, 3]
    assert packer.held == 1
    envelopes = [envelope for _, envelope, _ in ready + packer.drain()]
    assert unpack(envelopes).raws == [EVENT.replace(b'"p"', b'"p%d"' % i) for i in range(7)]


def test_an_envelope_closes_before_max_bytes_and_is_a_valid_envelope():
    packer = EnvelopePacker(max_events=100, max_bytes=3 * len(EVENT), linger_ms=1_000)
    ready = [packed for _ in range(5) for packed in packer.add("m", EVENT, now=0)[1]]
    assert all(len(envelope) <= 3 * len(EVENT) for _, envelope, _ in ready)
    for _, envelope, futures in ready + packer.drain():
        assert (
            EventEnvelope.model_validate_json(
                envelope.replace(b'"features"', b'"timestamp": "2024-01-01T00:00:00Z", "features"')
            ).batch_version
            == 1
        )
        assert len(unpack([envelope]).raws) == len(futures)


def test_envelopes_are_due_after_the_linger_time_per_key():
    packer = EnvelopePacker(max_events=100, linger_ms=20)
    packer.add("a", EVENT, now=0.0)
    packer.add("b", EVENT, now=0.015)
    assert packer.due(now=0.019) == []
    assert [key for key, _, _ in packer.due(now=0.025)] == ["a"]
    assert [key for key, _, _ in packer.due(now=0.035)] == ["b"]
    assert packer.held == 0


def test_max_events_is_bounded_by_what_a_worker_reads():
    with pytest.raises(ValueError, match="max_events"):
        EnvelopePacker(max_events=5_000)
