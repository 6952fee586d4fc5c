"""Replay throughput by stage, beside the previous path and river's ADWIN; peak memory; state size.

One model with 20 numeric and 5 categorical features, every configured detector on (the
defaults), events written to a JSONL file first. All CPU time, one core (`sched_setaffinity`):

* `driftline replay` as a whole, marginal events per CPU-second (a long and a short file, so
  start-up and calibration cancel out, as `../shared/tools/replay-rate.py` measures the goal),
  for this checkout and for `--baseline` (a git revision, run from a temporary worktree), side by
  side in one run;
* microseconds per event by stage, in this process, after the warm-up: decode (the batch decoder,
  and pydantic per event as the previous path did), join, drift, evaluation, alerts;
* river's ADWIN over the same 25 columns, one detector per column, as a ratio;
* peak RSS, and the state of one feature and of the whole model after `--state-events` events.

    python bench/replay_throughput.py [--events 200000] [--state-events 1000000] [--baseline 7977ae6]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

from monitor.cli import BATCH_GC_THRESHOLD
from monitor.contracts.batch import decode_batch
from monitor.contracts.config import MonitorConfig
from monitor.contracts.validation import decode_any
from monitor.evaluation.evaluator import ModelEvaluator
from monitor.monitoring.drift import DriftMonitor
from monitor.monitoring.fleet import FleetMonitor, ModelMonitor
from monitor.replay import BATCH_LINES

ROOT = Path(__file__).resolve().parent.parent
N_NUMERIC, N_CATEGORICAL = 20, 5
CATEGORIES = ["a", "b", "c", "d", "e", "f"]
START = datetime(2024, 1, 1, tzinfo=UTC)
SHORT = 20_000


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


def replay_cpu(command: list[str], events: Path, out: Path) -> float:
    """CPU seconds of one `driftline replay` process over `events`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([*command, "replay", "--input", str(events), "--alerts-out", str(out / "alerts.jsonl")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=out)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def marginal_rate(command: list[str], short: Path, long: Path, n_long: int, out: Path) -> float:
    return (n_long - SHORT) / max(
        replay_cpu(command, long, out) - min(replay_cpu(command, short, out) for _ in range(2)), 1e-9
    )


def checkout_command(revision: str, tmp: Path) -> list[str]:
    """`driftline` of another revision: its tree in a worktree, ahead of this checkout on sys.path."""
    tree = tmp / f"tree-{revision}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), revision],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from monitor.cli import main; sys.argv[0] = 'x'; main()"
    return [sys.executable, "-c", code]


class StageClock:
    """CPU seconds spent in chosen methods, by stage: each is wrapped while the clock runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._patched: list[tuple[type, str, object]] = []

    def watch(self, owner: type, method: str, stage: str) -> None:
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            started = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.process_time() - started

        self._patched.append((owner, method, original))
        setattr(owner, method, timed)

    def stop(self) -> None:
        for owner, method, original in reversed(self._patched):
            setattr(owner, method, original)


def stages(events: Path, n: int, warm: int) -> dict[str, float]:
    """Microseconds per event by stage over `n` events after the first `warm` (reference), with
    the garbage collector set as `driftline replay` sets it."""
    gc.set_threshold(BATCH_GC_THRESHOLD, *gc.get_threshold()[1:])
    lines = events.read_bytes().splitlines()[: warm + n]
    fleet = FleetMonitor(MonitorConfig())
    batches = [(i, lines[i : i + BATCH_LINES]) for i in range(0, len(lines), BATCH_LINES)]
    warm_batches = warm // BATCH_LINES + 1
    for start, batch in batches[:warm_batches]:
        decoded = decode_batch(batch, np.arange(start, start + len(batch)))
        fleet.observe(decoded.predictions, decoded.outcomes)
    counted = sum(len(batch) for _, batch in batches[warm_batches:])
    clock = StageClock()
    clock.watch(type(fleet.join), "add_batch", "join")
    clock.watch(DriftMonitor, "observe", "drift")
    for method in ("observe_predictions", "observe_outcomes", "close_window"):
        clock.watch(ModelEvaluator, method, "evaluation")
    clock.watch(ModelMonitor, "raise_alerts", "alerts")
    total = decode = 0.0
    try:
        for start, batch in batches[warm_batches:]:
            started = time.process_time()
            decoded = decode_batch(batch, np.arange(start, start + len(batch)))
            decode += time.process_time() - started
            fleet.observe(decoded.predictions, decoded.outcomes)
            total += time.process_time() - started
    finally:
        clock.stop()
    started = time.process_time()
    for line in lines[warm : warm + 20_000]:
        decode_any(line)
    pydantic = (time.process_time() - started) / min(20_000, n)
    per_event = {"decode (batch, msgspec)": decode / counted, "decode (pydantic, per event: previous path)": pydantic}
    per_event |= {stage: seconds / counted for stage, seconds in clock.seconds.items()}
    per_event["the rest (grouping, columns, windows)"] = (total - decode - sum(clock.seconds.values())) / counted
    per_event["total, batch path"] = total / counted
    return {stage: seconds * 1e6 for stage, seconds in per_event.items()}


def adwin_rate(events: Path, n: int) -> float:
    """Events per CPU-second of river's ADWIN, one per column, over the 25 decoded columns."""
    from river.drift import ADWIN

    batch = decode_batch(events.read_bytes().splitlines()[:n], np.arange(n)).predictions
    names = [f"x{j}" for j in range(N_NUMERIC)] + [f"c{j}" for j in range(N_CATEGORICAL)]
    columns = [batch.column(name) for name in names[:N_NUMERIC]]
    columns += [[CATEGORIES.index(v) for v in batch.column(name)] for name in names[N_NUMERIC:]]
    detectors = [ADWIN() for _ in names]
    started = time.process_time()
    for detector, column in zip(detectors, columns, strict=True):
        for value in column:
            detector.update(value)
    return n / (time.process_time() - started)


def state_sizes(n_events: int) -> dict[str, dict[str, int]]:
    """JSON bytes of feature x0's detectors, of its whole state and of the model's, after
    `n_events / 10` and `n_events` events."""
    lines_per_batch = BATCH_LINES
    sizes: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.jsonl"
        write_events(path, n_events, seed=1)
        fleet = FleetMonitor(MonitorConfig())
        with path.open("rb") as handle:
            done = 0
            marks = {n_events // 10, n_events}
            while batch := [line for _, line in zip(range(lines_per_batch), handle, strict=False)]:
                fleet.observe(decode_batch(batch, np.arange(done, done + len(batch))).predictions)
                before, done = done, done + len(batch)
                for mark in sorted(m for m in marks if before < m <= done):
                    model = fleet.models["bench"]
                    feature = model.drift.features["x0"].to_state()
                    detectors = {"sequential": feature["sequential"], "tests": feature["tests"]}
                    sizes[f"{mark:,}"] = {
                        "x0 detectors": len(orjson.dumps(detectors)),
                        "x0 whole (open window sample included)": len(orjson.dumps(feature)),
                        "model": len(orjson.dumps(model.to_state())),
                    }
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--state-events", type=int, default=1_000_000)
    parser.add_argument("--baseline", default="7977ae6", help="git revision to compare with ('' to skip)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit it
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        long, short = tmp / "long.jsonl", tmp / "short.jsonl"
        write_events(long, args.events)
        short.write_bytes(b"".join(long.read_bytes().splitlines(keepends=True)[:SHORT]))
        commands = {"this checkout": [sys.executable, "-m", "monitor.cli"]}
        if args.baseline:
            commands[f"baseline {args.baseline}"] = checkout_command(args.baseline, tmp)
        rates = {name: marginal_rate(command, short, long, args.events, tmp) for name, command in commands.items()}
        if args.baseline:
            tree = tmp / f"tree-{args.baseline}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        warm = MonitorConfig().reference.warmup_events
        by_stage = stages(long, min(args.events, 100_000) - warm, warm)
        adwin = adwin_rate(long, min(args.events, 50_000))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = state_sizes(args.state_events)

    print(f"`driftline replay`, {args.events:,} events (marginal over {SHORT:,}), 20 numeric + 5 categorical features,")
    print("every default detector, CPU time on one core:\n")
    print("| replay | events per CPU-second | µs per event |\n|---|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:.1f} |")
    if args.baseline:
        ratio = rates["this checkout"] / rates[f"baseline {args.baseline}"]
        print(f"| ratio, this checkout / baseline | {ratio:.2f}x | |")
    print("| goal | 50,000 | 20.0 |\n\nBy stage, in process, after the warm-up (CPU µs per event):\n")
    print("| stage | µs per event |\n|---|---:|")
    for stage, micros in by_stage.items():
        print(f"| {stage} | {micros:.2f} |")
    print(f"\nriver ADWIN, one per column over the same 25 columns: {adwin:,.0f} events per CPU-second, "
          f"{adwin / rates['this checkout']:.1f}x this checkout's replay.\n")  # fmt: skip
    print(f"Peak RSS of this benchmark process: {peak_mib:,.0f} MiB.\n")
    print("| state, JSON bytes, after events | " + " | ".join(sizes) + " | goal |")
    print("|---|" + "---:|" * len(sizes) + "---|")
    for what in next(iter(sizes.values())):
        goal = "<= 16 KiB" if what.startswith("x0") else "bounded"
        print(f"| {what} | " + " | ".join(f"{s[what] / 1024:,.1f} KiB" for s in sizes.values()) + f" | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
