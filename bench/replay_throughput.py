"""Replay throughput, peak memory and detector state per feature.

One model with 20 numeric and 5 categorical features, every configured detector on (the
defaults), events written to a JSONL file first, then replayed in this process on one core
(`os.sched_setaffinity`). Reports events/s end to end (decode, validate, monitor), the peak RSS,
and the size of one feature's detector state after all events (JSON bytes), which must not grow
with the number of events.

    python bench/replay_throughput.py [--events 200000] [--state-events 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import MonitorConfig
from monitor.contracts.events import PredictionEvent
from monitor.monitoring.fleet import FleetMonitor
from monitor.replay import replay

N_NUMERIC, N_CATEGORICAL = 20, 5
CATEGORIES = ["a", "b", "c", "d", "e", "f"]
START = datetime(2024, 1, 1, tzinfo=UTC)


def write_events(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, N_NUMERIC)).round(5)
    categorical = rng.choice(CATEGORIES, size=(n, N_CATEGORICAL), p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    scores = rng.random(n).round(5)
    with path.open("wb") as handle:
        for i in range(n):
            features = {f"x{j}": float(numeric[i, j]) for j in range(N_NUMERIC)}
            features.update({f"c{j}": str(categorical[i, j]) for j in range(N_CATEGORICAL)})
            timestamp = (START + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
            event = {
                "model_id": "bench",
                "prediction_id": f"p{i}",
                "timestamp": timestamp,
                "features": features,
                "prediction": float(scores[i]),
            }
            handle.write(orjson.dumps(event) + b"\n")


def state_per_feature(n_events: int) -> dict[str, float]:
    """Detector state of one feature after `n_events`, fed in batches straight to the monitor."""
    fleet = FleetMonitor(MonitorConfig())
    rng = np.random.default_rng(1)
    batch = 1000
    sizes = {}
    for start in range(0, n_events, batch):
        events = [
            PredictionEvent.model_construct(
                model_id="bench",
                model_version="v",
                prediction_id=f"p{start + i}",
                timestamp=START + timedelta(seconds=start + i),
                prediction=0.5,
                features={"x0": float(rng.normal()), "c0": CATEGORIES[int(rng.integers(6))]},
            )
            for i in range(batch)
        ]
        fleet.observe(PredictionBatch.from_events(events, range(start, start + batch)))
        if start + batch in (n_events // 10, n_events):
            features = fleet.models["bench"].drift.features
            sizes[start + batch] = {
                name: len(json.dumps({"sequential": f.to_state()["sequential"], "tests": f.to_state()["tests"]}))
                for name, f in features.items()
            }
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--state-events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        write_events(events, args.events)
        config = MonitorConfig()
        started = time.perf_counter()
        summary = replay(config, [events], Path(tmp) / "alerts.jsonl", Path(tmp) / "dead.jsonl")
        seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = state_per_feature(args.state_events)
    small, large = sorted(sizes)
    print("| measure | value | goal |\n|---|---|---|")
    print(
        f"| replay, 20 numeric + 5 categorical features, every default detector | "
        f"{args.events / seconds:,.0f} events/s ({args.events:,} events, {seconds:.1f} s, one core) | >= 50,000 |"
    )
    print(f"| peak RSS of that replay | {peak_mib:,.0f} MiB | |")
    print(f"| alerts on stationary data | {sum(summary.alerts.values())} | 0 expected |")
    for name in ("x0", "c0", "__prediction__"):
        print(
            f"| detector state, feature {name}, after {small:,} / {large:,} events | "
            f"{sizes[small][name] / 1024:.1f} / {sizes[large][name] / 1024:.1f} KiB | <= 16 KiB, constant |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
