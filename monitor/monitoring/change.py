"""What changed in a feature's window against its reference, in the feature's own units.

A detector says *that* a distribution moved; the person paged needs *how* and *by how much*:
which way the mean or median went and how far (in the feature's units and in reference standard
deviations), how much the spread changed, the Wasserstein distance between the two distributions,
and for a categorical feature the categories whose shares moved most and the population
stability index. Everything is read off the window's and the reference's bounded summaries
(`feature_stats`), whichever detector raised the alert.

>>> import numpy as np
>>> from monitor.core.feature_stats import NumericStats
>>> reference, current = NumericStats(), NumericStats()  # 150 values each: the sketches are exact
>>> reference.update(np.random.default_rng(0).normal(100, 10, 150))
>>> current.update(np.random.default_rng(1).normal(115, 10, 150))
>>> change = numeric_change(reference, current)
>>> change["direction"], round(change["standardised_mean_difference"], 1), round(change["wasserstein"])
('up', 1.4, 14)
>>> describe(change, "feature 'amount'")
"feature 'amount' moved up: mean 101 -> 114 (+13.6, +1.4 sd), median 101 -> 115, spread x0.915"
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from monitor.core.feature_stats import CategoryStats, NumericStats

QUANTILE_GRID = np.linspace(0.01, 0.99, 99)
"""Ranks at which the two quantile functions are compared for the Wasserstein distance."""

PSI_FLOOR = 1e-4
"""Share given to a category absent on one side, so the PSI stays finite."""

SHIFTED_SD = 0.1
"""A mean moved by less than this many reference standard deviations reads as unmoved, and a
spread within this factor of the reference's as unchanged."""


def mean_moved(standardised_difference: float) -> bool:
    """Whether a mean moved by `SHIFTED_SD` reference standard deviations or more."""
    return math.isfinite(standardised_difference) and abs(standardised_difference) >= SHIFTED_SD


def spread_moved(ratio: float) -> bool:
    """Whether a spread (or a distance) moved by the factor `1 + SHIFTED_SD` or more, either way."""
    return math.isfinite(ratio) and ratio > 0 and abs(math.log(ratio)) >= math.log1p(SHIFTED_SD)


def _g(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "n/a"


def numeric_change(reference: NumericStats, current: NumericStats) -> dict[str, Any]:
    """Direction, size and effect sizes of the move from `reference` to `current`."""
    ref_q = np.asarray(reference.quantiles(QUANTILE_GRID))
    cur_q = np.asarray(current.quantiles(QUANTILE_GRID))
    ref_sd = reference.std
    difference = current.mean - reference.mean
    smd = difference / ref_sd if ref_sd > 0 else math.nan
    spread = current.std / ref_sd if ref_sd > 0 else math.nan
    # The mean moved when it is past SHIFTED_SD and past twice its standard error; the larger of
    # the two moves (mean in sd, spread as a log ratio) names the change.
    shifted = math.isfinite(smd) and abs(smd) >= max(SHIFTED_SD, 2 / math.sqrt(max(current.values_count, 1)))
    spread_size = abs(math.log(spread)) if math.isfinite(spread) and spread > 0 else 0.0
    if shifted and abs(smd) >= spread_size:
        direction = "up" if smd > 0 else "down"
    elif spread_size >= math.log1p(SHIFTED_SD):
        direction = "wider" if spread > 1 else "narrower"
    elif shifted:
        direction = "up" if smd > 0 else "down"
    else:
        direction = "shape"
    return {
        "direction": direction,
        "reference_mean": reference.mean,
        "current_mean": current.mean,
        "mean_difference": difference,
        "standardised_mean_difference": smd,
        "reference_median": float(ref_q[49]),
        "current_median": float(cur_q[49]),
        "spread_ratio": spread,
        "wasserstein": float(np.mean(np.abs(cur_q - ref_q))),
    }


def categorical_change(reference: CategoryStats, current: CategoryStats, top: int = 3) -> dict[str, Any]:
    """The categories whose shares moved most (null included), total variation and PSI."""

    def shares(stats: CategoryStats) -> dict[str, float]:
        total = max(stats.count, 1)
        found = {name: n / total for name, n in stats.frequencies.items()}
        if stats.nulls:
            found["(null)"] = stats.nulls / total
        if stats.overflow_count:
            found["(other)"] = stats.overflow_count / total
        return found

    before, after = shares(reference), shares(current)
    names = sorted(before.keys() | after.keys())
    moves = [(name, before.get(name, 0.0), after.get(name, 0.0)) for name in names]
    moves.sort(key=lambda move: -abs(move[2] - move[1]))
    psi = sum(
        (max(a, PSI_FLOOR) - max(b, PSI_FLOOR)) * math.log(max(a, PSI_FLOOR) / max(b, PSI_FLOOR)) for _, b, a in moves
    )
    return {
        "direction": "shares",
        "moved": [[name, round(b, 6), round(a, 6)] for name, b, a in moves[:top]],
        "total_variation": 0.5 * sum(abs(a - b) for _, b, a in moves),
        "psi": psi,
    }


def describe(change: dict[str, Any], subject: str) -> str:
    """One sentence an on-call engineer would write about `change` of `subject`."""
    if change["direction"] == "shares":
        moved = ", ".join(
            f"{name!r} {b:.0%} -> {a:.0%}" + (" (new)" if b == 0 else "") for name, b, a in change["moved"]
        )
        effect = f"total variation {_g(change['total_variation'])}, PSI {_g(change['psi'])}"
        return f"{subject} changed its mix: {moved} ({effect})"
    smd = change["standardised_mean_difference"]
    verb = {"up": "moved up", "down": "moved down", "wider": "spread out", "narrower": "narrowed"}.get(
        change["direction"], "changed shape"
    )
    return (
        f"{subject} {verb}: mean {_g(change['reference_mean'])} -> {_g(change['current_mean'])} "
        f"({change['mean_difference']:+.3g}, {smd:+.2g} sd), median {_g(change['reference_median'])} -> "
        f"{_g(change['current_median'])}, spread x{_g(change['spread_ratio'])}"
    )


def tripped_component(details: dict[str, Any]) -> tuple[str, float, float] | None:
    """(component, value, limit) of a multi-component detector's evidence (`<name>.value` and
    `<name>.limit` pairs) closest to or past its limit; None for a single statistic."""
    components = [key[: -len(".value")] for key in details if key.endswith(".value")]
    best = None
    for name in components:
        value, limit = details.get(f"{name}.value"), details.get(f"{name}.limit")
        if isinstance(value, int | float) and isinstance(limit, int | float) and limit > 0:
            if best is None or value / limit > best[1] / best[2]:
                best = (name, float(value), float(limit))
    return best
