"""Long control runs: does the declared false-alarm budget hold through `driftline replay`?

For each family of stationary data (i.i.d. Gaussian, Student-t(3), AR(1) with phi 0.5, i.i.d.
categorical) one `driftline replay` runs over `--events` events (10 M by default) of a fleet of
`--models` models with `--features` features each (and a stationary score as the prediction),
interleaved round robin in one stream, with the bench configuration (`bench/drift-bench.yaml`:
warm-up reference of 5,000 events, windows of 1,000, every default detector) and only the budget
changed. Nothing in the data drifts, so every `feature_drift` alert that fires is a false alarm.

The budget is declared as the product reads it: `alerting.false_alarms_per_model_per_day` over
`alerting.events_per_model_per_day` (`run_length_events`); the drift side gets
`1 - evaluation.budget_share` of it, shared equally by the model's detectors, each calibrated to
`detector_run_length(config, n_detectors)` values (imported from `monitor.monitoring.drift`, with
`count_detectors`, so the arithmetic is the product's own). The budget of each family is chosen
so that `--expected` (100) feature-drift false alarms are declared over the monitored events
(those after each model's warm-up):

    declared = feature detectors per model x monitored events / detector_run_length

Measured: distinct firing `feature_drift` alerts (repeats and resolutions not counted), with an
exact 95 % Poisson interval. Goals (issue 18): within +-25 % of the declared count for i.i.d. data
(Gaussian, categorical), within 2x for t(3) and AR(1). The other alerts (prediction and
multivariate drift, data quality) are shown beside.

The events are generated in chunks with numpy (seeded) and piped into the replay's standard
input (`--input /dev/stdin`), so nothing is written to disk. The product runs from `git archive`
of `--commit` (HEAD by default), so edits made meanwhile in a shared working tree do not leak in;
`--worktree` measures the working tree. CPU-s is the replay process's user + system time; the
generator's is given apart. The families run one after another.

    .venv/bin/python bench/long_controls.py [--events 10000000] [--models 10] [--features 20]
        [--expected 100] [--families gauss,t3,ar1,cat] [--seed 20261206] [--commit HEAD | --worktree] [--save]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import yaml
from scipy.stats import chi2

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "bench" / "drift-bench.yaml"
PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = ROOT / "bench" / "results"
T0 = np.datetime64("2026-01-01T00:00:00", "ms")
STEP_MS = 10
"""Event time between two events of the stream (all models together)."""
CHUNK_ROWS = 20_000
"""Rounds of the fleet (one event per model each) generated and written at a time."""

FAMILIES = {  # name: (title, data type, goal as the largest ratio measured/declared either way)
    "gauss": ("i.i.d. Gaussian", "numeric", 1.25),
    "t3": ("Student-t(3)", "numeric", 2.0),
    "ar1": ("AR(1), phi 0.5", "numeric", 2.0),
    "cat": ("i.i.d. categorical", "categorical", 1.25),
}
PHI = 0.5


# --- budget: the product's own arithmetic -------------------------------------------------------


def product_budget(base: dict, kind: str, features: int, models: int, events: int, expected: float) -> dict:
    """The budget declaring `expected` feature-drift false alarms over the run, and what follows
    from it, computed with `monitor.monitoring.drift`'s functions on the configured model."""
    from monitor.contracts.config import FeatureType, MonitorConfig
    from monitor.core.reference import PREDICTION
    from monitor.monitoring.drift import count_detectors, detector_run_length

    ftype = FeatureType.numeric if kind == "numeric" else FeatureType.categorical
    types = {f"x{k}": ftype for k in range(features)} | {PREDICTION: FeatureType.numeric}
    config = MonitorConfig.model_validate(base)
    model = config.model("m0")
    n_detectors = count_detectors(model, types)
    names = model.detectors.numeric if kind == "numeric" else model.detectors.categorical
    per_feature = len(names)
    n_feature = per_feature * features
    warmup = config.reference.warmup_events
    per_model = [len(range(m, events, models)) for m in range(models)]
    monitored = sum(max(n - warmup, 0) for n in per_model)
    # expected = n_feature * monitored / R, R = run_length / (1 - share) * n_detectors
    run_length = n_feature * monitored / expected * (1.0 - config.evaluation.budget_share) / n_detectors
    per_day = config.alerting.events_per_model_per_day
    rate = float(f"{per_day / run_length:.4g}")  # false_alarms_per_model_per_day, 4 digits
    declared_cfg = json.loads(json.dumps(base))
    declared_cfg.setdefault("alerting", {})["false_alarms_per_model_per_day"] = rate
    config = MonitorConfig.model_validate(declared_cfg)
    r_detector = detector_run_length(config, n_detectors)
    return {
        "config": declared_cfg,
        "false_alarms_per_model_per_day": rate,
        "run_length_events": config.alerting.run_length_events,
        "detectors": n_detectors,
        "feature_detectors": n_feature,
        "feature_detector_names": list(names),
        "prediction_detectors": len(model.detectors.prediction),
        "detector_run_length": r_detector,
        "monitored": monitored,
        "declared_feature": n_feature * monitored / r_detector,
        "declared_drift": n_detectors * monitored / r_detector,
    }


