"""CPU time of one model's start-up calibration, by detector kind, before and after a change.

When a model's warm-up ends, every drift detector is fitted and calibrated on the reference
(`monitor.detectors.calibration`): for a model of 20 numeric and 5 categorical features plus its
score, with the default detectors, that is 21 `cusum` and 21 `ks`, 5 each of `category_cusum`,
`chi_square` and `unseen_share`, and one `pca_reconstruction`. This fits exactly those, at the
run length the monitor gives each of them, on references of the worker benchmark's size (1,000
rows, `warmup_events` in `../shared/tools/worker-rate.py`) and of the default (5,000 rows), in a
child process per side: `--baseline REV` from a `git worktree` of that revision under /tmp
(PYTHONPATH set to it), then the working tree, alternately, `--rounds` times; each figure is the
best round (the machine is shared: the least disturbed round is closest to the code's own cost).
The registered kinds a model does not use by default (`psi`, `wasserstein`, `jensen_shannon`,
`bernoulli_cusum` on a 0/1 error stream) get a row each, outside the per-model total.

Both sides print every calibrated limit and threshold; the last line says whether they are
bit-identical.

    .venv/bin/python bench/calibration_cost.py --baseline c893c53
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import numpy as np
from monitor.contracts.config import MonitorConfig
from monitor.detectors import registry
from monitor.monitoring.drift import detector_run_length

rows, repeats = int(sys.argv[1]), int(sys.argv[2])
per_model = {"cusum": 21, "ks": 21, "category_cusum": 5, "chi_square": 5, "unseen_share": 5, "pca_reconstruction": 1}
extra = ("psi", "wasserstein", "jensen_shannon", "bernoulli_cusum")
run_length = detector_run_length(MonitorConfig(), sum(per_model.values()))
window = 1000
rng = np.random.default_rng(20261206)
numeric = [np.round(rng.standard_normal(rows), 5) for _ in range(21)]
categorical = [rng.choice(7, rows, p=[0.30, 0.25, 0.20, 0.10, 0.10, 0.05, 0.0]) for _ in range(5)]
errors = (rng.random(rows) < 0.1).astype(float)
jobs = []  # (kind, reference, context)
for kind in ("cusum", "ks", "psi", "wasserstein"):
    jobs += [(kind, ref, {}) for ref in numeric[: per_model.get(kind, 5)]]
for kind in ("category_cusum", "chi_square", "unseen_share", "jensen_shannon"):
    jobs += [(kind, ref, {"n_categories": 7}) for ref in categorical]
jobs.append(("pca_reconstruction", np.column_stack(numeric[:20]), {}))
jobs += [("bernoulli_cusum", errors, {})] * 5
cpu, count, limits = {}, {}, []
for r in range(repeats):
    for i, (kind, ref, context) in enumerate(jobs):
        detector = registry.create(kind)
        start = time.process_time()
        detector.fit(ref, run_length=run_length, window_size=window, seed=i, **context)
        cpu[kind] = cpu.get(kind, 0.0) + time.process_time() - start
        count[kind] = count.get(kind, 0) + 1
        if r == 0:
            limits.append([kind, repr(detector.threshold), [repr(float(v)) for v in getattr(detector, "limits", [])]])
print(json.dumps({"per_detector": {k: cpu[k] / count[k] for k in cpu}, "per_model": per_model, "limits": limits}))
"""


def run_side(pythonpath: Path, rows: int, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    command = [sys.executable, "-c", CHILD, str(rows), str(repeats)]
    # run from the tree itself: `-c` puts the working directory first on sys.path
    out = subprocess.run(command, env=env, cwd=pythonpath, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5, help="alternating before/after runs per reference size")
    parser.add_argument("--repeats", type=int, default=2, help="fits of every detector per run")
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 5000], help="reference sizes")
    args = parser.parse_args(argv)

    worktree = Path(tempfile.mkdtemp(prefix="calibration-baseline-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline],
                   check=True, capture_output=True)  # fmt: skip
    try:
        identical = True
        print(f"baseline {args.baseline}; best of {args.rounds} alternating rounds of {args.repeats} fits each\n")
        for rows in args.rows:
            runs: dict[str, list[dict]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                runs["before"].append(run_side(worktree, rows, args.repeats))
                runs["after"].append(run_side(ROOT, rows, args.repeats))
            identical &= runs["before"][0]["limits"] == runs["after"][0]["limits"]
            best = {
                side: {k: min(r["per_detector"][k] for r in rs) for k in rs[0]["per_detector"]}
                for side, rs in runs.items()
            }
            spread = {
                side: statistics.median(sum(r["per_detector"][k] * n for k, n in r["per_model"].items()) for r in rs)
                for side, rs in runs.items()
            }
            per_model = runs["after"][0]["per_model"]
            print(f"### Reference of {rows:,} rows\n")
            print(
                "| detector kind | per model | before CPU-ms each | after CPU-ms each "
                "| before CPU-s per model | after CPU-s per model | ratio |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|")
            total = {"before": 0.0, "after": 0.0}
            for kind in best["after"]:
                n = per_model.get(kind, 0)
                b, a = best["before"][kind], best["after"][kind]
                total["before"] += b * n
                total["after"] += a * n
                cells = f"{b * n:.3f} | {a * n:.3f}" if n else "- | -"
                print(f"| {kind} | {n or '-'} | {b * 1e3:.2f} | {a * 1e3:.2f} | {cells} | {b / a:.2f}x |")
            ratio = total["before"] / total["after"]
            print(
                f"| **model total** | {sum(per_model.values())} | | | **{total['before']:.3f}** "
                f"| **{total['after']:.3f}** | **{ratio:.2f}x** |"
            )
            print(f"\nmedian round, per model: before {spread['before']:.3f} CPU-s, after {spread['after']:.3f} CPU-s "
                  f"({spread['before'] / spread['after']:.2f}x)\n")  # fmt: skip
        print(f"calibrated limits and thresholds bit-identical: {'yes' if identical else 'NO'}")
        return 0 if identical else 1
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
