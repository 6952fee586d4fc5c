"""Category CUSUM: a shift in the frequencies of a categorical feature, found within a few hundred
values, including values never seen in the reference.

One Bernoulli CUSUM per frequent category on "the value is this category" (as in
`bernoulli_cusum`, with the reference share as baseline and its odds times `odds_ratio` as the
alternative), one for a fall of each category holding at least 2% of the reference (odds divided
by `odds_ratio`), and one for the group of rare values: categories seen fewer than 30 times in
the reference, and the last code, which stands for every value the reference never showed. Any
frequency change raises some category's share, so the up components alone see every shift; the
down ones make a fall of a large category (40% -> 30%) show sooner.

The rare group's baseline is the Good-Turing estimate of the unseen mass (values seen once in the
reference, per reference value; half a value if none), plus the rare categories' own counts; its
alternative is at least `unseen_rate` more. The reference cannot show how often it would rise by
chance, so its limit is Lorden's bound log(budget), which keeps the false-alarm rate below the
budget when the baseline is right. The other components are calibrated by block bootstrap
(`monitor.detectors.calibration`), the budget shared equally by all.

Codes are `0..n_categories-1` with the last one for unseen values (the monitor's encoding);
`fit` needs `n_categories`.

>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> p = [0.40, 0.25, 0.15, 0.12, 0.08, 0.0]   # the last code: values unseen in the reference
>>> detector = CategoryCusum().fit(rng.choice(6, 5000, p=p), run_length=100_000, window_size=1000,
...                                n_categories=6)
>>> shifted = [0.30, 0.25, 0.15, 0.17, 0.13, 0.0]
>>> detector.update_many(np.r_[rng.choice(6, 3000, p=p), rng.choice(6, 3000, p=shifted)])[:1]
[3295]
>>> fresh = detector.clone().fit(rng.choice(6, 5000, p=p), run_length=100_000, window_size=1000, n_categories=6)
>>> fresh.update_many(np.r_[rng.choice(6, 500, p=p), [5, 5, 5, 5, 5]])   # unseen values from 500
[503]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from monitor.detectors import calibration
from monitor.detectors._common import CusumDetector, check_range, check_run_length, n_categories
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register

MIN_COUNT = 30
"""A category seen fewer times in the reference joins the rare group."""
MIN_SHARE_DOWN = 0.02
"""A category with a smaller reference share gets no CUSUM for a fall (too slow to matter)."""
MAX_OWN = 16
"""At most this many categories (the most frequent) get CUSUMs of their own."""
N_PATHS, PATH_LENGTH = 128, 512
"""Bootstrap size per component: Bernoulli components extrapolate well from fewer values."""


def _shift(p0: np.ndarray, odds_ratio: float) -> np.ndarray:
    odds = p0 / (1 - p0) * odds_ratio
    return odds / (1 + odds)


def _steps(p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope and offset of the log-likelihood-ratio increment x * log(p1/p0) + (1-x) * log(q1/q0)."""
    up, down = np.log(p1 / p0), np.log((1 - p1) / (1 - p0))
    return up - down, down


