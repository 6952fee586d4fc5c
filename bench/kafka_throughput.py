"""Kafka throughput and end-to-end alert latency of `driftline worker` on the embedded broker.

Every scenario gets a fresh embedded broker (`EmbeddedBroker`, memory storage), the topics from
`ensure_topics`, and workers started as production starts them: `driftline worker --config FILE`
in their own processes, default monitoring settings (warm-up 5,000 events per model, windows of
1,000, every default detector), talked to only through Kafka and their `/metrics`.

* throughput: N prediction events (20 numeric + 5 categorical features) of 8 models are published
  first with a batching producer (pre-encoded JSON), then the workers start. Events/s is counted
  by the workers themselves (`driftline_events_total` summed over workers, polled every 0.5 s),
  from the first poll that sees events to the poll that sees all N. One worker, then two workers
  in one consumer group (the model is the key: 8 models whose names hash to 2 per partition, so
  two workers get 4 models each), each with one event per message (any client) and with a model's
  events in batch envelopes of `ENVELOPE_EVENTS` (as `DriftlinePublisher` sends them). "steady"
  is the rate after every model's warm-up.
* alert latency: one worker, 20 models warmed up and caught up; then events are published at a
  fixed offered rate, round robin over the models, and model m's feature `x0` shifts by +3
  standard deviations from its own drift event on, one model after another. Each event's publish
  wall time is kept; a consumer on `alerts` notes each alert's arrival. An alert does not name
  the offset it was raised at, but its `starts_at` is the event time of the event that raised it
  (a sequential detector's alarm event, or the last event of the window a window test closed),
  and every event here has its own event time, so the trigger is that event. Reported: from
  publishing the trigger to the alert's arrival (pipeline latency, every alert of the phase),
  and from publishing a model's first drifted event to its first alert (detection latency,
  includes the events the detector needs).

    python bench/kafka_throughput.py [--events 200000] [--quick] [--save]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2

from monitor.client.packing import EnvelopePacker
from monitor.contracts.alert import Alert
from monitor.contracts.config import KafkaConfig
from monitor.kafka.broker import EmbeddedBroker
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import ensure_topics

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_NUMERIC, N_CATEGORICAL = 20, 5
CATEGORIES = ["a", "b", "c", "d", "e", "f"]
CATEGORY_P = [0.3, 0.25, 0.2, 0.1, 0.1, 0.05]
START = datetime(2026, 1, 1, tzinfo=UTC)
EVENT_SPACING_MS = 10
"""Event i has event time START + i * 10 ms: each event has its own time, so an alert's
`starts_at` names the event that raised it."""
PARTITIONS = 4
POLL_SECONDS = 0.5
ENVELOPE_EVENTS = 100
"""Events per envelope in the publisher's runs (`DriftlinePublisher`'s `batch_events` default)."""


# -- events -------------------------------------------------------------------------------------


def balanced_models(count: int, partitions: int = PARTITIONS, prefix: str = "model") -> list[str]:
    """`count` model ids whose keys hash (murmur2, as Kafka clients do) evenly over the partitions,
    so that workers sharing the partitions share the models evenly.

    >>> ids = balanced_models(8)
    >>> sorted((murmur2(m.encode()) & 0x7FFFFFFF) % PARTITIONS for m in ids)
    [0, 0, 1, 1, 2, 2, 3, 3]
    """
    per_partition = -(-count // partitions)
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while sum(len(v) for v in chosen.values()) < count:
        name = f"{prefix}-{i:03d}"
        partition = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if len(chosen[partition]) < per_partition:
            chosen[partition].append(name)
        i += 1
    ordered = [m for group in zip(*chosen.values(), strict=False) for m in group]
    return ordered[:count] if len(ordered) >= count else sorted(sum(chosen.values(), []))[:count]


def event_time(index: int) -> datetime:
    return START + timedelta(milliseconds=index * EVENT_SPACING_MS)


def event_index(at: datetime) -> int:
    return round((at - START).total_seconds() * 1000 / EVENT_SPACING_MS)


def encode_events(
    first: int,
    count: int,
    models: list[str],
    seed: int,
    drift_from: dict[str, int] | None = None,
) -> list[tuple[bytes, bytes]]:
    """Events `first .. first+count-1` as (key, JSON value), round robin over `models`; model m's
    `x0` is shifted by +3 from global index `drift_from[m]` on."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(count, N_NUMERIC)).round(5)
    categorical = rng.choice(CATEGORIES, size=(count, N_CATEGORICAL), p=CATEGORY_P)
    scores = rng.random(count).round(5)
    keys = [m.encode() for m in models]
    out = []
    for row in range(count):
        index = first + row
        m = index % len(models)
        features = {f"x{j}": float(numeric[row, j]) for j in range(N_NUMERIC)}
        if drift_from is not None and index >= drift_from.get(models[m], 1 << 62):
            features["x0"] += 3.0
        features.update({f"c{j}": str(categorical[row, j]) for j in range(N_CATEGORICAL)})
        event = {
            "model_id": models[m],
            "model_version": "v1",
            "prediction_id": f"p{index}",
            "timestamp": event_time(index).isoformat().replace("+00:00", "Z"),
            "features": features,
            "prediction": float(scores[row]),
        }
        out.append((keys[m], orjson.dumps(event)))
    return out


