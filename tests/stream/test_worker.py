"""`driftline worker` end to end on the real broker: predictions in, alerts and dead letters out.

The worker runs as its own process (`run_worker`, the config in a YAML file), as in production;
the test talks to it only through Kafka, with the publisher and plain kafka-python.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_support import metric as _metric
from worker_support import start_worker, stop_worker

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert
from monitor.contracts.config import KafkaConfig
from monitor.contracts.deadletter import DeadLetter
from monitor.contracts.envelope import unpack
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import MODEL_STATE_TABLE, changelog_topic, ensure_topics
from monitor.stream.records import decode_state

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud-scorer"
WARMUP, WINDOW, EVENTS, SHIFT_AT = 500, 200, 1500, 900
INVALID = {
    b"\xff\xfe not utf-8": "undecodable",
    b"[1, 2, 3]": "undecodable",
    json.dumps({"model_id": MODEL, "prediction_id": "broken"}).encode(): "schema",
}
BROKEN_IN_ENVELOPE = json.dumps({"model_id": MODEL, "prediction_id": "broken-in-an-envelope"}).encode()
"""Sent as the second event of a batch envelope, after a valid one: dead-lettered alone, index 1."""

pytestmark = pytest.mark.broker


def _start_worker(tmp_path: Path, kafka_config: KafkaConfig, warmup: int = WARMUP) -> subprocess.Popen:
    return start_worker(
        tmp_path, kafka_config, {"reference": {"warmup_events": warmup}, "window": {"size_events": WINDOW}}
    )


def _publish_predictions(
    kafka_config: KafkaConfig, first: int, last: int, noise_features: int = 0, batch_events: int = 1
) -> None:
    """Predictions `first` to `last - 1` of one stream whose `amount` shifts at `SHIFT_AT`,
    with `noise_features` more features to make the state large. One message per event unless
    `batch_events` says otherwise: the tests that count offsets count events."""
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with DriftlinePublisher(kafka_config, batch_events=batch_events) as publisher:
        for i in range(first, last):
            amount = rng.gauss(0, 1) + (3.0 if i >= SHIFT_AT else 0.0)
            publisher.publish_prediction(
                model_id=MODEL,
                prediction_id=f"p{i}",
                features={
                    "amount": amount,
                    "age": rng.gauss(40, 5),
                    **{f"noise{j}": rng.random() for j in range(noise_features)},
                },
                prediction=0.5,
                model_version="v1",
                timestamp=start + timedelta(seconds=i),
            )
        publisher.flush(timeout=10)


def _publish(kafka_config: KafkaConfig) -> None:
    _publish_predictions(kafka_config, 0, EVENTS, batch_events=100)  # in envelopes, as the publisher sends
    producer = KafkaProducer(**producer_settings(kafka_config))
    for raw in INVALID:
        producer.send(kafka_config.topics.predictions, key=MODEL.encode(), value=raw)
    valid = json.dumps(
        {"model_id": MODEL, "model_version": "v1", "prediction_id": f"p{EVENTS}", "timestamp": "2026-01-02T00:00:00Z",
         "features": {"amount": 3.0, "age": 40.0}, "prediction": 0.5}
    ).encode()  # fmt: skip
    envelope = b'{"batch_version": 1, "events": [' + valid + b", " + BROKEN_IN_ENVELOPE + b"]}"
    producer.send(kafka_config.topics.predictions, key=MODEL.encode(), value=envelope)
    producer.flush(timeout=10)
    producer.close()


def test_worker_raises_drift_alert_and_dead_letters_invalid_input(tmp_path, kafka_config):
    ensure_topics(kafka_config)
    worker = _start_worker(tmp_path, kafka_config)
    consumer = KafkaConsumer(
        kafka_config.topics.alerts,
        kafka_config.topics.dead_letter,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=500),
    )
    try:
        _publish(kafka_config)
        alerts: list[Alert] = []
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and worker.poll() is None:
            for record in consumer:
                if record.topic == kafka_config.topics.alerts:
                    assert record.key == MODEL.encode()
                    alerts.append(Alert.model_validate_json(record.value))
                else:
                    letters.append(DeadLetter.model_validate_json(record.value))
            drift = [a for a in alerts if a.kind == "feature_drift" and a.feature == "amount"]
            if drift and len(letters) > len(INVALID):
                break
        log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        assert worker.poll() is None, f"worker exited:\n{log}"
        assert drift, f"no feature_drift alert on 'amount'; got {[(a.kind, a.feature) for a in alerts]}\n{log}"
        assert all(a.model_id == MODEL for a in alerts)
        assert not [a for a in alerts if a.kind == "feature_drift" and a.feature == "age"]
        expected = {**INVALID, BROKEN_IN_ENVELOPE: "schema"}
        assert {letter.original(): letter.reason.value for letter in letters} == expected
        assert {letter.original(): letter.source.index for letter in letters} == {
            **dict.fromkeys(INVALID),
            BROKEN_IN_ENVELOPE: 1,
        }
        for letter in letters:
            assert letter.source.topic == kafka_config.topics.predictions
            assert letter.source.partition is not None and letter.source.offset is not None
            assert letter.original_b64 == base64.b64encode(letter.original()).decode()
    finally:
        consumer.close()
        stop_worker(worker)


def _committed(kafka_config: KafkaConfig) -> int:
    """Messages of the predictions topic the worker's consumer group has committed (OffsetFetch;
    this consumer never joins the group)."""
    consumer = KafkaConsumer(
        **consumer_settings(kafka_config, group_id=kafka_config.consumer_group, enable_auto_commit=False)
    )
    try:
        topic = kafka_config.topics.predictions
        offsets = [consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic)]
    finally:
        consumer.close(autocommit=False)
    return sum(offset or 0 for offset in offsets)


def _messages_holding(kafka_config: KafkaConfig, events: int) -> int:
    """The offset just past the message that brings the predictions topic's events to `events`
    (one partition holds the model). The publisher sends an envelope when it is full or 20 ms
    after its first event, so on a slow machine 700 events may take more than 14 envelopes of 50:
    offsets are counted, not assumed. (Not `end_offsets`: the embedded broker answers it wrong
    when a produce request held more than one record, see BROKER.md.)"""
    consumer = KafkaConsumer(
        kafka_config.topics.predictions,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=10_000),
    )
    counted = 0
    try:
        for record in consumer:
            counted += len(unpack([record.value]).raws)  # an envelope's events, or the event sent alone
            if counted >= events:
                return record.offset + 1
    finally:
        consumer.close()
    raise AssertionError(f"the predictions topic holds {counted} events, not {events}")


def _latest_state(consumer: KafkaConsumer, states: dict[str, dict]) -> dict[str, dict]:
    """Read what the changelog holds now into `states` (last record per model wins)."""
    for record in consumer:
        monitor_state, covered = decode_state(record.value)
        states[json.loads(record.key)] = {"monitor": monitor_state, "covered": covered, "bytes": len(record.value)}
    return states


def _wait_for_events(consumer: KafkaConsumer, states: dict, worker: subprocess.Popen, events: int, log: Path):
    deadline = time.monotonic() + 45  # a restarted worker first waits out its killed self's session (10 s) in the group
    while time.monotonic() < deadline and worker.poll() is None:
        state = _latest_state(consumer, states).get(MODEL)
        if state is not None and state["monitor"]["drift"]["events"] >= events:
            return state
    raise AssertionError(
        f"state did not reach {events} events: {states.get(MODEL, {}).get('covered')}\n"
        + log.read_text(errors="replace")[-3000:]
    )


def _after_a_sentinel(
    kafka_config: KafkaConfig,
    consumer: KafkaConsumer,
    states: dict,
    worker: subprocess.Popen,
    offset: int,
    log: Path,
    noise_features: int = 0,
    index: int | None = None,
) -> dict:
    """Publish one more prediction of the model (the next, `offset`, of its partition) and return
    the first saved state that covers it. The worker applies a partition in order and saves its
    states only at checkpoints, after what it read before: so a state that covers the sentinel
    has applied everything read before it, and a count is exact, with no sleep standing in for
    "nothing else happened" (a double count would show in its `events`). `index` numbers the
    sentinel's prediction when offsets do not count events (envelopes)."""
    first = offset if index is None else index
    _publish_predictions(kafka_config, first, first + 1, noise_features)
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and worker.poll() is None:
        state = _latest_state(consumer, states).get(MODEL)
        if state is not None and sum(state["covered"].values()) > offset:
            return state
    raise AssertionError(
        f"no saved state covers the sentinel at offset {offset}: {states.get(MODEL, {}).get('covered')}\n"
        + log.read_text(errors="replace")[-3000:]
    )