# --- streams -----------------------------------------------------------------------------------


class Stream:
    """Chunks of JSON lines: `models` models x `features` features, one event per model per round."""

    def __init__(self, family: str, models: int, features: int, events: int, seed: int):
        self.family, self.models, self.features, self.events = family, models, features, events
        self.rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
        self.names = [f"x{k}" for k in range(features)]
        self.model_ids = [f"control-{family}-{m:02d}" for m in range(models)]
        self.state = self.rng.standard_normal((models, features))  # AR(1): stationary start
        if family == "cat":
            self.tables = []
            for _ in range(features):
                k = int(self.rng.integers(3, 13))
                p = 0.8 * self.rng.dirichlet(np.full(k, 2.0)) + 0.2 / k  # every category >= 1.7 %
                self.tables.append((np.cumsum(p / p.sum()), np.array([f"c{j}" for j in range(k)], dtype=object)))

    def _values(self, rows: int) -> list:
        shape = (rows, self.models, self.features)
        if self.family == "gauss":
            x = self.rng.standard_normal(shape)
        elif self.family == "t3":
            x = self.rng.standard_t(3, shape)
        elif self.family == "ar1":
            e = self.rng.standard_normal(shape) * np.sqrt(1 - PHI**2)
            x = np.empty(shape)
            prev = self.state
            for t in range(rows):  # each model's series runs along its own events
                prev = x[t] = PHI * prev + e[t]
            self.state = prev
        else:
            cols = []
            for cum, labels in self.tables:
                codes = np.searchsorted(cum, self.rng.random((rows, self.models)), side="right")
                cols.append(labels[np.minimum(codes, len(labels) - 1)])
            return np.stack(cols, axis=-1).reshape(rows * self.models, self.features).tolist()
        return np.round(x, 5).reshape(rows * self.models, self.features).tolist()

    def chunks(self):
        done = 0
        while done < self.events:
            rows = min(CHUNK_ROWS, -(-(self.events - done) // self.models))
            values = self._values(rows)
            scores = np.round(self.rng.random(rows * self.models), 4).tolist()
            n = min(rows * self.models, self.events - done)
            index = np.arange(done, done + n)
            stamps = np.datetime_as_string(T0 + index * STEP_MS, unit="ms").tolist()
            names, ids, m = self.names, self.model_ids, self.models
            out = bytearray()  # appended one by one: orjson's bytes keep ~8 KB each while they live
            for i, stamp, row, score in zip(range(done, done + n), stamps, values, scores, strict=False):
                event = {
                    "model_id": ids[i % m],
                    "prediction_id": f"p{i}",
                    "timestamp": stamp + "Z",
                    "features": dict(zip(names, row, strict=True)),
                    "prediction": score,
                }
                out += orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
            done += n
            yield bytes(out)


# --- one run -----------------------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_family(family: str, a: argparse.Namespace, base: dict, source: Path, folder: Path) -> dict:
    title, kind, goal = FAMILIES[family]
    budget = product_budget(base, kind, a.features, a.models, a.events, a.expected)
    config_path = folder / f"long-controls-{family}.yaml"
    config_path.write_text(yaml.safe_dump(budget["config"], sort_keys=False))
    alerts = folder / f"alerts-{family}.jsonl"
    stderr = folder / f"replay-{family}.stderr"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source)
    argv = [str(PYTHON), "-m", "monitor.cli", "replay", "--config", str(config_path)]
    argv += ["--input", "/dev/stdin", "--alerts-out", str(alerts)]
    print(
        f"{family}: {a.events:,} events, budget 1 per {budget['run_length_events']:,.0f} events per model, "
        f"declared {budget['declared_feature']:.1f} feature-drift false alarms",
        file=sys.stderr,
        flush=True,
    )
    cpu0, gen0, t0 = children_cpu(), self_cpu(), time.time()
    with stderr.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=source, env=env, stdin=subprocess.PIPE, stdout=err, stderr=err)
        assert proc.stdin is not None
        try:
            for chunk in Stream(family, a.models, a.features, a.events, a.seed).chunks():
                proc.stdin.write(chunk)
        finally:
            proc.stdin.close()
        gen_cpu = self_cpu() - gen0
        if proc.wait() != 0:
            sys.exit(f"replay failed ({family}): {stderr.read_text()[-2000:]}")
    wall, cpu = time.time() - t0, children_cpu() - cpu0
    counts, records, by_detector = count_alerts(alerts)
    print(f"{family}: {stderr.read_text().strip()}", file=sys.stderr, flush=True)
    if not a.keep:
        alerts.unlink()
    measured = counts.get("feature_drift", 0)
    low, high = poisson_interval(measured)
    ratio = measured / budget["declared_feature"]
    return {
        "family": family,
        "seed": a.seed,
        "title": title,
        "kind": kind,
        "events": a.events,
        "models": a.models,
        "features": a.features,
        **{k: v for k, v in budget.items() if k != "config"},
        "measured": measured,
        "interval": (low, high),
        "ratio": ratio,
        "goal": goal,
        "passed": 1 / goal <= ratio <= goal,
        "counts": counts,
        "by_detector": by_detector,
        "records": records,
        "cpu": cpu,
        "generator_cpu": gen_cpu,
        "wall": wall,
    }