@register
class CategoryCusum(CusumDetector):
    """Per-category Bernoulli CUSUMs (rises, falls of large categories, rare and unseen values).

    Parameters
    ----------
    odds_ratio
        The change of a category's odds detected fastest (1.5: a 10% category at 14.3%).
    unseen_rate
        The share of rare and never-seen values, above their reference share, detected fastest.
    """

    name = "category_cusum"
    accepts = frozenset({DataKind.categorical})

    def __init__(self, odds_ratio: float = 1.5, unseen_rate: float = 0.005):
        super().__init__(odds_ratio=odds_ratio, unseen_rate=unseen_rate)
        self.odds_ratio = check_range("odds_ratio", odds_ratio, 1.0, 1000.0, low_open=True)
        self.unseen_rate = check_range("unseen_rate", unseen_rate, 0.0, 0.5, low_open=True)
        self.component_names = ()
        self.n_categories = 0
        self.slot = np.zeros(0, dtype=np.int64)  # code -> up component (rare group last)
        self.down_of = np.zeros(0, dtype=np.int64)  # down component -> up component it mirrors
        self.baseline = np.zeros(0)  # reference share per up component
        self._slope = np.zeros(0)
        self._offset = np.zeros(0)

    def _usable(self, raw: np.ndarray) -> np.ndarray:
        codes = np.asarray(raw)
        if codes.dtype.kind in "iu":
            return codes >= 0
        return np.isfinite(codes) & (codes >= 0)

    def _clean(self, values: np.ndarray) -> np.ndarray:
        """Codes beyond the last count as unseen."""
        return np.minimum(np.asarray(values).astype(np.int64), self.n_categories - 1)

    def _indicators(self, slots: np.ndarray) -> np.ndarray:
        """Columns: one per up component (the value is in it), then one per down component."""
        n_up = len(self.baseline)
        up = slots[..., None] == np.arange(n_up)
        return np.concatenate([up, up[..., self.down_of]], axis=-1).astype(float)

    def _increments(self, values: np.ndarray) -> np.ndarray:
        return self._indicators(self.slot[values]) * self._slope + self._offset

    @classmethod
    def _usable_rows(cls, detectors: Sequence[CusumDetector], values: np.ndarray) -> np.ndarray:
        if values.dtype.kind in "iu":
            return (values >= 0).all(axis=1)
        return super()._usable_rows(detectors, values)

    @classmethod
    def _bank_increments(cls, detectors: Sequence[CusumDetector], values: np.ndarray) -> np.ndarray:
        """`_increments` transposed (components x time), element for element: each component's
        increment for each slot is computed once (the same indicator times slope plus offset),
        then looked up per value."""
        parts = []
        for detector, row in zip(detectors, values, strict=True):
            assert isinstance(detector, CategoryCusum)
            n_up = len(detector.baseline)
            up = np.arange(n_up) == np.arange(n_up)[:, None]  # component x slot: is the slot the component's
            table = np.concatenate([up, up[detector.down_of]]).astype(float)
            table *= detector._slope[:, None]
            table += detector._offset[:, None]
            parts.append(table.take(detector.slot[detector._clean(row)], axis=1))
        return parts[0] if len(parts) == 1 else np.vstack(parts)

    def fit(
        self, reference: np.ndarray, *, run_length: float, window_size: int = 1000, seed: int = 0, **context: Any
    ) -> Self:
        check_run_length(run_length)
        k = n_categories(self.name, context)
        codes = np.asarray(reference)
        codes = codes[(codes >= 0) & (codes < k)].astype(np.int64)
        if len(codes) < 50:
            raise ValueError(f"{self.name}: the reference needs at least 50 values, got {len(codes)}")
        self.n_categories, self.reference_size = k, len(codes)
        n = len(codes)
        counts = np.bincount(codes, minlength=k).astype(float)

        # Components: the most frequent categories with enough reference values, then the rare group.
        seen = counts[:-1]
        order = [int(c) for c in np.argsort(-seen, kind="stable") if seen[c] >= MIN_COUNT][:MAX_OWN]
        rare = len(order)
        self.slot = np.full(k, rare, dtype=np.int64)
        self.slot[order] = np.arange(len(order))
        singletons = float(np.sum(seen == 1))
        rare_count = float(counts.sum() - counts[order].sum()) + max(singletons, 0.5)
        p0 = np.append(counts[order], rare_count) / n
        p0 = np.clip(p0, 0.5 / n, 1 - 0.5 / n)
        self.baseline = p0
        self.down_of = np.array([j for j in range(len(order)) if p0[j] >= MIN_SHARE_DOWN], dtype=np.int64)
        names = [f"up_{c}" for c in order] + ["up_rare_or_unseen"] + [f"down_{order[j]}" for j in self.down_of]
        self.component_names = tuple(names)

        p_up = _shift(p0, self.odds_ratio)
        p_up[rare] = max(p_up[rare], min(p0[rare] + self.unseen_rate, 0.5))
        p_down = _shift(p0[self.down_of], 1.0 / self.odds_ratio)
        slope_up, offset_up = _steps(p0, p_up)
        slope_dn, offset_dn = _steps(p0[self.down_of], p_down)
        self._slope = np.concatenate([slope_up, slope_dn])
        self._offset = np.concatenate([offset_up, offset_dn])

        budget = run_length * len(names)
        slots = self.slot[codes]
        indicators = self._indicators(slots)  # reference x components
        top = indicators[:, : min(3, len(order))] if order else indicators[:, :1]
        block = max(calibration.block_length(col) for col in top.T)
        boot = calibration.Bootstrap(slots, block=block, seed=seed)
        shares = boot.resample_means(indicators[:, : rare + 1], N_PATHS)  # re-estimated baselines
        shares = np.clip(shares, 0.5 / n, 1 - 0.5 / n)
        slot_paths = boot.gather(slots, boot.starts(N_PATHS, PATH_LENGTH), PATH_LENGTH)
        counts_up: dict[int, np.ndarray] = {}  # up component -> its values so far on each path
        mirrored = set(self.down_of.tolist())
        limits = []
        for j in range(len(names)):
            up_component = j if j <= rare else int(self.down_of[j - rare - 1])
            if up_component == rare and rare_count < MIN_COUNT:
                limits.append(math.log(budget))  # Lorden: ARL >= exp(h) when the baseline holds
                continue
            p0_b = shares[:, up_component]
            ratio = self.odds_ratio if j <= rare else 1.0 / self.odds_ratio
            p1_b = _shift(p0_b, ratio)
            if j == rare:
                p1_b = np.maximum(p1_b, np.minimum(p0_b + self.unseen_rate, 0.5))
            slope_b, offset_b = _steps(p0_b, p1_b)
            f_cum = counts_up.pop(up_component, None)  # a down component counts what its up one counted
            if f_cum is None:
                f_cum = np.cumsum(slot_paths == up_component, axis=1, dtype=float)
                if up_component in mirrored:
                    counts_up[up_component] = f_cum
            limits.append(
                calibration.cusum_limit(indicators[:, j], None, slope_b, offset_b, budget, block, f_cumulative=f_cum)
            )
        self._set_limits(limits)
        return self

    def _fitted_state(self) -> dict[str, Any]:
        return {
            "n_categories": self.n_categories,
            "component_names": list(self.component_names),
            "slot": self.slot.tolist(),
            "down_of": self.down_of.tolist(),
            "baseline": self.baseline.tolist(),
            "slope": self._slope.tolist(),
            "offset": self._offset.tolist(),
        }

    def _load_fitted(self, state: dict[str, Any]) -> None:
        self.n_categories = int(state["n_categories"])
        self.component_names = tuple(state["component_names"])
        self.slot = np.asarray(state["slot"], dtype=np.int64)
        self.down_of = np.asarray(state["down_of"], dtype=np.int64)
        self.baseline = np.asarray(state["baseline"], dtype=float)
        self._slope = np.asarray(state["slope"], dtype=float)
        self._offset = np.asarray(state["offset"], dtype=float)
