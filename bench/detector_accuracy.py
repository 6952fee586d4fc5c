"""Accuracy of Driftline's detectors on drift-bench's streams, scored like drift-bench.

Runs our detectors in memory (no Kafka, no replay CLI) over the same seeded streams as the
peers, with the reference the product uses (the first 5,000 values of each stream), and prints
per family: false alarms per 10,000 stationary events, mean delay, missed detections, scored by
drift-bench's own `metrics.py`. One row per detector alone and one for the product's default
combination (an alarm of any of them), so defaults can be tuned against the peers' numbers
(`python run.py --peers river,windowed --no-throughput` in a copy of drift-bench).

    .venv/bin/python bench/detector_accuracy.py [--drift-bench ../shared/drift-bench] [--streams 'num_*']
        [--config bench/drift-bench.yaml] [--run-length-events N]

Calibrated as the product is, with the product's own functions on the configured model
(`--config`, by default the bench's `bench/drift-bench.yaml`): a drift-bench model has the drifting
feature (or the error stream) plus the model's prediction, so a numeric stream's model has
`count_detectors` = 4 drift detectors (x: cusum, ks; prediction: cusum, ks) and a categorical
one 5 (x: 3, prediction: 2); each is calibrated to `detector_run_length(config, detectors)` =
run_length_events / (1 - evaluation.budget_share) x detectors (`monitor.monitoring.drift`), and
the error stream's detector to the evaluator's `error_run_length` (`ModelEvaluator`). The detectors,
their parameters, the window and the reference size are the configuration's; each detector's
seed is the product's (`detector_seed(feature, detector)`; 0 for the error stream). An extra detector
gets the run length of the defaults, as if it were one of them. `--run-length-events N` declares
the budget as one false alarm per model per N events (as bench/operating_curve.py does).
Window tests decide on tumbling windows after the reference, as the windowed peers do.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import monitor.detectors  # noqa: E402,F401
from monitor.contracts.config import FeatureType, MonitorConfig  # noqa: E402
from monitor.core.reference import PREDICTION  # noqa: E402
from monitor.detectors.base import SequentialDetector  # noqa: E402
from monitor.detectors.registry import create  # noqa: E402
from monitor.evaluation.evaluator import ModelEvaluator  # noqa: E402
from monitor.monitoring.drift import count_detectors, detector_run_length, detector_seed  # noqa: E402

CONFIG = ROOT / "bench" / "drift-bench.yaml"
FEATURE = {"numeric": "x_num", "categorical": "x_cat"}
"""The drifting feature's name in drift-bench's events (`streams.emit_jsonl`)."""
EXTRA = {"numeric": ["psi", "wasserstein", "adwin", "page_hinkley"], "categorical": ["jensen_shannon"], "error": []}
FAMILIES = {
    "numeric": ["num_mean_abrupt", "num_var_abrupt", "num_mean_gradual", "num_nodrift_gauss"],
    "categorical": ["cat_freq", "cat_new", "cat_nodrift"],
    "error": ["err_abrupt", "err_gradual", "err_nodrift"],
    "stress": ["num_nodrift_t3", "num_nodrift_ar1"],
}


def load_bench(path: Path):
    sys.path.insert(0, str(path))
    import metrics
    import streams

    parts = streams.cached_parts() if streams.CACHE.exists() else []
    return streams, metrics, (streams.load() if parts else streams.build_base())


def load_config(path: Path, run_length_events: float | None) -> MonitorConfig:
    """The configuration, with the budget declared as one false alarm per model per
    `run_length_events` events when given (nothing else changes)."""
    raw = yaml.safe_load(path.read_text()) or {}
    if run_length_events:
        alerting = raw.setdefault("alerting", {})
        per_day = float(alerting.get("events_per_model_per_day", 1_000_000))
        alerting["false_alarms_per_model_per_day"] = per_day / run_length_events
    return MonitorConfig.model_validate(raw)


def product_plan(config: MonitorConfig, category: str) -> tuple[list[str], float, int]:
    """(the product's detectors, the run length it calibrates each to, the number of drift
    detectors on the model) for a drift-bench model of this stream category."""
    model_id = f"bench-{category}"
    model = config.model(model_id)
    detectors = model.detectors
    assert detectors is not None
    if category == "error":
        return ["bernoulli_cusum"], ModelEvaluator(model_id, config).error_run_length, 0
    kind = FeatureType.numeric if category == "numeric" else FeatureType.categorical
    n_detectors = count_detectors(model, {FEATURE[category]: kind, PREDICTION: FeatureType.numeric})
    names = detectors.numeric if category == "numeric" else detectors.categorical
    return list(names), detector_run_length(config, n_detectors), n_detectors


def alarms_of(
    name: str, stream, run_length: float, window: int, ref_size: int, seed: int, params: dict | None = None
) -> tuple[list[int], float]:
    """Alarm indices (stream positions) of one detector, and its fit time in seconds."""
    det = create(name, **(params or {}))
    reference = stream.values[:ref_size]
    context = {"n_categories": len(stream.categories)} if stream.categories else {}
    t0 = time.perf_counter()
    det.fit(reference, run_length=run_length, window_size=window, seed=seed, **context)
    fit_s = time.perf_counter() - t0
    rest = stream.values[ref_size:]
    if isinstance(det, SequentialDetector):
        return [ref_size + a for a in det.update_many(rest)], fit_s
    out = []
    for start in range(0, len(rest) - window + 1, window):
        if det.test(rest[start : start + window]).drifted:
            out.append(ref_size + start + window - 1)
    return out, fit_s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drift-bench", default=str(ROOT / ".." / "shared" / "drift-bench"))
    ap.add_argument("--streams", nargs="*", help="fnmatch patterns on stream names")
    ap.add_argument("--config", type=Path, default=CONFIG, help="the product's configuration")
    ap.add_argument(
        "--run-length-events", type=float, help="declare the budget as 1 false alarm per model per N events"
    )
    ap.add_argument("--detectors", nargs="*", help="only these detectors (default: defaults and extras)")
    ap.add_argument("--no-extras", action="store_true", help="only the product's default detectors")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="constructor parameters, e.g. cusum='{\"mean_shifts\": [0.5]}'",
    )
    a = ap.parse_args(argv)

    config = load_config(a.config, a.run_length_events)
    params = dict(config.detectors.params) | {k: json.loads(v) for k, v in (p.split("=", 1) for p in a.param)}
    streams_mod, metrics, streams = load_bench(Path(a.drift_bench).resolve())
    ref_size = min(config.reference.warmup_events, streams_mod.REF_SIZE)
    window = config.window.size_events or config.window.min_events
    plans = {cat: product_plan(config, cat) for cat in ("numeric", "categorical", "error")}
    if a.streams:
        streams = [s for s in streams if any(fnmatch.fnmatch(s.name, p) for p in a.streams)]

    # results[(category, row)][family] -> list of Score
    results: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    fit_times: dict[str, list[float]] = defaultdict(list)
    run_lengths = {}
    for st in streams:
        cat = st.category
        defaults, run_length, _ = plans[cat]
        names = list(defaults) + ([] if a.no_extras else [n for n in EXTRA[cat] if n not in defaults])
        if a.detectors:
            names = [n for n in names if n in a.detectors]
        run_lengths[cat] = run_length
        combined: list[int] = []
        for name in names:
            seed = 0 if cat == "error" else detector_seed(FEATURE[cat], name)
            alarms, fit_s = alarms_of(name, st, run_length, window, ref_size, seed, params.get(name))
            fit_times[name].append(fit_s)
            sc = metrics.score(alarms, st.n, st.change_point, ref_size)
            results[(cat, name)][st.family].append(sc)
            results[(cat, name)]["@" + st.magnitude].append(sc)
            if name in defaults:
                combined += alarms
        if not a.detectors:
            label = "driftline (" + " | ".join(defaults) + ")"
            sc = metrics.score(sorted(combined), st.n, st.change_point, ref_size)
            results[(cat, label)][st.family].append(sc)
            results[(cat, label)]["@" + st.magnitude].append(sc)

    def summary(scores):
        fa = sum(s.false_alarms for s in scores)
        events = sum(s.stationary_events for s in scores)
        drift = [s for s in scores if s.missed is not None]
        delays = [s.delay for s in drift if not s.missed]
        missed = sum(1 for s in drift if s.missed)
        return fa, events, delays, missed, len(drift)

    for cat, fams in FAMILIES.items():
        key_cat = "numeric" if cat == "stress" else cat
        rows = [(k, v) for k, v in results.items() if k[0] == key_cat]
        if not rows:
            continue
        n_det = plans[key_cat][2]
        on_model = f", {n_det} drift detectors on the model" if n_det else " (the evaluator's error_run_length)"
        print(f"\n## {cat} (run_length per detector {run_lengths.get(key_cat, 0):,.0f}{on_model})\n")
        mags = [] if cat == "stress" else ["small", "medium", "large"]
        print(
            "| detector | FA/10k | missed | mean delay | median delay | "
            + "".join(f"delay {m} | " for m in mags)
            + " | ".join(fams)
            + " |"
        )
        print("|---" * (5 + len(mags) + len(fams)) + "|")
        for (_, row), per_family in sorted(rows, key=lambda kv: kv[0][1]):
            scores = [s for f in fams for s in per_family.get(f, [])]
            if not scores:
                continue
            fa, events, delays, missed, n_drift = summary(scores)
            cells = []
            for f in fams:
                ffa, fev, fdel, fmiss, fn = summary(per_family.get(f, []))
                fa_text = f"FA/10k {1e4 * ffa / fev:.2f}" if fev else ""
                if fn:
                    mean = f"{statistics.mean(fdel):,.0f}" if fdel else "–"
                    cells.append(f"{mean} ({fn - fmiss}/{fn}), {fa_text}")
                else:
                    cells.append(fa_text)
            for m in reversed(mags):
                _, _, mdel, mmiss, mn = summary([x for x in per_family.get("@" + m, []) if x in scores])
                cells.insert(0, (f"{statistics.mean(mdel):,.0f}" if mdel else "–") + f" ({mn - mmiss}/{mn})")
            mean = f"{statistics.mean(delays):,.0f}" if delays else "–"
            median = f"{statistics.median(delays):,.0f}" if delays else "–"
            fa_rate = 1e4 * fa / events if events else 0.0
            print(f"| {row} | {fa_rate:.2f} | {missed}/{n_drift} | {mean} | {median} | " + " | ".join(cells) + " |")
    print(
        "\nfit time per detector and feature (5,000-value reference), ms: "
        + ", ".join(f"{n} {1e3 * np.median(t):.0f}" for n, t in sorted(fit_times.items()))
    )


if __name__ == "__main__":
    main()