@pytest.mark.parametrize("batch_events", [1, 50], ids=["one-event-per-message", "envelopes-of-50"])
def test_worker_killed_and_restarted_counts_every_event_once(tmp_path, kafka_config, batch_events):
    """SIGKILL after a first half, restart, second half: the state recovered from the changelog
    has counted each event exactly once, whatever the consumer group had committed, whether
    each message holds one event or a batch envelope (a replayed envelope is skipped whole).
    100 features and a warm-up longer than the run make the state records larger than 1 MB
    (Kafka's default message size), as with wide models in production."""
    ensure_topics(kafka_config)
    changelog = KafkaConsumer(
        changelog_topic(kafka_config, MODEL_STATE_TABLE),
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=200),
    )
    first = _start_worker(tmp_path, kafka_config, warmup=2000)
    second = None
    states: dict[str, dict] = {}
    try:
        _publish_predictions(kafka_config, 0, 700, noise_features=98, batch_events=batch_events)
        first_half = _messages_holding(kafka_config, 700)
        state = _wait_for_events(changelog, states, first, 700, tmp_path / "worker.log")
        first.send_signal(signal.SIGKILL)  # before or after faust commits: either must count once
        first.wait(timeout=5)
        assert state["monitor"]["drift"]["events"] == 700
        (tmp_path / "worker.log").rename(tmp_path / "worker-killed.log")

        second = _start_worker(tmp_path, kafka_config, warmup=2000)
        _publish_predictions(kafka_config, 700, 1000, noise_features=98, batch_events=batch_events)
        _wait_for_events(changelog, states, second, 1000, tmp_path / "worker.log")
        messages = _messages_holding(kafka_config, 1000)  # the sentinel's offset
        state = _after_a_sentinel(
            kafka_config, changelog, states, second, messages, tmp_path / "worker.log", 98, index=1000
        )
        assert state["monitor"]["drift"]["events"] == 1001  # the 1,000 and the sentinel, each once
        assert sum(state["covered"].values()) == messages + 1  # one partition holds the model
        assert second.poll() is None
        assert state["bytes"] > 1_000_000
        # It resumed at the position it saved after the state (so at most 700), not at faust's
        # committed offset; what it read again below the state's 700 was skipped.
        log = (tmp_path / "worker.log").read_text(errors="replace")
        resumed = re.findall(r"predictions\.\S+\[\d+\] resumes at its saved offset (\d+)", log)
        assert resumed and int(resumed[0]) <= first_half, log[-3000:]
    finally:
        changelog.close()
        stop_worker(first)
        if second is not None:
            stop_worker(second)


