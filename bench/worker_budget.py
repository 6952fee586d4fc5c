"""Where a `driftline worker`'s time per event goes, layer by layer, side by side in one run.

The worker's throughput is the sum of the layers it stacks; each row measures one of them alone
on the same events (8 models, 20 numeric + 5 categorical features, the default monitoring
settings), so the table says what an optimisation of one layer can buy, and what the framework
leaves at best:

* fetch: a kafka-python consumer reads the events from the embedded broker, nothing else;
* faust, per message: a bare faust app (same settings as the worker) with faust's own consumer,
  whose one agent takes the events in batches of `BATCH_MESSAGES` and only counts them: faust's
  per-message stream, which the worker no longer pays;
* faust, fetched partitions: the same app with the worker's consumer
  (`monitor.stream.consumer.PositionedConsumer`), which hands the agent each partition's records
  of a fetch as one message, in batches of `BATCH_FETCHES`: the framework under the agents;
* decode: `intake.read_predictions` on each batch of `BATCH_MESSAGES` messages, as the worker
  decodes them (envelopes unpacked, the msgspec fast path into columns);
* core: `ModelMonitor.observe` on the decoded columns, in the worker's batches (the events of
  one batch grouped by model);
* state: each model's state encoded once per batch it appears in, as the worker saves it
  (`to_state` + msgpack);
* worker: `driftline worker` itself (`kafka_throughput.measure_throughput`, one worker), with
  its default checkpoint interval and checkpointing after every batch (`checkpoint_seconds: 0`).

    python bench/worker_budget.py [--events 80000] [--save]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from kafka import KafkaConsumer
from kafka_throughput import (
    HERE,
    balanced_models,
    encode_events,
    fast_producer,
    kafka_config,
    measure_throughput,
    publish,
)

from monitor.contracts.config import KafkaConfig, MonitorConfig
from monitor.kafka.broker import EmbeddedBroker
from monitor.kafka.settings import consumer_settings
from monitor.kafka.topics import ensure_topics
from monitor.monitoring.fleet import ModelMonitor
from monitor.stream.intake import read_predictions
from monitor.stream.records import encode_state
from monitor.stream.worker import BATCH_FETCHES, BATCH_SECONDS

WARMUP_PER_MODEL = 5000  # ReferenceConfig.warmup_events default
BATCH_MESSAGES = 500
"""Messages per batch of the per-message faust row and of the in-process layers (a worker's batch
holds `BATCH_FETCHES` fetched partitions: from a few messages to a few thousand)."""


@dataclass
class Layer:
    name: str
    what: str
    events: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / self.events


def measure_fetch(kafka: KafkaConfig, n: int) -> Layer:
    consumer = KafkaConsumer(
        kafka.topics.predictions, **consumer_settings(kafka, group_id=None, auto_offset_reset="earliest")
    )
    seen, started, cpu0 = 0, None, 0.0
    deadline = time.monotonic() + 300
    while seen < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200, max_records=BATCH_MESSAGES).values():
            if started is None:
                started, cpu0 = time.perf_counter(), time.process_time()
            seen += len(records)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    consumer.close()
    return Layer("fetch", "kafka-python consumer, records counted", seen, seconds, cpu)


def faust_floor(bootstrap: str, topic: str, group: str, n: int, fetched: bool) -> None:
    """The bare faust app (run in its own process by `measure_faust`): prints
    `counted N in S s, C CPU s` from its first event to its Nth, then idles until killed. With
    `fetched`, the worker's consumer hands out each partition's records of a fetch at once."""
    import faust

    from monitor.kafka.settings import faust_settings
    from monitor.kafka.topics import POSITIONS_TABLE
    from monitor.stream.consumer import PositionedConsumer
    from monitor.stream.positions import InputSequence

    kafka = KafkaConfig(bootstrap_servers=bootstrap, profile="embedded", consumer_group=group)
    app = faust.App(
        group,
        **faust_settings(kafka),
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
    )
    batch = BATCH_FETCHES if fetched else BATCH_MESSAGES
    source = app.topic(topic, key_serializer="raw", value_serializer="raw", maxsize=2 * batch if fetched else None)
    if fetched:  # what `PositionedConsumer` needs of the worker's app
        app.Table(POSITIONS_TABLE, default=None, key_type=str, value_type=bytes)
        app.transport.Consumer = PositionedConsumer
        app.input_sequence = InputSequence()
        app.input_topics = {topic}
    counted = [0, 0.0, 0.0]

    @app.agent(source)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(batch, within=BATCH_SECONDS):
            if not counted[0]:
                counted[1:] = [time.perf_counter(), time.process_time()]
            counted[0] += sum(len(event.message.records) for event in events) if fetched else len(events)
            if counted[0] >= n:
                print(
                    f"counted {counted[0]} in {time.perf_counter() - counted[1]:.3f} s, "
                    f"{time.process_time() - counted[2]:.3f} CPU s",
                    flush=True,
                )

    faust.Worker(app, loglevel="warning").execute_from_commandline()


def measure_faust(kafka: KafkaConfig, n: int, work: Path, *, fetched: bool) -> Layer:
    how = "fetched" if fetched else "per-message"
    log = work / f"faust-floor-{how}.log"
    process = subprocess.Popen(
        [sys.executable, __file__, "faust-floor", kafka.bootstrap_servers, kafka.topics.predictions, str(n), how],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while "counted" not in (text := log.read_text(errors="replace")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare faust app did not count {n} events:\n{text[-3000:]}")
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
    count, seconds, cpu = re.search(r"counted (\d+) in ([\d.]+) s, ([\d.]+) CPU s", text).groups()  # type: ignore[union-attr]
    if fetched:
        name, what = "faust, fetched partitions", f"bare faust agent, the worker's consumer, batches of {BATCH_FETCHES}"
    else:
        name, what = "faust, per message", f"bare faust agent, faust's consumer, batches of {BATCH_MESSAGES}"
    return Layer(name, what, int(count), float(seconds), float(cpu))


def measure_in_process(events: list[tuple[bytes, bytes]]) -> list[Layer]:
    config = MonitorConfig()
    n = len(events)
    messages = [
        SimpleNamespace(topic="predictions", partition=0, offset=offset, key=key, value=value)
        for offset, (key, value) in enumerate(events)
    ]
    started, cpu0 = time.perf_counter(), time.process_time()
    starts = range(0, n, BATCH_MESSAGES)
    decoded = [read_predictions(messages[start : start + BATCH_MESSAGES]).batch for start in starts]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    decode = Layer("decode", f"`read_predictions`, batches of {BATCH_MESSAGES} messages", n, seconds, cpu)
    batches = [{model_id: batch.take(index) for model_id, index in batch.by_model().items()} for batch in decoded]
    monitors = {model_id: ModelMonitor(model_id, config) for by_model in batches for model_id in by_model}
    spent = {"core": [0.0, 0.0], "state": [0.0, 0.0]}  # wall, CPU seconds

    def clock(name: str, started: tuple[float, float]) -> None:
        spent[name][0] += time.perf_counter() - started[0]
        spent[name][1] += time.process_time() - started[1]

    saves = 0
    for by_model in batches:  # as the worker does: observe each model of a batch, then save its state
        started = time.perf_counter(), time.process_time()
        for model_id, batch in by_model.items():
            monitors[model_id].observe(batch, [], [])
        clock("core", started)
        started = time.perf_counter(), time.process_time()
        for model_id, batch in by_model.items():
            encode_state(monitors[model_id].to_state(), {"0": int(batch.positions[-1]) + 1})
        clock("state", started)
        saves += len(by_model)
    core = Layer("core", f"`ModelMonitor.observe`, batches of {BATCH_MESSAGES} grouped by model", n, *spent["core"])
    state = Layer("state", f"`to_state` + msgpack, once per model per batch ({saves:,} saves)", n, *spent["state"])
    return [decode, core, state]


def table(layers: list[Layer], workers: list[Layer]) -> list[str]:
    """One row per layer, then the workers; shares are of the first worker's CPU per event."""
    worker = workers[0]
    parts = [layer for layer in layers if layer.name not in ("fetch", "faust, per message")]
    summed = sum(layer.cpu_ms for layer in parts)
    rows = [
        "| layer | measures | events | seconds | events/s | CPU ms/event | share of the first worker's CPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for layer in [*layers, *workers]:
        rows.append(
            f"| {layer.name} | {layer.what} | {layer.events:,} | {layer.seconds:.1f} | {layer.rate:,.0f} | "
            f"{layer.cpu_ms:.3f} | {100 * layer.cpu_ms / worker.cpu_ms:.0f}% |"
        )
    rows.append(
        f"| faust, fetched + decode + core + state | the layers summed | | | {1000 / summed:,.0f} | {summed:.3f} | "
        f"{100 * summed / worker.cpu_ms:.0f}% |"
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=80_000)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--save", action="store_true", help="also write bench/results/budget-<date>.md")
    args = parser.parse_args()
    events = encode_events(0, args.events, balanced_models(args.models), seed=0)
    work = Path(tempfile.mkdtemp(prefix="driftline-budget-"))
    try:
        with EmbeddedBroker() as broker:
            kafka = kafka_config(broker, "budget-floor")
            ensure_topics(kafka)
            producer = fast_producer(kafka)
            publish(producer, kafka.topics.predictions, events)
            producer.close()
            layers = [measure_fetch(kafka, args.events)]
            layers += [measure_faust(kafka, args.events, work, fetched=fetched) for fetched in (False, True)]
        layers += measure_in_process(events)
        default = KafkaConfig().checkpoint_seconds
        workers = []
        for seconds in (0.0, default):
            run = measure_throughput(1, events, WARMUP_PER_MODEL * args.models, work, checkpoint_seconds=seconds)
            every = f"every {seconds:g} s" if seconds else "after every batch"
            what = f"`driftline worker`, everything; checkpoint {every}"
            workers.append(Layer("worker", what, run.events, run.seconds, sum(run.worker_cpu)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# A worker's time per event, layer by layer ({dt.date.today()})",
        "",
        f"{args.events:,} events of {args.models} models, 20 numeric + 5 categorical features, default monitoring "
        f"settings; embedded broker; {os.cpu_count()} cores; Python {platform.python_version()}; load average at "
        f"the end {os.getloadavg()[0]:.1f}. Rates are wall-clock events/s of the layer alone; CPU ms/event counts "
        "every thread of the process measured.",
        "",
        *table(layers, workers),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.save:
        out = HERE / "results" / f"budget-{dt.date.today()}.md"
        out.write_text(report)
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["faust-floor"]:
        bootstrap, topic, n, how = sys.argv[2:6]
        faust_floor(bootstrap, topic, f"budget-faust-floor-{how}", int(n), fetched=how == "fetched")
    else:
        sys.exit(main())
