"""Every Driftline benchmark, one after the other, each printing its table; `make bench` runs it.

    .venv/bin/python bench/run.py [--quick] [--save]

* `replay_throughput.py`: replay events/s with 20 numeric + 5 categorical features and every
  default detector, peak RSS, detector state per feature after 1 M events;
* `evaluation_throughput.py`: join + evaluation outcomes/s, memory per pending prediction;
* `signals_cost.py`: replay events/s with each optional signal (slice drift, attribution drift, a
  384-number vector feature) and the privacy policy configured, beside none, and its start-up
  (calibration) CPU;
* `detector_accuracy.py`: our detectors in memory on the drift-bench streams (needs
  ../shared/drift-bench; the product-through-replay comparison with the peers is drift-bench's own
  `run.py --product-cmd ...`, see bench/README.md);
* `delay_bounds.py`: the delay of an oracle that knows the change on the same streams, per family and
  declared budget (the fastest any detector can be);
* `kafka_throughput.py`: events/s through one and two `driftline worker` processes on the embedded
  broker, and end-to-end alert latency (`--quick` under `--quick`);
* `worker_budget.py`: a worker's CPU per event layer by layer (fetch, faust, decode, core, state)
  against the whole worker, checkpointing after every batch and at its default interval;
* `kafka_load.py`: two workers for 10 minutes (1 under `--quick`): events/s, RSS of the workers and
  the broker over time; with `--save` (and not `--quick`) its plot goes to `bench/results/load-<date>.png`.

`--save` also writes the combined output to `bench/results/bench-<date>.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRIFT_BENCH = HERE.parent.parent / "shared" / "drift-bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    runs = [
        ("replay throughput", ["replay_throughput.py"]
         + (["--events", "20000", "--state-events", "100000"] if args.quick else [])),
        ("evaluation throughput", ["evaluation_throughput.py"]
         + (["--outcomes", "30000", "--pending", "100000", "--repeat", "1"] if args.quick else [])),
        ("optional signals in replay", ["signals_cost.py"]
         + (["--long", "40000", "--rounds", "1"] if args.quick else [])),
    ]  # fmt: skip
    if DRIFT_BENCH.is_dir():
        runs.append(("detector accuracy (in memory)", ["detector_accuracy.py", "--drift-bench", str(DRIFT_BENCH)]
                     + (["--streams", "*_r0"] if args.quick else [])))  # fmt: skip
        runs.append(("what the budget allows (an oracle that knows the change)",
                     ["delay_bounds.py", "--drift-bench", str(DRIFT_BENCH)]))  # fmt: skip
    runs.append(("Kafka throughput and alert latency (embedded broker)",
                 ["kafka_throughput.py"] + (["--quick"] if args.quick else [])))  # fmt: skip
    runs.append(("A worker's time per event, layer by layer",
                 ["worker_budget.py"] + (["--events", "40000"] if args.quick else [])))  # fmt: skip
    load_png = HERE / "results" / f"load-{dt.date.today()}.png"
    runs.append(("Kafka load, two workers (embedded broker)",
                 ["kafka_load.py"] + (["--quick"] if args.quick else [])
                 + (["--png", str(load_png)] if args.save and not args.quick else [])))  # fmt: skip
    report = [f"# Driftline benchmarks, {dt.date.today()}\n"]
    failed = 0
    for title, argv in runs:
        print(f"\n## {title}\n", flush=True)
        result = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], capture_output=True, text=True)
        print(result.stdout, flush=True)
        if result.returncode != 0:
            failed += 1
            print(result.stderr[-2000:], file=sys.stderr)
        report.append(f"## {title}\n\n`{' '.join(argv)}`\n\n{result.stdout}")
    if args.save:
        out = HERE / "results" / f"bench-{dt.date.today()}.md"
        out.write_text("\n".join(report))
        print(f"saved {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
