"""Continuous evaluation: join and evaluation throughput, memory per pending prediction.

One binary classifier with probabilities, two versions (90% / 10%), two slice names (country with
5 values, device with 3), labels 1,000 predictions late, a window closing every 10,000
predictions; pinned to one core (`os.sched_setaffinity`). Each throughput row is the best of
`--repeat` runs in CPU time (the machine may be shared; wall time is shown beside it):

* join: `JoinStore.add_outcome_fields` alone (predictions already stored);
* evaluate: `ModelEvaluator.observe_outcome` alone on joined records;
* join + evaluate: both, per outcome, as the monitor calls them (the goal: >= 100,000 outcomes/s);
* full cycle: from `PredictionEvent`/`OutcomeEvent` objects (already decoded): store and evaluator
  for each prediction, then its outcome, windows closing (predictions + outcomes per second).

Memory: `tracemalloc` over inserting `--pending` predictions (ids made inside the traced loop, so
the strings the store keeps are counted), for 20-character and 36-character (UUID) ids; bytes per
pending prediction at rest and at the peak (dict resizes), extrapolated to 10 M. Also the
tombstones (recently joined ids) and the evaluator's accumulators.

    .venv/bin/python bench/evaluation_throughput.py [--outcomes 300000] [--pending 1000000] [--save]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.contracts.batch import PredictionBatch  # noqa: E402
from monitor.contracts.config import MonitorConfig  # noqa: E402
from monitor.contracts.events import OutcomeEvent, PredictionEvent, RequestStatus  # noqa: E402
from monitor.evaluation.evaluator import ModelEvaluator  # noqa: E402
from monitor.evaluation.join import JoinStore  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
DELAY = 1000
WINDOW = 10_000
COUNTRIES = ["DE", "FR", "IT", "ES", "NL"]
DEVICES = ["ios", "android", "web"]
GOAL = 100_000


class Data:
    """Plain values of a seeded stream (no events), reused by every run."""

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n = n
        self.ids = [f"churn-r0-{i:010d}" for i in range(n)]
        label = (rng.random(n) < 0.4).astype(int)
        wrong = rng.random(n) < 0.1
        prediction = np.where(wrong, 1 - label, label)
        confidence = rng.uniform(0.6, 0.95, n)
        self.labels = label.tolist()
        self.predictions = prediction.tolist()
        self.p1 = np.where(prediction == 1, confidence, 1 - confidence).round(4).tolist()
        self.versions = np.where(rng.random(n) < 0.9, "v1", "v2").tolist()
        country = rng.integers(0, len(COUNTRIES), n)
        device = rng.integers(0, len(DEVICES), n)
        self.slices = [{"country": COUNTRIES[c], "device": DEVICES[d]} for c, d in zip(country, device, strict=True)]

    def store_all(self, store: JoinStore) -> None:
        for i in range(self.n):
            p = self.p1[i]
            store.add_prediction_fields(
                self.ids[i],
                "churn",
                self.versions[i],
                T0 + i,
                self.predictions[i],
                {"0": 1 - p, "1": p},
                self.slices[i],
            )


def best_of(repeat: int, run) -> tuple[float, float]:
    """(best CPU seconds, wall seconds of that run)."""
    results = []
    for _ in range(repeat):
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        results.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(results)


def throughput(data: Data, config: MonitorConfig, repeat: int) -> list[tuple[str, float, float, str]]:
    rows = []
    n = data.n
    ends = [datetime.fromtimestamp(T0 + i, UTC) for i in range(WINDOW - 1, n, WINDOW)]

    # join alone
    def join_only() -> None:
        store = JoinStore.from_config(config)
        data.store_all(store)
        start = time.process_time(), time.perf_counter()
        for i in range(n):
            store.add_outcome_fields(data.ids[i], data.labels[i], T0 + i + DELAY + 0.5)
        join_only.elapsed = (time.process_time() - start[0], time.perf_counter() - start[1])

    timings = []
    for _ in range(repeat):
        gc.collect()
        join_only()
        timings.append(join_only.elapsed)
    cpu, wall = min(timings)
    rows.append(("join (add_outcome)", n / cpu, n / wall, "outcomes/s"))

    store = JoinStore.from_config(config)
    data.store_all(store)
    joined = [store.add_outcome_fields(data.ids[i], data.labels[i], T0 + i + DELAY + 0.5) for i in range(n)]

    def evaluate_only() -> None:
        evaluator = ModelEvaluator("churn", config)
        end_index = 0
        observe = evaluator.observe_outcome
        for i in range(n):
            observe(joined[i], i)
            if (i + 1) % WINDOW == 0:
                evaluator.close_window(ends[end_index])
                end_index += 1
        evaluator.flush()

    cpu, wall = best_of(repeat, evaluate_only)
    rows.append(("evaluate (observe_outcome)", n / cpu, n / wall, "outcomes/s"))
    joined.clear()

    def join_and_evaluate() -> None:
        store = JoinStore.from_config(config)
        data.store_all(store)
        evaluator = ModelEvaluator("churn", config)
        add, observe = store.add_outcome_fields, evaluator.observe_outcome
        ids, labels = data.ids, data.labels
        end_index = 0
        start = time.process_time(), time.perf_counter()
        for i in range(n):
            record = add(ids[i], labels[i], T0 + i + DELAY + 0.5)
            if record is not None:
                observe(record, i)
            if (i + 1) % WINDOW == 0:
                evaluator.close_window(ends[end_index])
                end_index += 1
        evaluator.flush()
        join_and_evaluate.elapsed = (time.process_time() - start[0], time.perf_counter() - start[1])
        join_and_evaluate.metrics = evaluator.metrics()

    timings = []
    for _ in range(repeat):
        gc.collect()
        join_and_evaluate()
        timings.append(join_and_evaluate.elapsed)
    cpu, wall = min(timings)
    verdict = "goal met" if n / cpu >= GOAL else f"below the {GOAL:,} goal"
    rows.append(("join + evaluate", n / cpu, n / wall, f"outcomes/s, {verdict}"))
    assert join_and_evaluate.metrics["overall"]["count"] == n

    # Full cycle from decoded events (construction not timed: model_construct skips validation).
    m = min(n, 200_000)
    predictions = [
        PredictionEvent.model_construct(
            model_id="churn", model_version=data.versions[i], prediction_id=data.ids[i],
            timestamp=datetime.fromtimestamp(T0 + i, UTC), features={}, prediction=data.predictions[i],
            probabilities={"0": 1 - data.p1[i], "1": data.p1[i]}, slices=data.slices[i],
            latency_ms=12.5, request_status=RequestStatus.ok,
        )
        for i in range(m)
    ]  # fmt: skip
    outcomes = [
        OutcomeEvent.model_construct(
            prediction_id=data.ids[i], label=data.labels[i], timestamp=datetime.fromtimestamp(T0 + i + DELAY + 0.5, UTC)
        )
        for i in range(m)
    ]

    def full_cycle() -> None:
        store = JoinStore.from_config(config)
        evaluator = ModelEvaluator("churn", config)
        for i in range(m):
            event = predictions[i]
            store.add_prediction(event)
            evaluator.observe_predictions(PredictionBatch.from_events([event], [2 * i]))
            if i >= DELAY:
                record = store.add_outcome(outcomes[i - DELAY])
                if record is not None:
                    evaluator.observe_outcome(record, 2 * i + 1)
            if (i + 1) % WINDOW == 0:
                evaluator.close_window(event.timestamp)
        for j in range(m - DELAY, m):
            record = store.add_outcome(outcomes[j])
            if record is not None:
                evaluator.observe_outcome(record)
        evaluator.flush()

    cpu, wall = best_of(repeat, full_cycle)
    rows.append(
        ("full cycle from events", 2 * m / cpu, 2 * m / wall, f"events/s ({m / cpu:,.0f} predictions + outcomes/s)")
    )
    return rows


def pending_memory(count: int, id_kind: str) -> tuple[float, float]:
    """Bytes per pending prediction (at rest, at peak) under tracemalloc."""
    rng = np.random.default_rng(1)
    p1 = rng.uniform(0.05, 0.95, 1024).round(4).tolist()
    slices = [{"country": c, "device": d} for c in COUNTRIES for d in DEVICES]
    store = JoinStore(max_pending=count + 1)
    make_id = (lambda i: str(uuid.UUID(int=i))) if id_kind == "uuid" else (lambda i: f"churn-r0-{i:010d}")
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        p = p1[i & 1023]
        store.add_prediction_fields(
            make_id(i), "churn", "v2" if i % 10 == 0 else "v1", T0 + i * 0.01, int(p >= 0.5), {"0": 1 - p, "1": p},
            slices[i % len(slices)],
        )  # fmt: skip
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert store.pending == count
    return (current - base) / count, (peak - base) / count


def tombstone_memory(count: int) -> float:
    """Extra bytes per recently joined id remembered to recognise duplicate outcomes."""
    store = JoinStore(max_tombstones=count + 1, tombstone_seconds=1e9)
    no_tombs = JoinStore(max_tombstones=0)
    sizes = []
    for s in (store, no_tombs):
        gc.collect()
        tracemalloc.start()
        for i in range(count):
            pid = f"churn-r0-{i:010d}"
            s.add_prediction_fields(pid, "churn", "v1", T0 + i * 0.01, 1)
            s.add_outcome_fields(pid, 1, T0 + i * 0.01 + 1)
        sizes.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
    return (sizes[0] - sizes[1]) / count


def evaluator_state(config: MonitorConfig, data: Data) -> tuple[int, int]:
    store = JoinStore.from_config(config)
    data.store_all(store)
    evaluator = ModelEvaluator("churn", config)
    for i in range(data.n):
        record = store.add_outcome_fields(data.ids[i], data.labels[i], T0 + i + DELAY + 0.5)
        evaluator.observe_outcome(record, i)
        if (i + 1) % WINDOW == 0:
            evaluator.close_window(datetime.fromtimestamp(T0 + i, UTC))
    evaluator.flush()
    return evaluator.nbytes(), len(json.dumps(evaluator.to_state()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outcomes", type=int, default=300_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--save", action="store_true", help="also write bench/results/evaluation-<date>.md")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    config = MonitorConfig()
    data = Data(args.outcomes)

    lines = [
        f"# Continuous evaluation benchmark ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"One model, 2 versions, 2 slice names (5 x 3 values), probabilities; {args.outcomes:,} outcomes, labels "
        f"{DELAY:,} predictions late, windows of {WINDOW:,}; one core; best of {args.repeat} in CPU time "
        f"(wall time of that run beside it). Python {sys.version.split()[0]}, numpy {np.__version__}.",
        "",
        "| path | per second (CPU) | per second (wall) | unit |",
        "|---|---:|---:|---|",
    ]
    for name, cpu_rate, wall_rate, unit in throughput(data, config, args.repeat):
        lines.append(f"| {name} | {cpu_rate:,.0f} | {wall_rate:,.0f} | {unit} |")
        print(lines[-1], flush=True)

    lines += ["", "| memory | bytes | 10 M pending |", "|---|---:|---:|"]
    for id_kind, label in (("short", "20-char ids"), ("uuid", "36-char UUID ids")):
        at_rest, peak = pending_memory(args.pending, id_kind)
        lines.append(
            f"| per pending prediction, {label}, {args.pending:,} pending (tracemalloc) | {at_rest:,.0f} "
            f"(peak {peak:,.0f}) | {at_rest * 1e7 / 2**30:.2f} GiB (peak {peak * 1e7 / 2**30:.2f} GiB) |"
        )
        print(lines[-1], flush=True)
    tomb = tombstone_memory(min(args.pending, 200_000))
    lines.append(f"| per tombstone (recently joined id, duplicate detection) | {tomb:,.0f} | cap `max_tombstones` |")
    print(lines[-1], flush=True)
    nbytes, state_bytes = evaluator_state(config, Data(min(args.outcomes, 100_000), seed=2))
    lines.append(f"| evaluator accumulators (numpy), this model | {nbytes:,} | independent of traffic |")
    lines.append(f"| evaluator state as JSON | {state_bytes:,} | |")
    print("\n".join(lines[-2:]), flush=True)

    report = "\n".join(lines) + "\n"
    print()
    print(report)
    if args.save:
        out = ROOT / "bench" / "results" / f"evaluation-{datetime.now(UTC):%Y-%m-%d}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"saved {out}")


if __name__ == "__main__":
    main()
