"""Cardinality bounds: one model fed a flood of distinct category and slice values.

An attacker (or a bug that puts a request id into a feature) sends a new category value with
every prediction, and a new slice value with most of them. The caps of `caps:` must hold the
monitor's memory: at most `max_categories` values kept per categorical feature, at most
`max_slice_values` per slice name, the rest counted as overflow. This benchmark feeds
`FleetMonitor` (plain Python, no Kafka) N predictions, each with a distinct value of the
categorical feature `user_agent` and one of S slice values of `customer`, each prediction joined
by its outcome 1,000 events later, and prints at checkpoints:

* the state size: bytes of the msgpack of `FleetMonitor.to_state()` (what the worker writes to
  its changelog topic), and the same for a control run with 10 distinct values and 10 slices;
* the process RSS (current, from /proc) and its peak (`ru_maxrss`);
* what the caps kept and what they counted as overflow.

    .venv/bin/python bench/cardinality.py                      # 1,000,000 values, 100,000 slices
    .venv/bin/python bench/cardinality.py --events 200000 --slices 20000

`run_flood` is also what tests/production/test_cardinality.py runs, with smaller numbers.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.contracts.batch import columns_of  # noqa: E402
from monitor.contracts.config import MonitorConfig  # noqa: E402
from monitor.contracts.events import OutcomeEvent, PredictionEvent  # noqa: E402
from monitor.contracts.limits import EventLimits  # noqa: E402
from monitor.monitoring.fleet import FleetMonitor  # noqa: E402

MODEL = "flooded"
FEATURE = "user_agent"
SLICE = "customer"
LABEL_DELAY_EVENTS = 1000
"""Each prediction's outcome comes this many events (seconds of event time) later."""
BATCH = 5000
WINDOW_EVENTS = 1000


@dataclass
class Checkpoint:
    events: int
    distinct_values: int
    """Distinct `user_agent` values sent so far."""
    distinct_slices: int
    state_bytes: int
    rss_mb: float
    peak_rss_mb: float
    kept_categories: int
    """`user_agent` values the open window keeps (at most `caps.max_categories`)."""
    window_overflow: int
    """`user_agent` values of the open window counted as overflow instead of kept."""
    reference_categories: int
    kept_slice_values: int
    """`customer` values the evaluator keeps (at most `caps.max_slice_values`, plus `other`)."""
    slice_values_over_cap: int
    """Outcomes whose slice value the evaluator folded into `other` (counter)."""
    join_slices_over_cap: int
    """Predictions whose slice value the join store folded into `other` (counter)."""
    quality_alerts: int
    """`data_quality` alerts raised on `user_agent` (cardinality over its cap, unseen values)."""
    seconds: float


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; the peak where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return peak_rss_mb()
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _events(start: int, stop: int, distinct_values: int, distinct_slices: int, rng: random.Random):
    """Predictions `start..stop-1` and the outcomes of the predictions LABEL_DELAY_EVENTS earlier."""
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    context = EventLimits.default().context()
    events: list[PredictionEvent | OutcomeEvent] = []
    for i in range(start, stop):
        at = origin + timedelta(seconds=i)
        score = rng.random()
        events.append(
            PredictionEvent.model_validate(
                {
                    "model_id": MODEL,
                    "prediction_id": f"p{i}",
                    "timestamp": at,
                    "features": {
                        "amount": rng.gauss(100, 15),
                        FEATURE: f"agent-{i % distinct_values}",
                        "country": ("DE", "FR", "US", "BR")[i % 4],
                    },
                    "prediction": int(score >= 0.5),
                    "probabilities": {"0": 1.0 - score, "1": score},
                    "slices": {SLICE: f"c{i % distinct_slices}"},
                },
                context=context,
            )
        )
        j = i - LABEL_DELAY_EVENTS
        if j >= 0:
            events.append(
                OutcomeEvent.model_validate(
                    {"prediction_id": f"p{j}", "model_id": MODEL, "timestamp": at, "label": int(rng.random() < 0.3)},
                    context=context,
                )
            )
    return events


def measure(
    fleet: FleetMonitor, events: int, distinct_values: int, distinct_slices: int, alerts: int, started: float
) -> Checkpoint:
    state = fleet.to_state()
    state_bytes = len(msgpack.packb(state))
    monitor = fleet.models[MODEL]
    feature = monitor.drift.features.get(FEATURE) if monitor.drift.reference is not None else None
    stats = feature.stats if feature is not None else None
    reference = monitor.drift.reference
    reference_stats = reference.features[FEATURE].stats if reference is not None else None
    evaluator = monitor.evaluator
    return Checkpoint(
        events=events,
        distinct_values=min(events, distinct_values),
        distinct_slices=min(events, distinct_slices),
        state_bytes=state_bytes,
        rss_mb=current_rss_mb(),
        peak_rss_mb=peak_rss_mb(),
        kept_categories=len(stats.frequencies) if stats is not None else 0,
        window_overflow=stats.overflow_count if stats is not None else 0,
        reference_categories=len(reference_stats.frequencies) if reference_stats is not None else 0,
        kept_slice_values=len(evaluator._slice_values.get(SLICE, ())),
        slice_values_over_cap=evaluator.counters["slice_values_over_cap"],
        join_slices_over_cap=fleet.join.counters(MODEL)["slice_values_over_cap"],
        quality_alerts=alerts,
        seconds=time.perf_counter() - started,
    )