def fast_producer(kafka: KafkaConfig, linger_ms: int = 20) -> KafkaProducer:
    return KafkaProducer(
        **producer_settings(kafka, linger_ms=linger_ms, batch_size=512 * 1024, acks=1, max_request_size=8 * 1024 * 1024)
    )


def pack_envelopes(events: list[tuple[bytes, bytes]], size: int) -> list[tuple[bytes, bytes]]:
    """`events` (key, value) as batch envelopes of up to `size` events of one key, in order: the
    messages `DriftlinePublisher` sends."""
    packer = EnvelopePacker(max_events=size, linger_ms=float("inf"))
    messages = []
    for key, value in events:
        messages += [(key, envelope) for _, envelope, _ in packer.add(key.decode(), value, now=0.0)[1]]
    return messages + [(key.encode(), envelope) for key, envelope, _ in packer.drain()]


def publish(producer: KafkaProducer, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    """Send all events, flush; the seconds it took."""
    started = time.perf_counter()
    for key, value in events:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=120)
    return time.perf_counter() - started


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path
    port: int | None = None

    def metrics_port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.port is None:
            found = re.search(r"metrics on http://0\.0\.0\.0:(\d+)/metrics", self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
            elif self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker gave no metrics port:\n{self.log.read_text(errors='replace')[-3000:]}")
            else:
                time.sleep(0.1)
        return self.port

    def events(self) -> int:
        """Prediction events this worker has processed (its `driftline_events_total`)."""
        return scrape_events(self.metrics_port())


def driftline_command() -> list[str]:
    script = Path(sys.executable).parent / "driftline"
    if script.exists():
        return [str(script)]
    found = shutil.which("driftline")
    if found is None:
        raise SystemExit("the `driftline` command is not installed (pip install -e .)")
    return [found]


def write_config(directory: Path, kafka: KafkaConfig, name: str, settings: dict | None = None) -> Path:
    config = {"metrics": {"port": 0}, **(settings or {}), "kafka": kafka.model_dump(mode="json", exclude_none=True)}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_workers(directory: Path, config: Path, count: int, loglevel: str = "info") -> list[Worker]:
    workers = []
    for i in range(count):
        log = directory / f"worker{i}.log"
        process = subprocess.Popen(
            [*driftline_command(), "worker", "--config", str(config), "--loglevel", loglevel],
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        workers.append(Worker(process, log))
    return workers


def stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(timeout=5)


_EVENTS_LINE = re.compile(r'^driftline_events_total\{[^}]*type="prediction"[^}]*\} ([0-9.e+]+)$', re.M)


def scrape_events(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return int(sum(float(v) for v in _EVENTS_LINE.findall(text)))


def rss_mib(pid: int) -> float:
    """Resident set size from /proc (psutil is not a dependency)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        pass
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kafka_config(broker: EmbeddedBroker, group: str) -> KafkaConfig:
    return KafkaConfig(
        bootstrap_servers=broker.bootstrap_servers, profile="embedded", partitions=PARTITIONS, consumer_group=group
    )


# -- throughput ---------------------------------------------------------------------------------


@dataclass
class Throughput:
    workers: int
    envelope_events: int
    """Events per Kafka message (1: one event per message, as any client sends them)."""
    events: int
    seconds: float
    rate: float
    steady_rate: float
    publish_rate: float
    shares: list[int]
    worker_cpu: list[float] = field(default_factory=list)
    broker_cpu: float = 0.0
    worker_rss: list[float] = field(default_factory=list)
    broker_rss: float = 0.0


def measure_throughput(
    n_workers: int,
    events: list[tuple[bytes, bytes]],
    warmup_total: int,
    work: Path,
    checkpoint_seconds: float | None = None,
    envelope_events: int = 1,
) -> Throughput:
    """`n_workers` workers on a fresh broker with `events` published first, `envelope_events` of
    a model's events to a message (a batch envelope, as `DriftlinePublisher` packs them);
    `checkpoint_seconds` overrides the worker's `kafka.checkpoint_seconds`."""
    n = len(events)
    with EmbeddedBroker() as broker:
        kafka = kafka_config(broker, f"bench-{n_workers}w")
        if checkpoint_seconds is not None:
            kafka = kafka.model_copy(update={"checkpoint_seconds": checkpoint_seconds})
        ensure_topics(kafka)
        producer = fast_producer(kafka)
        messages = events if envelope_events == 1 else pack_envelopes(events, envelope_events)
        publish_seconds = publish(producer, kafka.topics.predictions, messages)
        producer.close()
        directory = Path(tempfile.mkdtemp(prefix=f"throughput-{n_workers}w-", dir=work))
        workers = start_workers(directory, write_config(directory, kafka, "worker"), n_workers)
        try:
            for worker in workers:
                worker.metrics_port()
            cpu0 = [cpu_seconds(w.process.pid) for w in workers]
            broker_cpu0 = cpu_seconds(broker.pid)
            samples: list[tuple[float, int]] = []
            deadline = time.monotonic() + 600
            while True:
                counts = [w.events() for w in workers]
                now = time.perf_counter()
                total = sum(counts)
                if total:
                    samples.append((now, total))
                if total >= n:
                    break
                if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
                    tail = workers[0].log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"workers stopped or timed out at {total}/{n} events:\n{tail}")
                time.sleep(POLL_SECONDS)
            cpu1 = [cpu_seconds(w.process.pid) for w in workers]
            broker_cpu = cpu_seconds(broker.pid) - broker_cpu0
            worker_rss = [rss_mib(w.process.pid) for w in workers]
            broker_rss = rss_mib(broker.pid)
        finally:
            stop_workers(workers)
    (t0, c0), (t1, c1) = samples[0], samples[-1]
    steady = [(t, c) for t, c in samples if c >= warmup_total]
    steady_rate = (c1 - steady[0][1]) / (t1 - steady[0][0]) if len(steady) > 2 else float("nan")
    return Throughput(
        workers=n_workers,
        envelope_events=envelope_events,
        events=n,
        seconds=t1 - t0,
        rate=(c1 - c0) / (t1 - t0),
        steady_rate=steady_rate,
        publish_rate=n / publish_seconds,
        shares=counts,
        worker_cpu=[b - a for a, b in zip(cpu0, cpu1, strict=True)],
        broker_cpu=broker_cpu,
        worker_rss=worker_rss,
        broker_rss=broker_rss,
    )


# -- alert latency ------------------------------------------------------------------------------


@dataclass
class Latency:
    models: int
    offered_rate: float
    achieved_rate: float
    pipeline: list[float]
    detection: list[float]
    detection_events: list[int]
    missed: list[str]
    false_alarms: int
    kinds: dict[str, int]
    lag: list[int]
    """Events published but not yet processed, polled every 0.5 s during the paced phase."""


class AlertCollector(threading.Thread):
    """Reads the alerts topic and notes each alert's arrival (wall clock)."""

    def __init__(self, kafka: KafkaConfig):
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            kafka.topics.alerts,
            **consumer_settings(kafka, group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=10),
        )
        self.arrivals: list[tuple[float, Alert]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for records in self.consumer.poll(timeout_ms=50).values():
                now = time.time()
                self.arrivals.extend((now, Alert.model_validate_json(r.value)) for r in records)
        self.consumer.close()


def measure_latency(
    n_models: int, rate: float, warmup_per_model: int, seconds_between: float, tail_seconds: float, work: Path
) -> Latency:
    models = balanced_models(n_models, prefix="svc")
    warm_total = warmup_per_model * n_models
    paced_total = int(rate * (seconds_between * n_models + tail_seconds))
    # model m drifts from its first event after (m + 1) * seconds_between of the paced phase
    drift_from = {m: warm_total + int(rate * seconds_between * (i + 1)) // n_models * n_models + i
                  for i, m in enumerate(models)}  # fmt: skip
    warm = encode_events(0, warm_total, models, seed=1)
    paced = encode_events(warm_total, paced_total, models, seed=2, drift_from=drift_from)
    with EmbeddedBroker() as broker:
        kafka = kafka_config(broker, "bench-latency")
        ensure_topics(kafka)
        directory = work / "latency"
        directory.mkdir()
        producer = fast_producer(kafka)
        publish(producer, kafka.topics.predictions, warm)
        (worker,) = start_workers(directory, write_config(directory, kafka, "worker"), 1)
        collector = AlertCollector(kafka)
        collector.start()
        try:
            deadline = time.monotonic() + 600
            while worker.events() < warm_total:  # caught up with the warm-up
                if time.monotonic() > deadline or worker.process.poll() is not None:
                    raise RuntimeError(f"worker did not catch up:\n{worker.log.read_text(errors='replace')[-3000:]}")
                time.sleep(POLL_SECONDS)
            time.sleep(2 * POLL_SECONDS)
            paced_producer = fast_producer(kafka, linger_ms=1)
            sent_at = np.zeros(paced_total)
            started = time.time()
            sent, lag, next_poll = 0, [], started + POLL_SECONDS
            while sent < paced_total:  # every 10 ms, the events due by now
                if time.time() >= next_poll:
                    lag.append(warm_total + sent - worker.events())
                    next_poll += POLL_SECONDS
                due = min(paced_total, int((time.time() - started) * rate) + 1)
                while sent < due:
                    key, value = paced[sent]
                    sent_at[sent] = time.time()
                    paced_producer.send(kafka.topics.predictions, key=key, value=value)
                    sent += 1
                time.sleep(0.01)
            paced_producer.flush(timeout=30)
            achieved = paced_total / (time.time() - started)
            end_wait = time.monotonic() + 30
            while worker.events() < warm_total + paced_total and time.monotonic() < end_wait:
                time.sleep(POLL_SECONDS)
            time.sleep(3)
            paced_producer.close()
        finally:
            collector.stopping.set()
            collector.join(timeout=5)
            stop_workers([worker])
        producer.close()
    pipeline: list[float] = []
    first_alert: dict[str, tuple[float, Alert]] = {}
    false_alarms = 0
    kinds: dict[str, int] = {}
    for arrived, alert in collector.arrivals:
        if alert.status != "firing":
            continue
        index = event_index(alert.starts_at)
        if index < drift_from[alert.model_id]:
            false_alarms += 1
            continue
        if warm_total <= index < warm_total + paced_total:
            pipeline.append(arrived - sent_at[index - warm_total])
        if alert.model_id not in first_alert:
            first_alert[alert.model_id] = (arrived, alert)
            kinds[f"{alert.kind}/{alert.evidence.detector}"] = (
                kinds.get(f"{alert.kind}/{alert.evidence.detector}", 0) + 1
            )
    detection, detection_events = [], []
    for model in models:
        if model in first_alert:
            arrived, alert = first_alert[model]
            detection.append(arrived - sent_at[drift_from[model] - warm_total])
            detection_events.append((event_index(alert.starts_at) - drift_from[model]) // n_models)
    return Latency(
        models=n_models,
        offered_rate=rate,
        achieved_rate=achieved,
        pipeline=pipeline,
        detection=detection,
        detection_events=detection_events,
        missed=[m for m in models if m not in first_alert],
        false_alarms=false_alarms,
        kinds=kinds,
        lag=lag,
    )


# -- report -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def throughput_rows(results: list[Throughput]) -> list[str]:
    rows = [
        "| workers | events per message | events | seconds | events/s | steady events/s (after warm-up) |"
        " vs one worker | goal |"
        " events per worker | worker CPU s (per worker) | worker CPU ms/event | worker cores busy | broker CPU s |"
        " worker RSS MiB | broker RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---|---:|",
    ]
    for r in results:
        one = next(o for o in results if o.workers == 1 and o.envelope_events == r.envelope_events)
        ratio = r.rate / one.rate
        target = 20_000 if r.envelope_events > 1 else 8_000
        goal = f">= {target:,} events/s" if r.workers == 1 else ">= 1.6x one worker"
        met = (r.rate >= target) if r.workers == 1 else (ratio >= 1.6)
        rows.append(
            f"| {r.workers} | {r.envelope_events} | {r.events:,} | {r.seconds:.1f} | {r.rate:,.0f} | "
            f"{r.steady_rate:,.0f} | "
            f"{ratio:.2f}x | {goal}: {'met' if met else 'not met'} | {' / '.join(f'{s:,}' for s in r.shares)} | "
            f"{' / '.join(f'{c:.1f}' for c in r.worker_cpu)} | {1000 * sum(r.worker_cpu) / r.events:.2f} | "
            f"{sum(r.worker_cpu) / r.seconds:.2f} | "
            f"{r.broker_cpu:.1f} | "
            f"{' / '.join(f'{m:.0f}' for m in r.worker_rss)} | {r.broker_rss:.0f} |"
        )
    return rows


def latency_rows(lat: Latency) -> list[str]:
    ms = 1000.0
    return [
        "| measure | median | p99 | max | samples |",
        "|---|---:|---:|---:|---:|",
        f"| pipeline: publish of the triggering event -> alert on `alerts` (ms) | "
        f"{percentile(lat.pipeline, 50) * ms:,.0f} | {percentile(lat.pipeline, 99) * ms:,.0f} | "
        f"{max(lat.pipeline, default=float('nan')) * ms:,.0f} | {len(lat.pipeline)} alerts |",
        f"| detection: publish of a model's first drifted event -> its first alert (ms) | "
        f"{percentile(lat.detection, 50) * ms:,.0f} | {percentile(lat.detection, 99) * ms:,.0f} | "
        f"{max(lat.detection, default=float('nan')) * ms:,.0f} | {len(lat.detection)} of {lat.models} models |",
        f"| detection delay in the model's events (first drifted event -> trigger) | "
        f"{percentile(lat.detection_events, 50):,.0f} | {percentile(lat.detection_events, 99):,.0f} | "
        f"{max(lat.detection_events, default=float('nan')):,.0f} | |",
        f"| worker lag while events are offered (events published, not yet processed; polled every 0.5 s) | "
        f"{percentile(lat.lag, 50):,.0f} | {percentile(lat.lag, 99):,.0f} | "
        f"{max(lat.lag, default=float('nan')):,.0f} | "
        f"{len(lat.lag)} polls |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=160_000, help="events per throughput run")
    parser.add_argument("--models", type=int, default=8, help="models in the throughput runs")
    parser.add_argument("--latency-models", type=int, default=20)
    parser.add_argument("--latency-rate", type=float, default=500.0, help="offered events/s in the latency run")
    parser.add_argument("--quick", action="store_true", help="60,000 events, 8 models drifting in the latency run")
    parser.add_argument("--save", action="store_true", help="also write bench/results/kafka-<date>.md")
    parser.add_argument("--keep", action="store_true", help="keep the worker logs (printed path)")
    args = parser.parse_args()
    if args.quick:
        args.events, args.latency_models = 60_000, 8
    warmup_per_model = 5000  # ReferenceConfig.warmup_events default
    work = Path(tempfile.mkdtemp(prefix="driftline-kafka-bench-"))
    try:
        models = balanced_models(args.models)
        events = encode_events(0, args.events, models, seed=0)
        results = [
            measure_throughput(k, events, warmup_per_model * args.models, work, envelope_events=size)
            for size in (1, ENVELOPE_EVENTS)
            for k in (1, 2)
        ]
        del events
        latency = measure_latency(args.latency_models, args.latency_rate, warmup_per_model + 500, 1.0, 10.0, work)
    finally:
        if args.keep:
            print(f"logs in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# Kafka benchmark ({dt.date.today()})",
        "",
        f"Embedded broker (Tansu, memory), `driftline worker` processes with the default monitoring settings, "
        f"{PARTITIONS} partitions; {N_NUMERIC} numeric + {N_CATEGORICAL} categorical features; "
        f"{os.cpu_count()} cores shared with the publisher and the broker; Python {platform.python_version()}; "
        f"load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        f"## Throughput: {args.events:,} events of {args.models} models published first, then the workers start",
        "",
        *throughput_rows(results),
        "",
        f"Published at {results[0].publish_rate:,.0f} events/s (one kafka-python producer, pre-encoded JSON, "
        f"one event per message; in envelopes of {ENVELOPE_EVENTS} as `DriftlinePublisher` packs them: "
        f"{results[-1].publish_rate:,.0f} events/s). "
        "Events/s from the workers' `driftline_events_total`, polled every 0.5 s; steady = after the "
        f"{warmup_per_model:,}-event warm-up of every model. Worker cores busy = their CPU seconds over the "
        "measured wall time: on a shared machine the two-worker ratio is bounded by the cores the workers get, "
        "CPU ms/event is what they cost.",
        "",
        f"## End-to-end alert latency: {latency.models} models, offered {latency.offered_rate:,.0f} events/s "
        f"(achieved {latency.achieved_rate:,.0f}), one worker",
        "",
        *latency_rows(latency),
        "",
        f"Each model's `x0` shifts by +3 sd, one model per second; {len(latency.missed)} models without an alert"
        + (f" ({', '.join(latency.missed)})" if latency.missed else "")
        + f"; {latency.false_alarms} alerts before a model's drift. First alert per model: "
        + ", ".join(f"{k} x{v}" for k, v in sorted(latency.kinds.items()))
        + ". The trigger is the event whose event time is the alert's `starts_at`. With 20 models the p99 of the "
        "detection latency is close to its maximum.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.save:
        out = HERE / "results" / f"kafka-{dt.date.today()}.md"
        out.write_text(report)
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