def test_a_state_too_large_to_save_is_replayed_after_a_kill_not_lost(tmp_path, kafka_config):
    """A worker whose model state outgrows `kafka.max_state_bytes` keeps counting in memory but
    saves neither that state nor its input positions; killed and restarted with room for the
    state, the next worker reads again from the last saved position and counts every event once."""
    ensure_topics(kafka_config)
    changelog = KafkaConsumer(
        changelog_topic(kafka_config, MODEL_STATE_TABLE),
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=200),
    )
    small = kafka_config.model_copy(update={"max_state_bytes": 200_000})  # 100 features pass it within 700 events
    first = _start_worker(tmp_path, small, warmup=2000)
    second = None
    states: dict[str, dict] = {}
    log = tmp_path / "worker.log"
    oversize = f'driftline_oversize_states_total{{table="{MODEL_STATE_TABLE}"}}'
    counted = f'driftline_events_total{{model="{MODEL}",type="prediction"}}'
    try:
        _publish_predictions(kafka_config, 0, 700, noise_features=98)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (_metric(log, counted) == 700 and _metric(log, oversize) >= 2):
            time.sleep(0.5)
        assert _metric(log, counted) == 700 and _metric(log, oversize) >= 2, log.read_text(errors="replace")[-3000:]
        saved = _latest_state(changelog, states).get(MODEL)
        saved_events = saved["monitor"]["drift"]["events"] if saved else 0
        assert saved_events < 700  # the state that counted them all was never written
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=5)
        log.rename(tmp_path / "worker-killed.log")

        second = _start_worker(tmp_path, kafka_config, warmup=2000)
        _publish_predictions(kafka_config, 700, 1000, noise_features=98)
        _wait_for_events(changelog, states, second, 1000, log)
        state = _after_a_sentinel(kafka_config, changelog, states, second, 1000, log, noise_features=98)
        assert state["monitor"]["drift"]["events"] == 1001  # the 1,000 and the sentinel, each once
        assert sum(state["covered"].values()) == 1001
        # no position was saved past the last saved state: the restart read from there again
        text = log.read_text(errors="replace")
        resumes = r"predictions\.\S+\[\d+\] resumes at (?:its saved offset|the start of its log[^:]*:) (\d+)"
        resumed = re.findall(resumes, text)
        assert resumed and max(int(offset) for offset in resumed) <= saved_events, text[-3000:]
    finally:
        changelog.close()
        stop_worker(first)
        if second is not None:
            stop_worker(second)