def run_flood(
    events: int,
    distinct_values: int,
    distinct_slices: int,
    checkpoints: list[int],
    config: MonitorConfig | None = None,
    seed: int = 7,
) -> list[Checkpoint]:
    """Feed `events` predictions (and their outcomes) to a fresh `FleetMonitor`; a `Checkpoint`
    after each count in `checkpoints`."""
    config = config or MonitorConfig.model_validate(
        {"reference": {"warmup_events": 2000}, "window": {"size_events": WINDOW_EVENTS}}
    )
    fleet = FleetMonitor(config)
    rng = random.Random(seed)
    rows: list[Checkpoint] = []
    marks = sorted(set(checkpoints) | {events})
    started = time.perf_counter()
    offset = done = alerts = 0
    for mark in marks:
        while done < mark:
            stop = min(done + BATCH, mark)
            batch = _events(done, stop, distinct_values, distinct_slices, rng)
            raised = fleet.observe(*columns_of(batch, range(offset, offset + len(batch))))
            alerts += sum(1 for r in raised if r.alert.kind == "data_quality" and r.alert.feature == FEATURE)
            offset += len(batch)
            done = stop
        gc.collect()
        rows.append(measure(fleet, done, distinct_values, distinct_slices, alerts, started))
    return rows


def _table(title: str, rows: list[Checkpoint]) -> str:
    header = (
        f"{'events':>10} {'distinct':>10} {'slices':>8} {'state KiB':>10} {'RSS MiB':>8} {'peak MiB':>9} "
        f"{'kept cats':>9} {'win overflow':>12} {'ref cats':>8} {'kept slices':>11} {'slice over':>10} "
        f"{'join over':>9} {'DQ alerts':>9} {'s':>6}"
    )
    lines = [title, header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.events:>10,} {r.distinct_values:>10,} {r.distinct_slices:>8,} {r.state_bytes / 1024:>10,.1f} "
            f"{r.rss_mb:>8.1f} {r.peak_rss_mb:>9.1f} {r.kept_categories:>9} {r.window_overflow:>12,} "
            f"{r.reference_categories:>8} {r.kept_slice_values:>11} {r.slice_values_over_cap:>10,} "
            f"{r.join_slices_over_cap:>9,} {r.quality_alerts:>9} {r.seconds:>6.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="predictions, each a new user_agent value")
    parser.add_argument("--slices", type=int, default=100_000, help="distinct customer slice values")
    args = parser.parse_args(argv)
    # Checkpoints half a window past a window's end, so the open window's statistics show.
    half = WINDOW_EVENTS // 2
    total = args.events + half
    marks = [m + half for m in (10_000, 50_000, 100_000, 250_000, 500_000) if m < args.events]
    config = MonitorConfig.model_validate(
        {"reference": {"warmup_events": 2000}, "window": {"size_events": WINDOW_EVENTS}}
    )
    caps = config.caps
    print(
        f"caps: max_categories={caps.max_categories}, max_slice_values={caps.max_slice_values}; "
        f"warm-up 2,000 events, windows of 1,000; outcomes {LABEL_DELAY_EVENTS} events after their prediction\n"
    )
    control_events = min(total, 100_000 + half)
    control = run_flood(control_events, 10, 10, [m for m in marks if m < control_events], config)
    print(_table(f"control: {control_events:,} predictions, 10 distinct values, 10 slices", control))
    print()
    flood = run_flood(total, total, args.slices, marks, config)
    print(_table(f"flood: {total:,} predictions, every value distinct, {args.slices:,} slices", flood))
    first, last = next((r for r in flood if r.events >= 100_000), flood[0]), flood[-1]
    kib = control[-1].state_bytes / 1024
    print(
        f"\nstate {last.state_bytes / 1024:,.1f} KiB after {last.events:,} distinct values "
        f"({first.state_bytes / 1024:,.1f} KiB at {first.events:,}; control {kib:,.1f} KiB); "
        f"RSS {last.rss_mb:.1f} MiB (peak {last.peak_rss_mb:.1f} MiB); "
        f"{last.events / last.seconds:,.0f} predictions/s with outcomes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