def count_alerts(path: Path) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(distinct firing alerts per kind, records per kind/status, firing feature-drift alerts per
    detector that raised them) of one replay's alert file."""
    firing: dict[str, set[str]] = {}
    records: Counter[str] = Counter()
    by_detector: Counter[str] = Counter()
    for line in path.open("rb"):
        record = orjson.loads(line)
        records[f"{record['kind']}/{record['status']}"] += 1
        if record["status"] == "firing":
            ids = firing.setdefault(record["kind"], set())
            if record["kind"] == "feature_drift" and record["alert_id"] not in ids:
                by_detector[record["evidence"]["detector"]] += 1
            ids.add(record["alert_id"])
    return {kind: len(ids) for kind, ids in firing.items()}, dict(records), dict(by_detector)


def poisson_interval(count: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson mean from one count."""
    alpha = 1 - level
    low = 0.0 if count == 0 else chi2.ppf(alpha / 2, 2 * count) / 2
    return low, chi2.ppf(1 - alpha / 2, 2 * count + 2) / 2


# --- report ------------------------------------------------------------------------------------


def pooled(rows: list[dict]) -> list[dict]:
    """The rows, and after the runs of a family with several seeds, their sum (judged the same way)."""
    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        runs = [r for r in rows if r["family"] == family]
        out += runs
        if len(runs) < 2:
            continue
        total = dict(runs[0], seed="all")
        for key in ("events", "monitored", "declared_feature", "declared_drift", "measured", "cpu", "generator_cpu"):
            total[key] = sum(r[key] for r in runs)
        for key in ("counts", "by_detector"):
            merged: Counter[str] = Counter()
            for r in runs:
                merged.update(r.get(key) or {})
            total[key] = dict(merged)
        total["interval"] = poisson_interval(total["measured"])
        total["ratio"] = total["measured"] / total["declared_feature"]
        total["passed"] = 1 / total["goal"] <= total["ratio"] <= total["goal"]
        out.append(total)
    return out


def report(rows: list[dict], runs: list[dict]) -> str:
    """The table; `runs`: each run's product, command and time, for the footnote."""
    lines = [
        "| family | seed | declared budget (1 false alarm per model per N events) | detectors per model (feature) "
        "| run length per detector | declared FA | measured FA (95 % Poisson) | measured / declared | goal "
        "| raised by (declared each) | other drift alerts fired (declared) | events | features | replay CPU-s "
        "| events per CPU-s |",
        "|---" * 15 + "|",
    ]
    for r in pooled(rows):
        low, high = r["interval"]
        others = other_alerts(r)
        verdict = "pass" if r["passed"] else "**fail**"
        goal = f"±{(r['goal'] - 1) * 100:.0f} %" if r["goal"] < 2 else f"within {r['goal']:g}x"
        lines.append(
            f"| {r['title']} | {r.get('seed', '–')} | {r['run_length_events']:,.0f} "
            f"| {r['detectors']} ({r['feature_detectors']}) "
            f"| {r['detector_run_length']:,.0f} | {r['declared_feature']:.1f} "
            f"| **{r['measured']}** ({low:.0f}–{high:.0f}) | {r['ratio']:.2f} | {goal}: {verdict} "
            f"| {raised(r)} | {others} "
            f"| {r['events']:,} | {r['models']} x {r['features']} | {r['cpu']:,.0f} "
            f"| {r['events'] / r['cpu']:,.0f} |"
        )
    gen = sum(r["generator_cpu"] for r in rows)
    features = rows[0]["features"] if rows else 0
    lines += [
        "",
        "; ".join(f"Product: {run['source']}, `bench/long_controls.py {run['command']}`, {run['when']}" for run in runs)
        + f". Every event is one model's prediction with {features} features and a stationary "
        "score; models interleaved round robin. Counted: distinct firing `feature_drift` alerts (no "
        "repeats, no resolutions). Declared FA = feature detectors per "
        "model x events after the warm-up / run length per detector (`detector_run_length`). "
        f"Generator CPU (not in the replay's): {gen:,.0f} s in all.",
    ]
    return "\n".join(lines)


def raised(row: dict) -> str:
    """`cusum 48, ks 29 (50.0 each)`: firing feature-drift alerts by the detector that raised them,
    and what each of the feature detectors declares (an alert raised by two is counted once)."""
    by = row.get("by_detector")
    if by is None:
        return "–"
    names = row.get("feature_detector_names") or sorted(by)
    per = row["declared_feature"] / (row["feature_detectors"] / row["features"])
    return ", ".join(f"{k} {by.get(k, 0)}" for k in names) + f" ({per:.1f} each)"


def other_alerts(row: dict) -> str:
    """The other drift alerts fired (declared in brackets), and any other kind."""
    per_detector = row["monitored"] / row["detector_run_length"]
    n_prediction = row.get("prediction_detectors", 2)
    declared = {
        "prediction_drift": n_prediction * per_detector,
        "multivariate_drift": (row["detectors"] - row["feature_detectors"] - n_prediction) * per_detector,
    }
    counts = row["counts"]
    parts = [f"{k} {counts.get(k, 0)} ({v:.1f})" for k, v in declared.items() if v or counts.get(k)]
    parts += [f"{k} {v}" for k, v in sorted(counts.items()) if k not in declared and k != "feature_drift"]
    return ", ".join(parts) or "none"


def export(rev: str, folder: Path) -> str:
    tree = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=tree, check=True)
    return subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000, help="events per family (all models together)")
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--expected", type=float, default=100.0, help="declared feature-drift false alarms per family")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--config", type=Path, default=CONFIG, help="base configuration; only the budget changes")
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--worktree", action="store_true", help="measure the working tree instead of --commit")
    ap.add_argument("--keep", action="store_true", help="keep the alert files (printed folder)")
    ap.add_argument("--save", action="store_true", help="write bench/results/long-controls-2026-12-06.md")
    ap.add_argument("--rows-out", type=Path, help="also write the measured rows as JSON")
    ap.add_argument(
        "--rows-in", type=Path, nargs="+", help="print the table of earlier runs' --rows-out (summed per family)"
    )
    a = ap.parse_args(argv)
    if a.rows_in:
        saved = [json.loads(path.read_text()) for path in a.rows_in]
        finish([r for run in saved for r in run["rows"]], saved, a)
        return

    base = yaml.safe_load(a.config.read_text()) or {}
    families = [f.strip() for f in a.families.split(",") if f.strip()]
    with tempfile.TemporaryDirectory(prefix="long-controls-") as tmp:
        folder = Path(tmp)
        if a.worktree:
            source_dir, source = ROOT, "the working tree at " + export_head_name()
        else:
            source_dir = folder / "src"
            source_dir.mkdir()
            source = "commit " + export(a.commit, source_dir)
        sys.path.insert(0, str(source_dir))  # the budget arithmetic of the code measured
        if a.keep:
            folder = Path(tempfile.mkdtemp(prefix="long-controls-alerts-"))
            print(f"alerts kept in {folder}", file=sys.stderr)
        rows = []
        for family in families:
            rows.append(run_family(family, a, base, source_dir, folder))
            if a.rows_out:  # after each family, so a long run that stops keeps what it measured
                command = " ".join(sys.argv[1:])
                when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
                saved = {"rows": rows, "source": source, "command": command, "when": when}
                a.rows_out.write_text(json.dumps(saved, indent=1))
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    finish(rows, [{"source": source, "command": " ".join(sys.argv[1:]), "when": when}], a)


def finish(rows: list[dict], runs: list[dict], a: argparse.Namespace) -> None:
    text = report(rows, runs)
    print(text)
    if a.save:
        path = RESULTS / "long-controls-2026-12-06.md"
        path.write_text("# Long control runs: the declared budget through `driftline replay`\n\n" + text + "\n")
        print(f"saved {path}", file=sys.stderr)


def export_head_name() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    return head.stdout.strip() + " (with uncommitted changes, if any)"


if __name__ == "__main__":
    main()