DRAIN_APP = """
import os
import faust
from monitor.contracts.config import load_config
from monitor.kafka.settings import faust_settings
kafka = load_config(os.environ["DRAIN_CONFIG"]).kafka
app = faust.App(kafka.consumer_group, **faust_settings(kafka), web_enabled=False, autodiscover=False,
                consumer_auto_offset_reset="earliest", broker_commit_interval=0.5)
@app.agent(app.topic(kafka.topics.predictions, value_serializer="raw"))
async def drain(stream):
    async for _ in stream:
        pass
app.main()
"""
"""A faust app in the worker's consumer group that reads `predictions` and commits it all, as
faust did when it committed messages Driftline's agents never received."""


def _drain_with_faust(tmp_path: Path, kafka_config: KafkaConfig, committed: int) -> None:
    (tmp_path / "drain.py").write_text(DRAIN_APP)
    log = tmp_path / "drain.log"
    drain = subprocess.Popen(
        [sys.executable, str(tmp_path / "drain.py"), "worker", "--loglevel=info"],
        cwd=ROOT,
        env={**os.environ, "DRAIN_CONFIG": str(tmp_path / "worker.yaml")},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 40
        while _committed(kafka_config) < committed and time.monotonic() < deadline and drain.poll() is None:
            time.sleep(0.5)
        assert _committed(kafka_config) == committed, log.read_text(errors="replace")[-3000:]
    finally:
        stop_worker(drain)


def test_worker_resumes_at_its_saved_positions_not_at_a_commit_past_them(tmp_path, kafka_config):
    """Predictions published while no worker runs, and the group's offsets then committed past
    them: the restarted worker reads them anyway, from the positions it saved with its state."""
    ensure_topics(kafka_config)
    changelog = KafkaConsumer(
        changelog_topic(kafka_config, MODEL_STATE_TABLE),
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=200),
    )
    first = _start_worker(tmp_path, kafka_config)
    second = None
    states: dict[str, dict] = {}
    try:
        _publish_predictions(kafka_config, 0, 300)
        _wait_for_events(changelog, states, first, 300, tmp_path / "worker.log")
        stop_worker(first)
        (tmp_path / "worker.log").rename(tmp_path / "worker-first.log")
        _publish_predictions(kafka_config, 300, 500)
        _drain_with_faust(tmp_path, kafka_config, committed=500)

        second = _start_worker(tmp_path, kafka_config)
        _wait_for_events(changelog, states, second, 500, tmp_path / "worker.log")
        state = _after_a_sentinel(kafka_config, changelog, states, second, 500, tmp_path / "worker.log")
        assert state["monitor"]["drift"]["events"] == 501  # the 500 and the sentinel, each once
        assert sum(state["covered"].values()) == 501
        assert "resumes at its saved offset 300 (committed: 500)" in (tmp_path / "worker.log").read_text()
    finally:
        changelog.close()
        stop_worker(first)
        if second is not None:
            stop_worker(second)
