"""Helpers for the reliability tests: a seeded stream of predictions and their outcomes, pre-encoded
and published fast with plain kafka-python; the model-state changelog read as counts; a worker
killed with SIGKILL at seeded random times and restarted.

The stream: `predictions` events round robin over `models`, `spacing_seconds` of event time apart, each
followed `label_lag` events later (in publish order) by its outcome, stamped a minute after the
prediction. Predictions are keyed by `model_id`, outcomes by `prediction_id`, as services publish
them (`DriftlinePublisher`); the JSON is what the publisher writes, encoded once up front so that
a million events publish in seconds instead of minutes.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import orjson
from kafka import KafkaConsumer, KafkaProducer
from worker_support import log_tail, start_worker, stop_worker

from monitor.contracts.config import KafkaConfig
from monitor.evaluation.join import COUNTERS as JOIN_COUNTERS
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import JOIN_STATE_TABLE, MODEL_STATE_TABLE, changelog_topic
from monitor.stream.records import decode_join_input, decode_state, partition_for

START = datetime(2026, 1, 1, tzinfo=UTC)
LABEL_DELAY = timedelta(minutes=1)
SOAK_SETTINGS = {
    "reference": {"warmup_events": 500},
    "window": {"size_events": 1000},
}
"""Monitoring settings of the soak workers: small warm-up and windows, so detectors run often."""


def spread_models(count: int, partitions: int) -> list[str]:
    """`count` model ids whose keys cover every one of `partitions` partitions (round robin), so
    each partition of `predictions` carries models and every partition's offsets are exercised.

    >>> models = spread_models(8, 4)
    >>> sorted({partition_for(m, 4) for m in models}), len(models)
    ([0, 1, 2, 3], 8)
    """
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    index = 0
    while any(len(names) < -(-count // partitions) for names in by_partition.values()):
        name = f"model-{index}"
        names = by_partition[partition_for(name, partitions)]
        if len(names) < -(-count // partitions):
            names.append(name)
        index += 1
    ordered = [by_partition[p][i] for i in range(-(-count // partitions)) for p in range(partitions)]
    return ordered[:count]


@dataclass(frozen=True)
class Stream:
    """A seeded stream of `predictions` predictions and as many outcomes, in publish order."""

    predictions: int
    models: tuple[str, ...]
    label_lag: int = 100
    seed: int = 0
    spacing_seconds: float = 0.1
    """Event time between predictions. Small on purpose: catching up after a kill, the worker's
    outcome path (`forward_outcomes`, cheap) runs ahead of its prediction path, and outcomes
    whose prediction is still unread wait as early outcomes for `early_outcome_ttl_seconds` of
    event time (default 1 h), measured on a watermark the outcomes themselves advance. At 1 s
    per prediction a 50,000-event backlog ran the outcomes 4 h of event time ahead and 41,606 of
    50,000 outcomes expired unmatched; at 0.1 s the 1 h covers 36,000 predictions of lead."""

    @property
    def events(self) -> int:
        return 2 * self.predictions

    def model_of(self, i: int) -> str:
        return self.models[i % len(self.models)]

    def expected(self) -> dict[str, int]:
        """Predictions (and, as each gets one outcome, outcomes) per model."""
        counts = dict.fromkeys(self.models, 0)
        for i in range(self.predictions):
            counts[self.model_of(i)] += 1
        return counts

    def encode(self) -> list[tuple[bool, bytes, bytes]]:
        """(is_outcome, key, value) in publish order: prediction i, then the outcome of prediction
        i - label_lag; the last outcomes at the end."""
        rng = random.Random(self.seed)
        dumps = orjson.dumps
        out: list[tuple[bool, bytes, bytes]] = []
        labels: list[int] = []
        base = START.timestamp()

        def outcome(j: int) -> tuple[bool, bytes, bytes]:
            at = datetime.fromtimestamp(base + j * self.spacing_seconds, UTC) + LABEL_DELAY
            event = {"schema_version": "1", "timestamp": at.isoformat(), "prediction_id": f"p{j}", "label": labels[j]}
            return True, f"p{j}".encode(), dumps(event)

        for i in range(self.predictions):
            x = rng.gauss(0.0, 1.0)
            predicted = int(x > 0)
            labels.append(predicted if rng.random() < 0.9 else 1 - predicted)
            model = self.model_of(i)
            event = {
                "schema_version": "1",
                "timestamp": datetime.fromtimestamp(base + i * self.spacing_seconds, UTC).isoformat(),
                "model_id": model,
                "model_version": "v1",
                "prediction_id": f"p{i}",
                "features": {"x": x, "amount": rng.lognormvariate(3.0, 0.5)},
                "prediction": predicted,
            }
            out.append((False, model.encode(), dumps(event)))
            if i >= self.label_lag:
                out.append(outcome(i - self.label_lag))
        for j in range(max(self.predictions - self.label_lag, 0), self.predictions):
            out.append(outcome(j))
        return out


class StreamPublisher(threading.Thread):
    """Publishes pre-encoded events at about `rate` events/s (0: as fast as possible) with a
    batching kafka-python producer; `published` counts events handed to the producer, `failed`
    those the broker did not acknowledge."""

    def __init__(self, kafka: KafkaConfig, events: list[tuple[bool, bytes, bytes]], rate: float = 0.0):
        super().__init__(name="stream-publisher", daemon=True)
        self.kafka, self.events, self.rate = kafka, events, rate
        self.published = 0
        self.failed = 0
        self.error: BaseException | None = None
        self.seconds = 0.0

    def _failed(self, exc: BaseException) -> None:
        self.failed += 1

    def run(self) -> None:
        started = time.monotonic()
        producer = None
        topics = (self.kafka.topics.predictions, self.kafka.topics.outcomes)
        try:
            producer = KafkaProducer(**producer_settings(self.kafka, acks=1, linger_ms=20, batch_size=256 * 1024))
            chunk = 500
            for first in range(0, len(self.events), chunk):
                for is_outcome, key, value in self.events[first : first + chunk]:
                    producer.send(topics[is_outcome], key=key, value=value).add_errback(self._failed)
                self.published = min(first + chunk, len(self.events))
                if self.rate:
                    ahead = self.published / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            producer.flush(timeout=120)
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc
        finally:
            if producer is not None:
                producer.close(timeout=10)
            self.seconds = time.monotonic() - started


@dataclass
class ModelCount:
    predictions: int = 0
    outcomes: int = 0
    max_predictions: int = 0
    """Largest count any record of this model ever showed (a double count would show here even
    if a later replay from an older state hid it)."""
    max_outcomes: int = 0


@dataclass(frozen=True)
class StateRecord:
    """One model-state changelog record, as counts."""

    model: str
    timestamp_ms: int
    predictions: int
    outcomes: int
    covered: dict[str, int]


class ChangelogCounts:
    """The worker's model-state changelog, read as (predictions, outcomes) per model: predictions
    = `drift.events`, outcomes = the evaluator's `outcomes` counter plus its buffered outcomes.
    Every record is kept (`history`), so a count that ever went past the truth, or a step that
    counted fewer messages than it covered, shows even if a later record hides it."""

    def __init__(self, kafka: KafkaConfig):
        self.consumer = KafkaConsumer(
            changelog_topic(kafka, MODEL_STATE_TABLE),
            **consumer_settings(
                kafka,
                group_id=None,
                auto_offset_reset="earliest",
                fetch_max_bytes=64 << 20,
                max_partition_fetch_bytes=64 << 20,
            ),
        )
        self.models: dict[str, ModelCount] = {}
        self.history: dict[str, list[StateRecord]] = {}
        self.records = 0
        self.largest_record = 0

    @staticmethod
    def decode(model: str, timestamp_ms: int, raw: bytes) -> StateRecord:
        state, covered = decode_state(raw)
        evaluator = state["evaluator"]
        outcomes = evaluator["counters"].get("outcomes", 0) + len(evaluator["outcome_buffer"])
        return StateRecord(model, timestamp_ms, state["drift"]["events"], outcomes, covered)

    def poll(self, timeout_ms: int = 200) -> dict[str, ModelCount]:
        batch = self.consumer.poll(timeout_ms=timeout_ms, max_records=100_000)
        for records in batch.values():
            for record in records:
                self.records += 1
                self.largest_record = max(self.largest_record, len(record.value))
                model = json.loads(record.key)
                state = self.decode(model, record.timestamp, record.value)
                self.history.setdefault(model, []).append(state)
                count = self.models.setdefault(model, ModelCount())
                count.predictions, count.outcomes = state.predictions, state.outcomes
                count.max_predictions = max(count.max_predictions, state.predictions)
                count.max_outcomes = max(count.max_outcomes, state.outcomes)
        return self.models

    def totals(self) -> tuple[int, int]:
        return sum(c.predictions for c in self.models.values()), sum(c.outcomes for c in self.models.values())

    def uncounted_steps(self, kafka: KafkaConfig) -> list[str]:
        """Steps between consecutive records of a model whose `covered` position on its
        predictions partition moved past messages of that model the count did not grow by
        (lost), or that counted more than it covered (double), as readable lines. Reads the
        predictions topic to know which model each offset holds."""
        partitions = kafka.partitions
        owners: dict[int, list[str]] = {p: [] for p in range(partitions)}
        consumer = KafkaConsumer(
            kafka.topics.predictions,
            **consumer_settings(kafka, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=3000),
        )
        try:
            for record in consumer:
                column = owners[record.partition]
                column.extend([""] * (record.offset + 1 - len(column)))
                column[record.offset] = record.key.decode()
        finally:
            consumer.close()
        problems = []
        for model, history in self.history.items():
            partition = partition_for(model, partitions)
            previous = StateRecord(model, 0, 0, 0, {})
            for state in history:
                start, end = previous.covered.get(str(partition), 0), state.covered.get(str(partition), 0)
                if end >= start:
                    covered = owners[partition][start:end].count(model)
                    grew = state.predictions - previous.predictions
                    if grew != covered:
                        problems.append(
                            f"{model} partition {partition}: offsets {start}..{end - 1} hold {covered} of its "
                            f"predictions, count went {previous.predictions} -> {state.predictions} "
                            f"(records at {previous.timestamp_ms} and {state.timestamp_ms} ms)"
                        )
                previous = state
        return problems

    def close(self) -> None:
        self.consumer.close()


def join_summary(kafka: KafkaConfig) -> list[str]:
    """Where outcomes that never reached a model went: per join partition, the join store's
    nonzero counters per model, its pending predictions and held early outcomes (the last
    record of each join-state changelog partition), and the distinct prediction and outcome
    ids the join-input topic holds, per model and in all."""

    def read(topic: str) -> list[Any]:
        consumer = KafkaConsumer(
            topic,
            **consumer_settings(
                kafka,
                group_id=None,
                auto_offset_reset="earliest",
                consumer_timeout_ms=3000,
                fetch_max_bytes=64 << 20,
                max_partition_fetch_bytes=64 << 20,
            ),
        )
        try:
            return list(consumer)
        finally:
            consumer.close()

    latest = {record.key: record.value for record in read(changelog_topic(kafka, JOIN_STATE_TABLE))}
    lines = []
    for key, raw in sorted(latest.items()):
        state, covered = decode_state(raw)
        pending = Counter(state["keys"][k][0] for k in state["pending"]["key"])
        lines.append(f"join {key.decode()} covers {covered}, holds {len(state['early'])} early outcomes")
        for model, counts in zip(state["models"], state["counters"], strict=True):
            nonzero = {name: n for name, n in zip(JOIN_COUNTERS, counts, strict=True) if n}
            lines.append(f"  {model}: {nonzero}, pending {pending[model]}")
    join_input = [(record, *decode_join_input(record.value)) for record in read(f"{kafka.consumer_group}-join-input")]
    predictions: dict[str, set[str]] = {}
    outcomes: set[str] = set()
    for _, kind, items in join_input:
        for item in items:
            if kind == "p":
                predictions.setdefault(item[1], set()).add(item[0])
            else:
                outcomes.add(item[0])
    for model, ids in sorted(predictions.items()):
        lines.append(f"join-input: {model} {len(ids)} distinct predictions, {len(ids & outcomes)} with outcomes")
    joined = set()
    for record in read(f"{kafka.consumer_group}-joined"):
        joined.update(item[2]["prediction_id"] for item in msgpack.unpackb(record.value))
    lost = (set().union(*predictions.values()) & outcomes) - joined
    where: dict[tuple[int, str], list[int]] = {}
    for record, kind, items in join_input:
        if any(item[0] in lost for item in items):
            where.setdefault((record.partition, kind), []).append(record.offset)
    lines.append(f"never joined: {len(lost)} ids, in join-input messages {sorted(where.items())}")
    return lines


@dataclass
class SoakResult:
    kills: list[float] = field(default_factory=list)
    """Seconds since the start at which each SIGKILL landed."""
    counted_at_kill: list[tuple[int, int]] = field(default_factory=list)
    """(predictions, outcomes) the changelog showed when each kill landed."""
    seconds: float = 0.0
    publish_seconds: float = 0.0
    changelog_records: int = 0
    largest_record: int = 0
    replayed_log_lines: int = 0
    """'skipped ... replayed' lines in the worker logs: replays after kills, found and skipped."""

    def summary(self, stream: Stream) -> str:
        return (
            f"{stream.events:,} events ({stream.predictions:,} predictions + outcomes, {len(stream.models)} models), "
            f"{len(self.kills)} SIGKILLs at {[round(k, 1) for k in self.kills]} s, published in "
            f"{self.publish_seconds:.1f} s, all counted after {self.seconds:.1f} s; "
            f"{self.changelog_records:,} changelog records, largest {self.largest_record:,} bytes, "
            f"{self.replayed_log_lines} replay skips logged"
        )


def soak(
    tmp_path: Path,
    kafka: KafkaConfig,
    stream: Stream,
    *,
    kills: int | None,
    kill_after: tuple[float, float],
    rate: float,
    seed: int,
    settle_seconds: float = 5.0,
    finish_timeout: float = 300.0,
    settings: dict[str, Any] | None = None,
) -> tuple[SoakResult, ChangelogCounts]:
    """Publish `stream` at `rate` events/s while a worker runs; `kills` times (None: until the
    stream is published), after a seeded random `kill_after` seconds of the worker's life
    counted from its first state write (so every kill lands while it processes), SIGKILL it and
    start a new one. Then wait until the
    changelog counts everything (or `finish_timeout`), and `settle_seconds` more so that a late
    double count would show."""
    rng = random.Random(seed)
    expected = stream.expected()
    result = SoakResult()
    counts = ChangelogCounts(kafka)
    publisher = StreamPublisher(kafka, stream.encode(), rate)
    started = time.monotonic()
    worker: subprocess.Popen | None = None
    try:
        worker = start_worker(tmp_path, kafka, settings or SOAK_SETTINGS, name="worker-0")
        publisher.start()
        kill = 0
        while (kill < kills) if kills is not None else publisher.is_alive():
            records_before = counts.records
            deadline = time.monotonic() + 60
            while counts.records == records_before:  # this worker has written state: it is processing
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"worker {kill} wrote no state in 60 s\n{log_tail(tmp_path / f'worker-{kill}.log')}"
                    )
                counts.poll()
            wait_until = time.monotonic() + rng.uniform(*kill_after)
            while time.monotonic() < wait_until:
                counts.poll(timeout_ms=100)
                assert worker.poll() is None, f"worker {kill} exited\n{log_tail(tmp_path / f'worker-{kill}.log')}"
            if kills is None and not publisher.is_alive():
                break  # the stream is out: this worker finishes it
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            result.kills.append(time.monotonic() - started)
            result.counted_at_kill.append(counts.totals())
            kill += 1
            worker = start_worker(tmp_path, kafka, settings or SOAK_SETTINGS, name=f"worker-{kill}")
        log = tmp_path / f"worker-{kill}.log"
        deadline = time.monotonic() + finish_timeout
        total = sum(expected.values())
        while time.monotonic() < deadline and worker.poll() is None and publisher.error is None:
            counts.poll(timeout_ms=500)
            if not publisher.is_alive() and counts.totals() == (total, total):
                break
        result.seconds = time.monotonic() - started
        settle = time.monotonic() + settle_seconds
        while time.monotonic() < settle:
            counts.poll(timeout_ms=200)
        publisher.join(timeout=60)
        result.publish_seconds = publisher.seconds
        assert publisher.error is None and publisher.failed == 0, (publisher.error, publisher.failed)
        assert worker.poll() is None, f"last worker exited\n{log_tail(log)}"
    finally:
        if worker is not None:
            stop_worker(worker)
    result.changelog_records = counts.records
    result.largest_record = counts.largest_record
    result.replayed_log_lines = sum(
        path.read_text(errors="replace").count("replayed") for path in tmp_path.glob("worker-*.log")
    )
    return result, counts
