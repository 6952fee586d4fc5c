"""What our CUSUM-type detectors share: parameter checks, the running state, JSON state.

A `CusumDetector` runs one or more one-sided CUSUM components side by side (mean up, mean down,
scale up, ...). Each has its own calibrated limit; the detector alarms when any component reaches
its limit, then every component restarts at 0. With one component, `score` and `threshold` are
that CUSUM and its limit; with several, `score` is the largest `S_c / limit_c` and `threshold`
is 1.0, and `components()` gives each one's value and limit for the alert evidence.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from monitor.detectors._cusum import run_cusum
from monitor.detectors.base import SequentialDetector, TestResult


def check_run_length(run_length: float, window_size: int | None = None) -> None:
    if not (isinstance(run_length, int | float) and math.isfinite(run_length) and run_length > 1):
        raise ValueError(f"Invalid 'run_length' {run_length!r}: it must be a finite number above 1")
    if window_size is not None and not (isinstance(window_size, int) and window_size > 0):
        raise ValueError(f"Invalid 'window_size' {window_size!r}: it must be a positive integer")


def check_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """`value` as a float in [low, high] (or (low, high] when `low_open`), else a ValueError."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"Invalid {name!r} {value!r}. Valid values are: numbers in {bracket}{low}, {high}]")
    return float(value)


def check_choice(name: str, value: Any, valid: tuple[Any, ...]) -> Any:
    if value not in valid:
        raise ValueError(f"Invalid {name!r} {value!r}. Valid values are: {valid}")
    return value


def n_categories(name: str, context: dict[str, Any]) -> int:
    """The category count a categorical detector's `fit` needs from its context: the feature's
    categories plus one code for unseen values."""
    k = context.get("n_categories")
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"{name}: fit needs n_categories (an int >= 2: the categories and 'unseen')")
    return k


def finite(values: np.ndarray) -> np.ndarray:
    """Float values without NaN and infinities (the monitor counts missing values elsewhere)."""
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def floats(values: list[float] | np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=float).ravel()]


