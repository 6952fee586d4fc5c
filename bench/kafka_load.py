"""Sustained load: two `driftline worker` processes on the embedded broker for 10 minutes.

A fresh embedded broker, the topics from `ensure_topics`, two workers in one consumer group
(`driftline worker --config FILE`, default monitoring settings) and one publisher in this
process: 8 models (2 per partition, so each worker gets 4), 20 numeric + 5 categorical
features, the same generator as `kafka_throughput.py`. The publisher runs either as fast as the
workers consume (the default: it keeps at most `--max-lag` events published but not yet
processed, so events/s is what two workers sustain) or at a fixed offered rate (`--rate`).

Every 5 s: events/s processed (the workers' `driftline_events_total`, summed), lag (published
minus processed), each worker's RSS and CPU share, the broker's RSS (/proc, or psutil if
installed). The embedded broker keeps every record in memory (no retention), changelog records
included, so its RSS grows with everything written; the run stops early when it passes
`--max-broker-mib`. Prints a table (30-s rows, then every 5-s sample) and draws a PNG
(matplotlib, the `bench` extra).

    python bench/kafka_load.py [--minutes 10] [--rate 0] [--quick] [--save]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kafka_throughput import (
    N_CATEGORICAL,
    N_NUMERIC,
    PARTITIONS,
    POLL_SECONDS,
    balanced_models,
    cpu_seconds,
    encode_events,
    fast_producer,
    kafka_config,
    rss_mib,
    start_workers,
    stop_workers,
    write_config,
)

from monitor.kafka.broker import EmbeddedBroker
from monitor.kafka.topics import ensure_topics

HERE = Path(__file__).resolve().parent
SAMPLE_SECONDS = 5.0
CHUNK = 2_000
"""Events encoded at a time (the run cannot hold all of them in memory)."""


@dataclass
class Sample:
    seconds: float
    published: int
    processed: int
    rate: float
    worker_rss: list[float]
    worker_cpu: list[float]
    """CPU seconds per wall second over the last interval, per worker (1.0 = one core)."""
    broker_rss: float
    broker_cpu: float


def run_load(minutes: float, rate: float, max_lag: int, max_broker_mib: float, work: Path) -> tuple[list[Sample], str]:
    models = balanced_models(8)
    with EmbeddedBroker() as broker:
        kafka = kafka_config(broker, "bench-load")
        ensure_topics(kafka)
        workers = start_workers(work, write_config(work, kafka, "worker"), 2)
        producer = fast_producer(kafka, linger_ms=5)
        stop_reason = "it ran its time"
        try:
            for worker in workers:
                worker.metrics_port()
            pids = [w.process.pid for w in workers]
            samples: list[Sample] = []
            published = 0
            chunk: list[tuple[bytes, bytes]] = []
            started = time.perf_counter()
            last_sample, last_processed = started, 0
            last_cpu = [cpu_seconds(pid) for pid in pids]
            last_broker_cpu = cpu_seconds(broker.pid)
            processed, next_poll = 0, started
            while (now := time.perf_counter()) - started < minutes * 60:
                if rate <= 0 and now >= next_poll:  # the workers' count, every 0.5 s as a Prometheus would
                    processed, next_poll = sum(w.events() for w in workers), now + POLL_SECONDS
                allowed = int((now - started) * rate) if rate > 0 else processed + max_lag
                while published < allowed:
                    if not chunk:
                        chunk = encode_events(published, CHUNK, models, seed=published)[::-1]
                    key, value = chunk.pop()
                    producer.send(kafka.topics.predictions, key=key, value=value)
                    published += 1
                if now - last_sample >= SAMPLE_SECONDS:
                    if any(w.process.poll() is not None for w in workers):
                        stop_reason = "a worker exited"
                        break
                    processed = sum(w.events() for w in workers)
                    cpu = [cpu_seconds(pid) for pid in pids]
                    broker_cpu = cpu_seconds(broker.pid)
                    elapsed = now - last_sample
                    sample = Sample(
                        seconds=now - started,
                        published=published,
                        processed=processed,
                        rate=(processed - last_processed) / elapsed,
                        worker_rss=[rss_mib(pid) for pid in pids],
                        worker_cpu=[(b - a) / elapsed for a, b in zip(last_cpu, cpu, strict=True)],
                        broker_rss=rss_mib(broker.pid),
                        broker_cpu=(broker_cpu - last_broker_cpu) / elapsed,
                    )
                    samples.append(sample)
                    print(
                        f"{sample.seconds:6.0f} s  {sample.rate:8,.0f} events/s  lag {published - processed:7,}  "
                        f"workers {' / '.join(f'{m:.0f}' for m in sample.worker_rss)} MiB  "
                        f"broker {sample.broker_rss:,.0f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
                    last_sample, last_processed, last_cpu, last_broker_cpu = now, processed, cpu, broker_cpu
                    if sample.broker_rss > max_broker_mib:
                        stop_reason = f"the broker's RSS passed {max_broker_mib:,.0f} MiB (it keeps every record)"
                        break
                time.sleep(0.01)
        finally:
            producer.close()
            stop_workers(workers)
    return samples, stop_reason


def table(samples: list[Sample], every: float) -> list[str]:
    rows = [
        "| time (s) | events/s | lag (events) | worker 1 RSS (MiB) | worker 2 RSS (MiB) | broker RSS (MiB) |"
        " worker CPU (cores) | broker CPU (cores) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    previous: Sample | None = None
    group: list[Sample] = []
    boundary = every
    for sample in samples:
        group.append(sample)
        if sample.seconds + 1e-6 < boundary and sample is not samples[-1]:
            continue
        boundary += every
        start_processed, start_seconds = (previous.processed, previous.seconds) if previous else (0, 0.0)
        rate = (sample.processed - start_processed) / (sample.seconds - start_seconds)
        cpu = [sum(s.worker_cpu[i] for s in group) / len(group) for i in range(2)]
        broker_cpu = sum(s.broker_cpu for s in group) / len(group)
        rows.append(
            f"| {sample.seconds:.0f} | {rate:,.0f} | {sample.published - sample.processed:,} | "
            f"{sample.worker_rss[0]:.0f} | {sample.worker_rss[1]:.0f} | {sample.broker_rss:,.0f} | "
            f"{cpu[0]:.2f} / {cpu[1]:.2f} | {broker_cpu:.2f} |"
        )
        previous, group = sample, []
    return rows


def plot(samples: list[Sample], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no PNG: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
        return False
    minutes = [s.seconds / 60 for s in samples]
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    top.plot(minutes, [s.rate for s in samples], label="processed (5-s intervals)")
    top.set_ylabel("events/s")
    top.legend(loc="lower right")
    top.set_title(title, fontsize=10)
    for i in range(2):
        middle.plot(minutes, [s.worker_rss[i] for s in samples], label=f"worker {i + 1}")
    middle.set_ylabel("worker RSS (MiB)")
    middle.legend(loc="lower right")
    bottom.plot(minutes, [s.broker_rss for s in samples], color="tab:red", label="embedded broker (memory storage)")
    bottom.set_ylabel("broker RSS (MiB)")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper left")
    for axis in (top, middle, bottom):
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="offered events/s; 0 = as fast as consumed")
    parser.add_argument("--max-lag", type=int, default=10_000, help="with --rate 0: events published ahead")
    parser.add_argument("--max-broker-mib", type=float, default=6_000.0, help="stop early above this broker RSS")
    parser.add_argument("--quick", action="store_true", help="1 minute")
    parser.add_argument("--save", action="store_true", help="write bench/results/kafka-load-<date>.md and the PNG")
    parser.add_argument("--png", type=Path, help="where to draw the plot (default with --save: bench/results)")
    args = parser.parse_args()
    if args.quick:
        args.minutes = 1.0
    work = Path(tempfile.mkdtemp(prefix="driftline-kafka-load-"))
    try:
        samples, stop_reason = run_load(args.minutes, args.rate, args.max_lag, args.max_broker_mib, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not samples:
        print("no samples: the run stopped before the first one", file=sys.stderr)
        return 1
    mode = (
        f"offered at a fixed {args.rate:,.0f} events/s"
        if args.rate > 0
        else f"published as fast as consumed (at most {args.max_lag:,} events ahead)"
    )
    last = samples[-1]
    after_first_minute = [s for s in samples if s.seconds > 60]
    steady = (
        (last.processed - after_first_minute[0].processed) / (last.seconds - after_first_minute[0].seconds)
        if len(after_first_minute) > 1
        else float("nan")
    )
    date = dt.date.today()
    png = args.png or (HERE / "results" / f"load-{date}.png" if args.save else None)
    title = f"Two Driftline workers, embedded broker, 8 models x 25 features,\n{mode}"
    lines = [
        f"# Load benchmark ({date}): two workers, {last.seconds / 60:.1f} minutes",
        "",
        f"Embedded broker (Tansu, memory storage), {PARTITIONS} partitions, two `driftline worker` processes in one "
        f"consumer group with the default monitoring settings, 8 models (4 per worker), {N_NUMERIC} numeric + "
        f"{N_CATEGORICAL} categorical features; events {mode}; {os.cpu_count()} cores shared with the publisher, "
        f"the broker and other work (load average at the end {os.getloadavg()[0]:.1f}). Stopped: "
        f"{stop_reason}.",
        "",
        f"- processed {last.processed:,} events in {last.seconds:,.0f} s: {last.processed / last.seconds:,.0f} "
        f"events/s overall, {steady:,.0f} events/s after the first minute (warm-up of the 8 models: 40,000 events)",
        f"- worker RSS at the end {' / '.join(f'{m:.0f}' for m in last.worker_rss)} MiB (peak "
        f"{' / '.join(f'{max(s.worker_rss[i] for s in samples):.0f}' for i in range(2))} MiB); broker RSS "
        f"{last.broker_rss:,.0f} MiB, {1024 * 1024 * last.broker_rss / max(last.processed, 1):,.0f} bytes per "
        "processed event",
        "",
        *table(samples, 30.0),
        "",
        f"Every {SAMPLE_SECONDS:.0f}-s sample:",
        "",
        *table(samples, SAMPLE_SECONDS),
        "",
    ]
    if png is not None and plot(samples, png, title):
        lines.insert(2, f"![events/s and RSS over time]({png.name})\n")
        print(f"saved {png}", file=sys.stderr)
    report = "\n".join(lines)
    print(report)
    if args.save:
        out = HERE / "results" / f"kafka-load-{date}.md"
        out.write_text(report)
        print(f"saved {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
