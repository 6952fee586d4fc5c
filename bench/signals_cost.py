"""What each optional signal costs in `driftline replay`: slice drift, attribution drift, a vector
feature; beside the same model with none configured, in one run.

One model with 20 numeric and 5 categorical features (the stream `replay_throughput.py` and
`../shared/tools/replay-rate.py` use), every default detector on. Each row adds one thing to the
events and one section to the configuration:

* `none`: the plain stream, nothing configured (what the columnar-core goal is measured on);
* `slices`: `slices: {country: C0..C9}` (ten of a tenth) on every event; then
  `slice_drift: {keys: [country]}` configured;
* `attributions`: an attribution per numeric feature on every event; then `attribution: {}`;
* `embedding`: a 384-number `embedding` feature on every event; then declared `type: vector`;
* `pii`: the plain stream with its 5 categorical features marked `pii: hash` (a keyed hash of
  each value where events are decoded, `DRIFTLINE_PII_KEY` set for the run), and with one
  numeric feature marked `pii: drop`.

Each "carried" row has the events but nothing configured: what reading the extra JSON costs
(and, for an undeclared embedding, counting it as an unknown feature); the next row is what
watching it costs on top.

Per row, CPU seconds of one core (`taskset`), as `replay-rate.py` counts them: the marginal rate
of a long file over a short one (start-up and calibration cancel out), and the short run's CPU,
which holds the calibration (slice references complete within it). Rows alternate, `--rounds`
times; the table keeps each row's median marginal rate and median short-run CPU.

    python bench/signals_cost.py [--short 20000] [--long 150000] [--rounds 3] [--save]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median

import numpy as np
import orjson
import yaml
from replay_throughput import CATEGORIES, N_CATEGORICAL, N_NUMERIC

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2024, 1, 1, tzinfo=UTC)
DIMENSION = 384
BASE = {"reference": {"warmup_events": 2000}, "window": {"size_events": 1000}}
"""A short warm-up, so that the ten slices' references (1,000 events each) fill within the short run."""

ROWS: dict[str, tuple[set[str], dict]] = {
    "none": (set(), {}),
    "slices carried": ({"slices"}, {}),
    "slice_drift (10 slices)": ({"slices"}, {"slice_drift": {"keys": ["country"], "reference_events": 1000}}),
    "attributions carried": ({"attributions"}, {}),
    "attribution": ({"attributions"}, {"attribution": {}}),
    f"embedding ({DIMENSION}) carried": ({"vector"}, {}),
    f"vector feature ({DIMENSION})": (
        {"vector"},
        {"features": {"embedding": {"type": "vector", "dimension": DIMENSION}}},
    ),
    "pii: hash (5 categorical)": (set(), {"features": {f"c{j}": {"pii": "hash"} for j in range(N_CATEGORICAL)}}),
    "pii: drop (1 numeric)": (set(), {"features": {"x0": {"pii": "drop"}}}),
}
PII_KEY = "bench-only-key-for-signals-cost-0123456789"
"""`DRIFTLINE_PII_KEY` for the runs (the hash rows need one; a deployment's comes from its secrets)."""