class CusumDetector(SequentialDetector):
    """One or more CUSUM components with calibrated limits; subclasses give the increments."""

    component_names: tuple[str, ...] = ("up",)

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.limits = np.full(len(self.component_names), np.inf)
        self.state = np.zeros(len(self.component_names))
        self.n_seen = 0
        self.n_alarms = 0
        self.drift_detected = False

    # -- subclasses -------------------------------------------------------------------------
    @abstractmethod
    def _increments(self, values: np.ndarray) -> np.ndarray:
        """Increments (time x components) for a batch of values already cleaned."""

    def _clean(self, values: np.ndarray) -> np.ndarray:
        return finite(values)

    @abstractmethod
    def _fitted_state(self) -> dict[str, Any]:
        """What `fit` learned from the reference, JSON-safe."""

    @abstractmethod
    def _load_fitted(self, state: dict[str, Any]) -> None: ...

    # -- shared -----------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return len(self.limits) > 0 and bool(np.isfinite(self.limits).all())

    def _set_limits(self, limits: list[float]) -> None:
        self.limits = np.asarray(limits, dtype=float)
        self.threshold = float(self.limits[0]) if len(self.limits) == 1 else 1.0
        self.state = np.zeros(len(self.limits))

    @property
    def score(self) -> float:
        if len(self.limits) == 1:
            return float(self.state[0])
        return float(np.max(self.state / self.limits))

    def _alarm_result(self, values: np.ndarray) -> TestResult:
        score = float(values[0]) if len(self.limits) == 1 else float(np.max(values / self.limits))
        details = {
            f"{name}.{key}": round(float(v), 6)
            for name, value, limit in zip(self.component_names, values, self.limits, strict=True)
            for key, v in (("value", value), ("limit", limit))
        }
        return TestResult(score, self.threshold, True, details)

    def components(self) -> dict[str, dict[str, float]]:
        """Each component's current CUSUM and calibrated limit (alert evidence)."""
        return {
            name: {"value": float(s), "limit": float(h)}
            for name, s, h in zip(self.component_names, self.state, self.limits, strict=True)
        }

    def update_many(self, values: np.ndarray) -> list[int]:
        """Feed values in order; positions in `values` that raised an alarm. Values the detector
        cannot use (NaN) are skipped but keep their positions."""
        if not self.fitted:
            raise RuntimeError(f"{self.name}: call fit(reference, ...) before update")
        raw = np.asarray(values).ravel()
        keep = self._usable(raw)
        clean = self._clean(raw[keep])
        if len(clean) == 0:
            self.drift_detected = False
            return []
        alarms: list[int] = []
        self.alarm_results = []
        chunk = self._chunk()
        for start in range(0, len(clean), chunk):
            found, self.state, at_alarm = run_cusum(
                self._increments(clean[start : start + chunk]), self.state, self.limits
            )
            alarms += [start + a for a in found]
            self.alarm_results += [self._alarm_result(values) for values in at_alarm]
        self.n_seen += len(clean)
        self.n_alarms += len(alarms)
        self.drift_detected = bool(alarms)
        if len(clean) != len(raw):
            positions = np.flatnonzero(keep)
            alarms = [int(positions[a]) for a in alarms]
        return alarms

    def _usable(self, raw: np.ndarray) -> np.ndarray:
        return np.isfinite(raw.astype(float))

    def _bank_key(self) -> tuple[Any, ...]:
        """Detectors of one class with equal keys compute their increments together
        (`_bank_increments`); the default key keeps each detector apart."""
        return (id(self),)

    @classmethod
    def _usable_rows(cls, detectors: Sequence[CusumDetector], values: np.ndarray) -> np.ndarray:
        """Whether every value of each row (one per detector) is usable."""
        return np.array([d._usable(row).all() for d, row in zip(detectors, values, strict=True)], dtype=bool)

    @classmethod
    def _bank_increments(cls, detectors: Sequence[CusumDetector], values: np.ndarray) -> np.ndarray:
        """The increments of `detectors` (all usable values, one row per detector) as rows, one per
        component, detector after detector: `_increments` transposed, element for element."""
        return np.vstack([d._increments(d._clean(row)).T for d, row in zip(detectors, values, strict=True)])

    def _chunk(self) -> int:
        """Values per cumulative sum: bounds the increments matrix."""
        return max(1024, (1 << 20) // max(1, len(self.limits)))

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "reference_size": self.reference_size,
            "limits": floats(self.limits) if self.fitted else None,
            "state": floats(self.state),
            "n_seen": self.n_seen,
            "n_alarms": self.n_alarms,
            "fitted": self._fitted_state() if self.fitted else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("name") != cls.name:
            raise ValueError(f"state of {state.get('name')!r}, not {cls.name!r}")
        det = cls(**state["params"])
        det.reference_size = int(state["reference_size"])
        if state["fitted"] is not None:
            det._load_fitted(state["fitted"])
            det._set_limits(state["limits"])
            det.state = np.asarray(state["state"], dtype=float)
        det.n_seen = int(state["n_seen"])
        det.n_alarms = int(state["n_alarms"])
        return det


_BOUND_BLOCK = 32
"""Values per block of `update_together`'s bound on a CUSUM's path."""


def update_together(detectors: Sequence[SequentialDetector], columns: Sequence[np.ndarray]) -> list[list[int]]:
    """`detector.update_many(column)` for each pair, the CUSUMs with one cumulative sum over all
    their components: a handful of numpy calls per batch instead of a handful per detector (a
    model's 20 numeric features, say). A CUSUM that alarms in this batch (rare), or that cannot
    use every value of its column, runs its own `update_many` from its untouched state, so each
    result, state and evidence is exactly what one call each gives.

    The components run side by side as rows (components x time), so the cumulative sums are the
    same sequential sums `update_many` takes. Whether a component can reach its limit in the
    batch is first bounded block by block from the sums' extremes (see below); only components
    the bound does not clear walk their path (the running minimum), and the final state is
    C_n - min(min C, -S_0), bit for bit the path's last value.

    >>> import numpy as np
    >>> from monitor.detectors.cusum import Cusum
    >>> rng = np.random.default_rng(1)
    >>> pair = [Cusum().fit(rng.normal(size=2000), run_length=1e5, seed=s) for s in (1, 2)]
    >>> alarms = update_together(pair, [rng.normal(size=500), rng.normal(3.0, 1.0, size=500)])
    >>> alarms[0], alarms[1][:1], [d.n_seen for d in pair]
    ([], [5], [500, 500])
    """
    alarms: list[list[int] | None] = [None] * len(detectors)
    groups: dict[tuple[Any, ...], list[tuple[int, CusumDetector, np.ndarray]]] = {}
    for i, (detector, column) in enumerate(zip(detectors, columns, strict=True)):
        raw = np.asarray(column).ravel()
        if isinstance(detector, CusumDetector) and len(detector.limits) and 0 < len(raw) <= detector._chunk():
            key = (len(raw), type(detector), detector._bank_key())
            groups.setdefault(key, []).append((i, detector, raw))
        else:
            alarms[i] = detector.update_many(raw)
    banks: dict[int, list[tuple[list[tuple[int, CusumDetector]], np.ndarray]]] = {}
    for (n, kind, _), group in groups.items():
        members = [detector for _, detector, _ in group]
        values = np.stack([raw for _, _, raw in group])
        usable = kind._usable_rows(members, values)
        if not np.isfinite(np.concatenate([d.limits for d in members])).all():  # unfitted: update_many says so
            usable &= [bool(np.isfinite(d.limits).all()) for d in members]
        if not usable.all():
            for (i, detector, raw), ok in zip(group, usable, strict=True):
                if not ok:
                    alarms[i] = detector.update_many(raw)
            group = [item for item, ok in zip(group, usable, strict=True) if ok]
            values = values[usable]
        if group:
            increments = kind._bank_increments([d for _, d, _ in group], values)
            banks.setdefault(n, []).append(([(i, d) for i, d, _ in group], increments))
    for n, bank in banks.items():  # one cumulative sum per column length (features with nulls have fewer)
        members = [member for part, _ in bank for member in part]
        cum = bank[0][1] if len(bank) == 1 else np.vstack([increments for _, increments in bank])
        np.cumsum(cum, axis=1, out=cum)
        state = np.concatenate([d.state for _, d in members])
        limits = np.concatenate([d.limits for _, d in members])
        # S_t = C_t - min(-S_0, min_{s<=t} C_s); within a block, C_t is at most the block's
        # largest sum and the minimum at least the smaller of the lowest before the block and
        # the block's own: a component under its limit by that bound in every block cannot alarm.
        starts = np.arange(0, n, _BOUND_BLOCK)
        block_low = np.minimum.reduceat(cum, starts, axis=1)
        block_high = np.maximum.reduceat(cum, starts, axis=1)
        lowest = np.empty_like(block_low)
        lowest[:, 0] = -state
        lowest[:, 1:] = block_low[:, :-1]
        np.minimum.accumulate(lowest, axis=1, out=lowest)
        np.minimum(lowest, block_low, out=lowest)
        floor = lowest[:, -1]  # min(-S_0, every C_s)
        hit = np.zeros(len(limits), dtype=bool)
        near = np.flatnonzero(((block_high - lowest) >= limits[:, None]).any(axis=1))
        if len(near):
            sums = cum[near]
            path = sums - np.minimum(np.minimum.accumulate(sums, axis=1), -state[near, None])
            hit[near] = (path >= limits[near, None]).any(axis=1)
        sizes = [len(detector.limits) for _, detector in members]
        bounds = np.cumsum(sizes)
        alarmed = np.logical_or.reduceat(hit, bounds - sizes).tolist() if hit.any() else [False] * len(members)
        states = np.split(cum[:, -1] - floor, bounds[:-1])
        for (i, detector), state_i, rang in zip(members, states, alarmed, strict=True):
            if rang:
                alarms[i] = detector.update_many(columns[i])
            else:
                detector.state = state_i
                detector.n_seen += n
                detector.drift_detected = False
                detector.alarm_results = []
                alarms[i] = []
    return alarms  # type: ignore[return-value]
