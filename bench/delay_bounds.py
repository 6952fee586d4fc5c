"""The fastest detection drift-bench's streams allow at a declared budget: an oracle per family.

Issue 18 asks for mean delays (numeric 600, categorical 350, error rate 1,200) at a declared
false-alarm budget. This prints what a detector that *knows the change* would need on the same
streams, so a goal below it is out of reach for any detector, ours or a peer's.

The oracle, per stream: Page's CUSUM of the exact log-likelihood ratio of the post-change law
against the pre-change law, both known (for a gradual drift, the mixing share at every event too;
a category the reference never shows alarms at its first occurrence), started at the change. Its
threshold h gives the run length asked under no change, calibrated like the product's (2,000,000
simulated values of the pre-change law, the excursions above the 500th highest extrapolated with
the exact exponent 1 of a likelihood ratio, Cramer-Lundberg); a gradual drift's oracle gets the
threshold of its final law. It needs no reference, so it carries none of the reference's
estimation error that every real detector pays; and it is told the size and shape of the change,
which no real detector is. (Lorden's h = ln(run length) would be 3-4 nats too high.)

The run length it gets is the *whole* half of the model's budget that the product gives its drift
detectors (numeric and categorical) or its evaluation checks (error rate): with a declared budget
of one false alarm per model per N events, 2N, where the product splits that among its detectors
(`monitor.monitoring.drift.detector_run_length`, `evaluation.budget_share`).

    .venv/bin/python bench/delay_bounds.py [--drift-bench ../shared/drift-bench] [--budgets 10000,100000,500000,1000000]

Prints one markdown table: per family and budget, the oracle's mean and median delay (events from
the change, counted as drift-bench's `metrics.py` does) and misses, beside issue 18's goal for the mean delay.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.detectors.calibration import excursion_maxima  # noqa: E402

GOALS = {"numeric": 600, "categorical": 350, "error": 1200}
"""Issue 18's mean-delay goals per family."""
HORIZON = 10_000
"""drift-bench counts a change missed when nothing fires within this many events of it."""


NULL_VALUES = 2_000_000
"""Values of the pre-change law simulated to set each oracle's threshold."""
TAIL = 500
"""Excursions read off the simulation; beyond the 500th highest, the exact exponential tail."""


def log_likelihood_ratios(stream, p0_categories: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    """log p1(x_t) / p0(x_t) for every event of the stream from the change on (+inf where
    p0(x_t) = 0); with `x`, for those values under the final post-change law (no mixing)."""
    cp, meta, family = stream.change_point, stream.meta, stream.family
    mixing = x is None and "width" in meta
    x = stream.values[cp:] if x is None else x
    share = np.clip(np.arange(len(x)) / meta["width"], 0.0, 1.0) if mixing else np.ones(len(x))
    if family in ("num_mean_abrupt", "num_mean_gradual"):
        d = meta["shift_std"]
        return np.log1p(share * np.expm1(d * x - d * d / 2))  # mixture of N(d, 1) with share
    if family == "num_var_abrupt":
        k = meta["std_ratio"]
        return -math.log(k) + x * x / 2 * (1 - 1 / k**2)
    if family in ("cat_freq", "cat_new"):
        p1 = (
            np.asarray(meta["p_after"])
            if family == "cat_freq"
            else np.append((1 - meta["new_category_p"]) * p0_categories[:-1], meta["new_category_p"])
        )
        codes = x.astype(int)
        with np.errstate(divide="ignore"):
            return np.log(p1[codes]) - np.log(p0_categories[codes])
    if family in ("err_abrupt", "err_gradual"):
        before, after = meta["p_before"], meta["p_after"]
        p = before + (after - before) * share
        return np.where(x > 0.5, np.log(p / before), np.log((1 - p) / (1 - before)))
    raise ValueError(f"no oracle for family {family}")


def null_draws(stream, p0_categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`NULL_VALUES` draws of the stream's pre-change law."""
    if stream.category == "numeric":
        return rng.standard_normal(NULL_VALUES)
    if stream.category == "categorical":
        return rng.choice(len(p0_categories), size=NULL_VALUES, p=p0_categories).astype(float)
    return (rng.random(NULL_VALUES) < stream.meta["p_before"]).astype(float)


def tail_level(null_llr: np.ndarray) -> tuple[float, float]:
    """The height of the `TAIL`-th highest excursion of Page's CUSUM of `null_llr` (pre-change
    draws), and the share of values such excursions start at. Beyond it P(height > h) decays as
    exp(-h): the root of E exp(theta * LLR) = 1 under the pre-change law is exactly 1. So the
    threshold for one alarm per L values is level + ln(share * L) (`threshold`)."""
    if null_llr.max() <= 0:
        return -math.inf, 1.0  # the CUSUM never leaves 0 before the change: the first sign of it decides
    heights, _ = excursion_maxima(null_llr.reshape(1000, -1))
    k = min(TAIL, len(heights) - 1)
    return float(-np.partition(-heights, k)[k]), k / len(null_llr)


def threshold(level: tuple[float, float], run_length: float) -> float:
    """h at which the oracle alarms once per `run_length` values before the change (`tail_level`)."""
    height, share = level
    return max(1e-9, height + math.log(share * run_length))


def oracle_delay(llr: np.ndarray, h: float) -> int | None:
    """First t at which Page's CUSUM of `llr` reaches h (None: not within `HORIZON`)."""
    s = 0.0
    for t, value in enumerate(llr[:HORIZON]):
        s = max(0.0, s + value)
        if s >= h:
            return t
    return None


def oracle_delays(drift_bench_streams, streams, budgets: list[int]) -> dict[int, dict[str, int | None]]:
    """Per declared budget (one false alarm per model per N events), per drift stream's name, the
    oracle's delay (None: missed). `drift_bench_streams` is drift-bench's `streams` module."""
    p0_categories = np.append(drift_bench_streams.CAT_P0, 0.0)
    drifts = [s for s in streams if s.change_point is not None and s.category in GOALS]
    rng = np.random.default_rng(0)
    levels = {
        s.name: tail_level(log_likelihood_ratios(s, p0_categories, null_draws(s, p0_categories, rng))) for s in drifts
    }
    llrs = {s.name: log_likelihood_ratios(s, p0_categories) for s in drifts}
    return {
        events: {s.name: oracle_delay(llrs[s.name], threshold(levels[s.name], 2 * events)) for s in drifts}
        for events in budgets
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drift-bench", type=Path, default=ROOT.parent / "shared" / "drift-bench")
    ap.add_argument("--budgets", default="10000,100000,500000,1000000", help="events per false alarm per model")
    args = ap.parse_args()
    sys.path.insert(0, str(args.drift_bench))
    import streams as drift_bench_streams  # drift-bench's own generator: the same seeded streams

    streams = drift_bench_streams.build_base()
    budgets = [int(b) for b in args.budgets.split(",")]
    delays = oracle_delays(drift_bench_streams, streams, budgets)
    print("| family | budget: 1 per model per | oracle run length | mean delay | median delay | missed | goal |")
    print("|---|---|---|---|---|---|---|")
    for family in GOALS:
        members = [s.name for s in streams if s.category == family and s.change_point is not None]
        for events in budgets:
            found = [delays[events][name] for name in members if delays[events][name] is not None]
            print(
                f"| {family} | 1/{events:,} | {2 * events:,} | {statistics.mean(found):,.0f} | "
                f"{statistics.median(found):,.0f} | {len(members) - len(found)}/{len(members)} | {GOALS[family]:,} |"
            )


if __name__ == "__main__":
    main()