def write_events(path: Path, n: int, carry: set[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, N_NUMERIC)).round(5)
    categorical = rng.choice(CATEGORIES, size=(n, N_CATEGORICAL), p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    weights = rng.normal(size=N_NUMERIC)
    country = rng.integers(0, 10, n)
    basis = rng.normal(size=(8, DIMENSION)) / np.sqrt(DIMENSION)
    with path.open("wb") as handle:
        for i in range(n):
            features: dict = {f"x{j}": float(numeric[i, j]) for j in range(N_NUMERIC)}
            features.update({f"c{j}": str(categorical[i, j]) for j in range(N_CATEGORICAL)})
            event: dict = {
                "model_id": "bench",
                "prediction_id": f"p{i}",
                "timestamp": (START + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                "features": features,
                "prediction": float(numeric[i] @ weights),
            }
            if "vector" in carry:
                vector = rng.normal(size=8) @ basis + 0.05 * rng.normal(size=DIMENSION)
                features["embedding"] = vector.round(4).tolist()
            if "slices" in carry:
                event["slices"] = {"country": f"C{country[i]}"}
            if "attributions" in carry:
                event["attributions"] = {f"x{j}": round(float(numeric[i, j] * weights[j]), 5) for j in range(N_NUMERIC)}
            handle.write(orjson.dumps(event) + b"\n")


def replay_cpu(events: Path, config: Path, out: Path) -> float:
    """CPU seconds of one `driftline replay` over `events`, pinned to one core."""
    code = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    code += "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(u.ru_utime + u.ru_stime)"
    command = ["taskset", "-c", "0", str(ROOT / ".venv/bin/driftline"), "replay", "--config", str(config),
               "--input", str(events), "--alerts-out", str(out / "alerts.jsonl")]  # fmt: skip
    environment = {**os.environ, "DRIFTLINE_PII_KEY": PII_KEY}
    result = subprocess.run(
        [sys.executable, "-c", code, *command], check=True, capture_output=True, text=True, env=environment
    )
    return float(result.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=20_000)
    parser.add_argument("--long", type=int, default=150_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", nargs="*", choices=list(ROWS), help="only these rows (and `none`, the baseline)")
    parser.add_argument("--save", action="store_true", help="also write bench/results/signals-<date>.md")
    args = parser.parse_args()
    rows = {name: ROWS[name] for name in ROWS if not args.rows or name == "none" or name in args.rows}
    rates: dict[str, list[float]] = {name: [] for name in rows}
    shorts: dict[str, list[float]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory(prefix="signals-cost-") as tmp:
        work = Path(tmp)
        files = {}
        for row, (name, (carry, section)) in enumerate(rows.items()):
            key = "-".join(sorted(carry)) or "plain"
            for length, n in (("short", args.short), ("long", args.long)):
                path = work / f"{key}-{length}.jsonl"
                if not path.exists():
                    write_events(path, n, carry)
                files[name, length] = path
            config = work / f"row-{row}.yaml"
            config.write_text(yaml.safe_dump({**BASE, "models": [{"model_id": "bench", **section}]}))
            files[name, "config"] = config
        for _ in range(args.rounds):
            for name in rows:
                short = replay_cpu(files[name, "short"], files[name, "config"], work)
                long = replay_cpu(files[name, "long"], files[name, "config"], work)
                shorts[name].append(short)
                rates[name].append((args.long - args.short) / max(long - short, 1e-9))
    base_rate, base_short = median(rates["none"]), median(shorts["none"])
    lines = [
        f"# Optional signals in `driftline replay`: cost against none, {date.today().isoformat()}",
        "",
        f"One model, {N_NUMERIC} numeric + {N_CATEGORICAL} categorical features, every default detector; "
        f"reference.warmup_events {BASE['reference']['warmup_events']}, windows of "
        f"{BASE['window']['size_events']}; marginal rate of {args.long:,} over {args.short:,} events, one core, "
        f"median of {args.rounds} alternating rounds (`bench/signals_cost.py`).",
        "",
        "| configured | events per CPU-s (marginal) | vs none | µs per event more | short run CPU-s (start-up, "
        "calibration) | vs none |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in rows:
        rate, short = median(rates[name]), median(shorts[name])
        lines.append(
            f"| {name} | {rate:,.0f} | {rate / base_rate:.2f}x | {1e6 / rate - 1e6 / base_rate:+.1f} | "
            f"{short:.2f} | {short / base_short:.2f}x |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.save:
        path = ROOT / "bench" / "results" / f"signals-{date.today().isoformat()}.md"
        path.write_text(report)
        print(f"saved {path}")


if __name__ == "__main__":
    main()
