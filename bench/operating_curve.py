"""The operating curve: drift-bench through `driftline replay` at several declared budgets.

Runs the shared peer benchmark (a copy of `../shared/drift-bench`, set up as in bench/README.md)
with Driftline's bench configuration (`bench/drift-bench.yaml`) at each declared false-alarm
budget, written as "one false alarm per model per N events" (`alerting.false_alarms_per_model_per_day`
set to `events_per_model_per_day / N` in a temporary copy of the configuration; nothing else
changes), and the peers once in the same run. Prints one markdown table per family: for each budget
and each peer, FA/10k, missed, mean and median delay, scored by drift-bench's own `metrics.py`
(only `firing` records count as alarms).

    .venv/bin/python bench/operating_curve.py [--drift-bench /tmp/drift-bench] [--budgets 10000,100000,1000000]
        [--peers river,frouros,windowed,alibi,evidently | --peers ''] [--streams 'err_*' ...] [--out FILE]
        [--error-bank 1.5,2.5,4.5]   # also: the error streams with bernoulli_cusum as a bank of these odds ratios
        [--commit HEAD | --worktree]   # the product measured: a commit's tree (default HEAD), or the working tree
        [--peers-from DIR]   # take the peers' records from an earlier run's raw folder instead of rerunning them
        [--raw DIR]   # re-score an earlier run's records instead of running

The product runs from `git archive` of `--commit` (HEAD by default) on the project's interpreter, so
edits made meanwhile in a shared working tree do not leak into a 25-minute run. The peers run
through drift-bench's `run.py` (accuracy pass only, `--no-throughput`) in their own
virtualenvs (`BENCH_VENV_ROOT`, default /tmp/benchvenvs); the product passes run one after
another (`peers_product.py`, one replay process per stream). Measured on 2 shared cores: 2.5-4 min
per budget for the 71 streams, the five peers ~9 min.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from delay_bounds import oracle_delays  # noqa: E402

CONFIG = ROOT / "bench" / "drift-bench.yaml"
PYTHON = ROOT / ".venv" / "bin" / "python"
FAMILIES = [  # (title, drift-bench families): run.py's groups
    ("numeric", ["num_mean_abrupt", "num_var_abrupt", "num_mean_gradual", "num_nodrift_gauss"]),
    ("categorical", ["cat_freq", "cat_new", "cat_nodrift"]),
    ("error rate", ["err_abrupt", "err_gradual", "err_nodrift"]),
    ("stress controls", ["num_nodrift_t3", "num_nodrift_ar1"]),
]


def budget_label(events: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if events >= size and events % size == 0:
            return f"1/{events // size}{suffix}"
    return f"1/{events}"


def product_name(events: int, bank: list[float] | None = None) -> str:
    return ("driftline-bank@" if bank else "driftline@") + budget_label(events).replace("/", "per")


def write_config(base: Path, events: int, folder: Path, bank: list[float] | None = None) -> Path:
    """A copy of the bench configuration with the budget changed (and the error stream's
    `bernoulli_cusum` made a bank of `bank` odds ratios, if given); nothing else."""
    config = yaml.safe_load(base.read_text())
    alerting = config.setdefault("alerting", {})
    per_day = float(alerting.get("events_per_model_per_day", 1_000_000))
    alerting["false_alarms_per_model_per_day"] = per_day / events
    if bank:
        params = config.setdefault("detectors", {}).setdefault("params", {})
        params.setdefault("bernoulli_cusum", {})["odds_ratio"] = bank
    path = folder / f"drift-bench-{product_name(events, bank)}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def bench_python(venv_root: Path) -> str:
    py = venv_root / "benchvenv-river" / "bin" / "python"
    return str(py) if py.exists() else sys.executable


def run_peers(bench: Path, py: str, peers: str, stream_args: list[str], env: dict) -> Path:
    """drift-bench's run.py with the peers only; returns the folder of its raw records."""
    raw_root = bench / "results" / "raw"
    before = set(raw_root.iterdir()) if raw_root.exists() else set()
    out = Path(tempfile.gettempdir()) / "operating-curve-peers.md"
    argv = [py, "run.py", "--peers", peers, "--no-throughput", "--out", str(out), *stream_args]
    print("peers:", " ".join(argv[1:]), file=sys.stderr, flush=True)
    subprocess.run(argv, cwd=bench, env=env, check=True, stdout=subprocess.DEVNULL)
    created = sorted(set(raw_root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not created:
        sys.exit("run.py left no raw records")
    return created[-1]


def export(rev: str, folder: Path) -> str:
    """The tree of commit `rev` in `folder`; returns the commit's short hash."""
    tree = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=tree, check=True)
    return subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def run_product(bench: Path, py: str, raw: Path, name: str, config: Path, stream_args: list[str], env: dict):
    cmd = f"{PYTHON} -m monitor.cli replay --config {{config}} --input {{input}} --alerts-out {{alerts}}"
    out = raw / f"{name}.accuracy.jsonl"
    out.unlink(missing_ok=True)
    argv = [py, "peers_product.py", "accuracy", "--out", str(out), "--cmd", cmd, "--config", str(config)]
    argv += ["--name", name, *stream_args]
    t0 = time.time()
    subprocess.run(argv, cwd=bench, env=env, check=True, stderr=subprocess.DEVNULL)
    print(f"{name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)


def fmt(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def table(bench: Path, raw: Path, budgets: list[int], bank: list[float] | None) -> str:
    sys.path.insert(0, str(bench))
    import run  # drift-bench's orchestrator: its scoring helpers (numpy only)

    streams = {s.name: s for s in run.S.load()}
    acc = run.aggregate(run.load_records(raw), streams)[0]
    oracle = oracle_delays(run.S, streams.values(), budgets)
    series = [(product_name(e), e) for e in budgets] + ([(product_name(e, bank), e) for e in budgets] if bank else [])
    ours = [name for name, _ in series if name in acc]
    budget_of = dict(series)
    lines = []
    for title, families in FAMILIES:
        names = sorted(n for n, s in streams.items() if s.family in families)
        rows = []
        for det in sorted(acc):
            g = run.group_stats(acc[det], names, streams)
            if g is not None:
                rows.append((det, g))
        if not rows:
            continue
        drift = any(g["n_drift"] for _, g in rows)
        lines.append(f"\n### {title} ({', '.join(families)})\n")
        if drift:
            lines.append("| detector | budget | streams | FA/10k (alarms) | missed | mean delay | median delay |")
            lines.append("|---|---|---|---|---|---|---|")
        else:
            lines.append("| detector | budget | streams | FA/10k (alarms) |")
            lines.append("|---|---|---|---|")

        def key(row):
            det, g = row
            mine = det in ours
            mean = statistics.mean(g["delays"]) if g["delays"] else 1e9
            return (not mine, ours.index(det) if mine else 0, g["missed"] / max(1, g["n_drift"]), g["fa_rate"], mean)

        def line(det: str, g: dict, drift: bool = drift) -> str:
            budget = budget_label(budget_of[det]) if det in ours else "library default"
            label = det.split("@")[0] if det in ours else det
            cells = [f"**{label}**" if det in ours else label, budget, str(g["n_run"])]
            cells.append(f"{fmt(g['fa_rate'], 2)} ({g['fa']})")
            if drift:
                cells.append(f"{g['missed']}/{g['n_drift']}")
                cells.append(fmt(statistics.mean(g["delays"])) if g["delays"] else "–")
                cells.append(fmt(statistics.median(g["delays"])) if g["delays"] else "–")
            return "| " + " | ".join(cells) + " |"

        ordered = sorted(rows, key=key)
        mine = sum(det in ours for det, _ in ordered)
        lines += [line(det, g) for det, g in ordered[:mine]]
        drifted = [n for n in names if streams[n].change_point is not None]
        if drift and all(n in oracle[budgets[0]] for n in drifted):  # the bound, beside our rows
            for events in budgets:
                found = [oracle[events][n] for n in drifted if oracle[events][n] is not None]
                cells = ["oracle (knows the change)", budget_label(events), str(len(drifted)), "–"]
                cells += [f"{len(drifted) - len(found)}/{len(drifted)}", fmt(statistics.mean(found))]
                lines.append("| " + " | ".join([*cells, fmt(statistics.median(found))]) + " |")
        lines += [line(det, g) for det, g in ordered[mine:]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drift-bench", type=Path, default=Path("/tmp/drift-bench"), help="a set-up copy of drift-bench")
    ap.add_argument("--budgets", default="10000,100000,1000000", help="events per false alarm per model")
    ap.add_argument("--peers", default="river,frouros,windowed", help="run.py's --peers ('' for none)")
    ap.add_argument("--streams", nargs="*", help="fnmatch patterns on stream names (default: all)")
    ap.add_argument("--error-bank", help="odds ratios, e.g. 1.5,2.5,4.5: a second series on the error streams")
    ap.add_argument("--commit", default="HEAD", help="the commit whose product is measured")
    ap.add_argument("--worktree", action="store_true", help="measure the working tree instead of --commit")
    ap.add_argument("--peers-from", type=Path, help="copy the peers' records from an earlier run's raw folder")
    ap.add_argument("--raw", type=Path, help="re-score the records of an earlier run")
    ap.add_argument("--out", type=Path, help="also write the table here")
    a = ap.parse_args()
    bench = a.drift_bench.resolve()
    budgets = [int(float(b)) for b in a.budgets.split(",") if b]
    bank = [float(r) for r in a.error_bank.split(",")] if a.error_bank else None
    env = {**os.environ, "BENCH_VENV_ROOT": os.environ.get("BENCH_VENV_ROOT", "/tmp/benchvenvs")}
    py = bench_python(Path(env["BENCH_VENV_ROOT"]))
    stream_args = ["--streams", *a.streams] if a.streams else []
    t0 = time.time()
    source = "working tree"
    if a.raw:
        raw = a.raw
        source = "as recorded"
    else:
        if a.peers_from:
            raw = Path(tempfile.mkdtemp(prefix="operating-curve-"))
            for records in a.peers_from.glob("*.jsonl"):
                if not records.name.startswith("driftline"):
                    shutil.copy(records, raw / records.name)
        elif a.peers:
            raw = run_peers(bench, py, a.peers, stream_args, env)
        else:
            raw = Path(tempfile.mkdtemp(prefix="operating-curve-"))
        error_streams = [p for p in (a.streams or ["err_*"]) if p.startswith("err")] or ["err_*"]
        with tempfile.TemporaryDirectory() as folder:
            product_env, base = dict(env), CONFIG
            if not a.worktree:
                (Path(folder) / "src").mkdir()
                source = "commit " + export(a.commit, Path(folder) / "src")
                product_env["PYTHONPATH"] = str(Path(folder) / "src")
                base = Path(folder) / "src" / CONFIG.relative_to(ROOT)
            for events in budgets:
                config = write_config(base, events, Path(folder))
                run_product(bench, py, raw, product_name(events), config, stream_args, product_env)
            for events in budgets if bank else []:
                config = write_config(base, events, Path(folder), bank)
                streams = ["--streams", *error_streams]
                run_product(bench, py, raw, product_name(events, bank), config, streams, product_env)
    peers = f"{a.peers_from.name} (an earlier run's records)" if a.peers_from else a.peers or "none"
    head = [
        f"Operating curve, {dt.datetime.now(dt.UTC):%Y-%m-%d}: drift-bench through `driftline replay` "
        f"(product and `bench/drift-bench.yaml`: {source}; budget changed only), "
        f"peers: {peers}; streams: {' '.join(a.streams) if a.streams else 'all'}; "
        + (f"driftline-bank: the error streams with bernoulli_cusum odds_ratio {bank}; " if bank else "")
        + f"wall time {(time.time() - t0) / 60:.1f} min; raw records: {raw.name}.",
        "",
        "Budget = one false alarm per model per N events, as declared in the configuration. FA/10k = "
        "false alarms per 10,000 stationary events (pooled); missed = no alarm within 10,000 events of "
        "the change; delays over detected streams only (drift-bench's metrics.py).",
    ]
    md = "\n".join(head) + "\n" + table(bench, raw, budgets, bank)
    print(md)
    if a.out:
        a.out.write_text(md)


if __name__ == "__main__":
    main()
