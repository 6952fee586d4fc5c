"""Multinomial scan: a shift anywhere in a categorical feature's distribution, found sequentially
at every scale, without knowing its size in advance.

Every `block` values (50) the detector compares the last k values with the reference, for window
lengths k on a geometric grid (`min_window` ... `max_window`, ratio about sqrt 2: 100, 150, 200,
300, 400, 550, 800, ..., 6,400), by the G statistic (likelihood ratio) of the 2 x cells table
(window, reference) x categories. That is the multinomial GLR of "the shares changed k values
ago" against "no change", with the reference's own sampling error in it, so under no change each
G is about chi-square with (cells - 1) degrees of freedom whatever k. Each is turned into
-log p (its chi-square tail), less a penalty of `scale_penalty` x log(max_window / k) nats (a
short window has many more independent chances to look extreme), and the score is the best over
the scales: a large shift shows in the short windows within a few blocks, a small one (0.40 ->
0.35 of one category) accumulates in the long ones, which a window test that forgets every 1,000
values cannot do.

Cells: the `MAX_CELLS - 1` most frequent categories seen at least `MIN_COUNT` times in the
reference, and one "rare or unseen" cell for the others and the last code (values the reference
never showed). New values move the rare cell, but `category_cusum` and `unseen_share` judge those
with a Good-Turing baseline; this detector is for the shares of the known categories.

State is bounded and independent of traffic: the counts per cell of the last
`max_window / block` complete blocks (oldest first), the counts of the open block, and counters.
A batch is binned into blocks with one `bincount`; the windows' counts are differences of the
blocks' cumulative sums; no per-value Python. Decisions happen only at block ends counted from the
detector's start, so any split of a stream into batches gives the same alarms. After an alarm
the detector restarts from the reference: the history is cleared (block phase kept).

Threshold: one false alarm per `run_length` values on data like the reference. Long
block-bootstrap paths of the reference (`calibration.Bootstrap`, the block set by the reference's
autocorrelation), each scanned against its own independently resampled reference counts (the
two-sample bootstrap of `monitor.detectors.calibration`), give the maxima of the score over
stretches of `max_window` values in the steady state; their upper tail is exponential
(-log p of a chi-square is), fitted by maximum likelihood on the top quarter and extrapolated to
the maximum exceeded once per `run_length` values (Poisson: P(max over L values >= h) = 1 -
exp(-L / run_length)).

Measured (observed / target false alarms, run length 1e5, 5,000-value references): 1.10 over 60
references x 300,000 i.i.d. values, 1.45 over 20 x 500,000, 1.98 for categories that repeat the
previous one with probability 0.3. The rate is an average over references: the long windows
compare precisely with a reference that may sit at the edge of its own sampling distribution,
so a few references raise most of the alarms (up to 14x their share; most raise fewer than their
share), as with `category_cusum`. drift-bench: bench/results/categorical-scan-2026-12-06.md.

>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> p = [0.40, 0.25, 0.15, 0.12, 0.08, 0.0]   # the last code: values unseen in the reference
>>> detector = MultinomialScan().fit(rng.choice(6, 5000, p=p), run_length=1_000_000, window_size=1000,
...                                  n_categories=6)
>>> shifted = [0.35, 0.25, 0.15, 0.145, 0.105, 0.0]   # total variation 0.05
>>> alarms = detector.update_many(np.r_[rng.choice(6, 10_000, p=p), rng.choice(6, 10_000, p=shifted)])
>>> alarms[0] > 10_000, alarms[0] < 14_000
(True, True)
>>> detector.alarm_results[0].details["moved_categories"][:1]
['0']
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
from scipy import special

from monitor.detectors import calibration
from monitor.detectors._common import check_range, check_run_length, n_categories
from monitor.detectors.base import DataKind, SequentialDetector, TestResult
from monitor.detectors.registry import register

MIN_COUNT = 10
"""A category seen fewer times in the reference joins the rare-or-unseen cell."""
MAX_CELLS = 32
"""Cells at most: the most frequent categories and the rare-or-unseen cell."""
N_PATHS = 48
"""Bootstrap paths of the calibration, each against its own resampled reference."""
PATH_STRETCHES = 10
"""Stretches of `max_window` values per path after its warm-up (as long again)."""
MAX_STRETCH_BLOCKS = 4096
"""Blocks scanned at a time (bounds the temporaries of a huge batch)."""
MOVED_SHOWN = 5
"""Cells named in the evidence, the most moved first."""


def _xlogx(x: np.ndarray) -> np.ndarray:
    return special.xlogy(x, x)


def xlogx_table(size: int) -> np.ndarray:
    """x log x for the integers 0..size: counts are integers, so G is table lookups and sums."""
    return _xlogx(np.arange(size + 1, dtype=float))


def _cell_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis (a few cells), one column at a time: ~3x faster than `sum(axis=-1)`
    on a short last axis, and in the same order for every row, so any batch split gives the same
    bits."""
    total = x[..., 0].copy()
    for j in range(1, x.shape[-1]):
        total += x[..., j]
    return total


def g_statistic(window: np.ndarray, reference: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """Likelihood-ratio (G) statistic of the 2 x cells table (window, reference), over the last
    axis; `window` and `reference` broadcast. With `table` (`xlogx_table`, long enough for
    window + reference totals) the counts must be integers and x log x is looked up."""
    f = _xlogx if table is None else table.take
    w_total = _cell_sum(window)
    r_total = reference.sum(axis=-1)
    g = _cell_sum(f(window) - f(window + reference)) + f(reference).sum(axis=-1) - f(r_total)
    g += f(w_total + r_total) - f(w_total)
    return np.maximum(2.0 * g, 0.0)


def tail_score(g: np.ndarray, df: int) -> np.ndarray:
    """-log of the chi-square(df) tail probability of G (at most ~690: p floored at 1e-300)."""
    with np.errstate(divide="ignore"):
        return -np.log(np.maximum(special.chdtrc(df, g), 1e-300))


def window_grid(block: int, min_window: int, max_window: int) -> np.ndarray:
    """Window lengths in blocks: a geometric grid of ratio ~sqrt 2 from min to max, both included."""
    low, high = max(1, round(min_window / block)), max(1, round(max_window / block))
    steps = max(1, math.ceil(2 * math.log2(high / low))) if high > low else 0
    grid = np.unique(np.round(low * (high / low) ** (np.arange(steps + 1) / max(steps, 1))).astype(np.int64))
    return grid[(grid >= low) & (grid <= high)]


@register
class MultinomialScan(SequentialDetector):
    """Multi-scale multinomial GLR scan of a categorical feature's shares against the reference.

    Parameters
    ----------
    block
        Values between two decisions (and the unit of the windows).
    min_window, max_window
        The shortest and longest windows scanned, in values (rounded to blocks).
    scale_penalty
        A window k gets `scale_penalty * log(max_window / k)` nats off its score: there are about
        max_window / k independent short windows for each long one, so without it the short
        windows spend most of the budget (Walther's scale penalty). 1.0 moves budget to the long
        windows, where small shifts show, at little cost to large ones (seen by short windows
        with -log p far above the threshold anyway).
    """

    name = "multinomial_scan"
    accepts = frozenset({DataKind.categorical})

    def __init__(self, block: int = 50, min_window: int = 100, max_window: int = 6400, scale_penalty: float = 1.0):
        for key, value, low, high in (
            ("block", block, 1, 10_000),
            ("min_window", min_window, 1, 1_000_000),
            ("max_window", max_window, 1, 1_000_000),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"Invalid {key!r} {value!r}. Valid values are: integers in [{low}, {high}]")
        if max_window < min_window or max_window < block:
            raise ValueError(
                f"Invalid 'max_window' {max_window!r}. Valid values are: at least min_window ({min_window}) "
                f"and block ({block})"
            )
        if max_window // block > 4096:
            raise ValueError(f"Invalid 'max_window' {max_window!r}. Valid values are: at most 4096 blocks")
        penalty = check_range("scale_penalty", scale_penalty, 0.0, 10.0)
        super().__init__(block=block, min_window=min_window, max_window=max_window, scale_penalty=scale_penalty)
        self.block = block
        self.scales = window_grid(block, min_window, max_window)
        self.penalty = penalty * np.log(self.scales[-1] / self.scales)  # nats taken off each scale's score
        self.max_blocks = int(self.scales[-1])
        self.n_categories = 0
        self.slot = np.zeros(0, dtype=np.int64)  # code -> cell (rare-or-unseen cell last)
        self.cell_codes: list[str] = []  # what each cell stands for, in the evidence
        self.reference_counts = np.zeros(0)
        self.df = 0
        self._table = np.zeros(0)
        self.history = np.zeros((0, 0), dtype=np.int64)  # counts of the complete blocks since restart, oldest first
        self.open_counts = np.zeros(0, dtype=np.int64)
        self.open_size = 0
        self.last_score = 0.0
        self.n_seen = 0
        self.n_alarms = 0
        self.drift_detected = False
        self.alarm_results = []

    # -- fitting ----------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return math.isfinite(self.threshold) and len(self.reference_counts) > 0

    @property
    def n_cells(self) -> int:
        return len(self.reference_counts)

    def fit(
        self, reference: np.ndarray, *, run_length: float, window_size: int = 1000, seed: int = 0, **context: Any
    ) -> Self:
        check_run_length(run_length)
        k = n_categories(self.name, context)
        raw = np.asarray(reference).ravel()
        codes = raw[self._usable(raw)].astype(np.int64)
        codes = np.minimum(codes, k - 1)
        if len(codes) < 50:
            raise ValueError(f"{self.name}: the reference needs at least 50 values, got {len(codes)}")
        counts = np.bincount(codes, minlength=k)
        seen = counts[:-1]
        own = [int(c) for c in np.argsort(-seen, kind="stable") if seen[c] >= MIN_COUNT][: MAX_CELLS - 1]
        if len(own) < 2 and not (len(own) == 1 and counts.sum() - counts[own].sum() > 0):
            raise ValueError(f"{self.name}: the reference needs two categories seen {MIN_COUNT} times or more")
        self.n_categories = k
        self.slot = np.full(k, len(own), dtype=np.int64)
        self.slot[own] = np.arange(len(own))
        self.cell_codes = [str(c) for c in own] + ["rare_or_unseen"]
        cells = self.slot[codes]
        self.reference_size = len(cells)
        self._set_reference(np.bincount(cells, minlength=len(own) + 1))
        self.threshold = self._calibrate(cells, run_length, seed)
        self._restart()
        self.n_seen = self.n_alarms = 0
        return self

    def _set_reference(self, counts: np.ndarray) -> None:
        self.reference_counts = counts
        self.df = max(1, int(np.sum(counts > 0)) - 1)
        self._table = xlogx_table(int(self.scales[-1]) * self.block + int(counts.sum()))

    def _calibrate(self, cells: np.ndarray, run_length: float, seed: int) -> float:
        n, c = len(cells), self.n_cells
        top = int(np.argmax(self.reference_counts))
        boot = calibration.Bootstrap(cells, block=calibration.block_length((cells == top).astype(float)), seed=seed)
        warm = self.max_blocks
        blocks = warm * (PATH_STRETCHES + 1)
        length = blocks * self.block
        ticks = (np.arange(length) // self.block) * c
        maxima = []
        for _ in range(N_PATHS):
            profile = np.bincount(
                boot.gather(cells, boot.starts(1, n), n)[0], minlength=c
            )  # what the reference could have been
            path = boot.gather(cells, boot.starts(1, length), length)[0]
            block_counts = np.bincount(ticks + path, minlength=blocks * c).reshape(blocks, c)
            g, _ = self._g_matrix(block_counts, profile, available=0)
            # -log p is monotone in G: each stretch's best G per scale, then its score
            top_g = g[warm:].reshape(PATH_STRETCHES, warm, len(self.scales)).max(axis=1)
            maxima.append((tail_score(top_g, self.df) - self.penalty).max(axis=1))
        tops = np.sort(np.concatenate(maxima))[::-1]
        span = float(warm * self.block)  # values per maximum
        wanted = -math.expm1(-span / float(run_length))  # P(max over span >= h) at the target rate
        m = max(10, len(tops) // 4)
        u = float(tops[m])
        share = m / len(tops)
        if wanted >= share:  # within the simulation: its quantile
            return float(np.quantile(tops, 1.0 - wanted))
        theta = 1.0 / max(float(np.mean(tops[:m] - u)), 1e-6)  # exponential tail above u (MLE)
        theta = min(theta, 1.0)  # -log p is Exp(1) for one test; a steeper fit is noise: stay safe
        return u + math.log(share / wanted) / theta

    # -- scanning ---------------------------------------------------------------------------
    def _g_matrix(
        self, blocks: np.ndarray, reference: np.ndarray | None = None, available: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """G (new blocks x scales) of the windows ending at each of `blocks` (counts per cell),
        which follow `available` blocks of history (the last rows of `self.history`, or none),
        and whether each window fits in the blocks since the restart."""
        if available is None:
            available = len(self.history)
        full = np.concatenate([self.history[len(self.history) - available :], blocks]) if available else blocks
        cum = np.zeros((len(full) + 1, full.shape[1]), dtype=np.int64)
        np.cumsum(full, axis=0, out=cum[1:])
        ends = available + 1 + np.arange(len(blocks))
        starts = ends[:, None] - self.scales[None, :]
        valid = starts >= 0
        window = cum[ends][:, None, :] - cum[np.maximum(starts, 0)]
        g = g_statistic(window, self.reference_counts if reference is None else reference, self._table)
        return g, valid

    def _scan(self, blocks: np.ndarray) -> np.ndarray:
        """Scores (new blocks x scales) of `blocks` after the history; -inf where a window is
        longer than the blocks since the restart."""
        g, valid = self._g_matrix(blocks)
        scores = tail_score(g, self.df) - self.penalty
        scores[~valid] = -np.inf
        return scores

    def _usable(self, raw: np.ndarray) -> np.ndarray:
        codes = np.asarray(raw)
        if codes.dtype.kind in "iu":
            return codes >= 0
        return np.isfinite(codes.astype(float)) & (codes >= 0)

    @property
    def score(self) -> float:
        return float(self.last_score)

    def _restart(self) -> None:
        self.history = np.zeros((0, self.n_cells), dtype=np.int64)
        if len(self.open_counts) != self.n_cells:
            self.open_counts = np.zeros(self.n_cells, dtype=np.int64)
            self.open_size = 0

    def update_many(self, values: np.ndarray) -> list[int]:
        """Feed values in order; positions in `values` of the values that closed a block whose
        scan alarmed. Unusable values (negative codes, NaN) are skipped but keep their positions."""
        if not self.fitted:
            raise RuntimeError(f"{self.name}: call fit(reference, ...) before update")
        raw = np.asarray(values).ravel()
        keep = self._usable(raw)
        self.alarm_results = []
        self.drift_detected = False
        positions = np.flatnonzero(keep)
        m = len(positions)
        if m == 0:
            return []
        cells = self.slot[np.minimum(raw[keep].astype(np.int64), self.n_categories - 1)]
        c, b = self.n_cells, self.block
        total = self.open_size + m
        n_blocks = total // b
        rows = n_blocks + 1
        index = (self.open_size + np.arange(m)) // b
        counts = np.bincount(index * c + cells, minlength=rows * c).reshape(rows, c)
        counts[0] += self.open_counts
        alarms: list[int] = []
        if n_blocks:
            for block in self._run(counts[:n_blocks]):
                alarms.append(int(positions[(block + 1) * b - self.open_size - 1]))
        self.open_counts = counts[n_blocks].copy()
        self.open_size = total - n_blocks * b
        self.n_seen += m
        self.n_alarms += len(alarms)
        self.drift_detected = bool(alarms)
        return alarms

    def _run(self, blocks: np.ndarray) -> list[int]:
        """Scan the complete `blocks` in order from the history; the indices of the blocks that
        alarmed (each restarts the history). Stretches double while quiet, so a stream that
        alarms often costs O(blocks), not O(blocks x alarms)."""
        found = []
        pos, stretch = 0, MAX_STRETCH_BLOCKS
        while pos < len(blocks):
            part = blocks[pos : pos + stretch]
            scores = self._scan(part)
            best = scores.max(axis=1)
            hit = np.flatnonzero(best >= self.threshold)
            if len(hit):
                i = int(hit[0])
                found.append(pos + i)
                self.alarm_results.append(self._evidence(part[: i + 1], scores[i]))
                self.last_score = float(best[i])
                self._restart()
                pos += i + 1
                stretch = 64
            else:
                self.last_score = max(float(best[-1]), 0.0)  # 0 until a window is long enough
                self.history = np.concatenate([self.history, part])[-self.max_blocks :]
                pos += len(part)
                stretch = min(stretch * 2, MAX_STRETCH_BLOCKS)
        return found

    def _evidence(self, blocks: np.ndarray, scores: np.ndarray) -> TestResult:
        """The alarm's numbers: the best window, its G and tail, and the cells that moved most
        (reference share against the window's)."""
        s = int(np.argmax(scores))
        length = int(self.scales[s])
        full = np.concatenate([self.history, blocks])[-length:]
        counts = full.sum(axis=0)
        g = float(g_statistic(counts, self.reference_counts, self._table))
        window = counts.astype(float)
        ref_share = self.reference_counts / self.reference_counts.sum()
        recent = window / max(window.sum(), 1.0)
        both = (window + self.reference_counts) / (window.sum() + self.reference_counts.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            part = special.xlogy(window, np.where(both > 0, recent / both, 1.0))
        order = np.argsort(-np.abs(recent - ref_share) - 1e-9 * np.abs(part), kind="stable")[:MOVED_SHOWN]
        details = {
            "window_values": length * self.block,
            "g_statistic": round(g, 4),
            "df": self.df,
            "minus_log_p": round(float(scores[s] + self.penalty[s]), 4),
            "scale_penalty": round(float(self.penalty[s]), 4),
            "moved_categories": [self.cell_codes[j] for j in order],
            "reference_share": [round(float(ref_share[j]), 4) for j in order],
            "recent_share": [round(float(recent[j]), 4) for j in order],
        }
        return TestResult(float(scores[s]), float(self.threshold), True, details)

    # -- state ------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        fitted = self.fitted
        return {
            "name": self.name,
            "params": self.params,
            "threshold": self.threshold if fitted else None,
            "reference_size": self.reference_size,
            "n_categories": self.n_categories,
            "slot": self.slot.tolist(),
            "cell_codes": list(self.cell_codes),
            "reference_counts": [int(v) for v in self.reference_counts],
            "history": self.history.tolist(),
            "open_counts": [int(v) for v in self.open_counts],
            "open_size": self.open_size,
            "last_score": self.last_score if math.isfinite(self.last_score) else None,
            "n_seen": self.n_seen,
            "n_alarms": self.n_alarms,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("name") != cls.name:
            raise ValueError(f"state of {state.get('name')!r}, not {cls.name!r}")
        det = cls(**state["params"])
        det.reference_size = int(state["reference_size"])
        if state["threshold"] is not None:
            det.threshold = float(state["threshold"])
            det.n_categories = int(state["n_categories"])
            det.slot = np.asarray(state["slot"], dtype=np.int64)
            det.cell_codes = list(state["cell_codes"])
            det._set_reference(np.asarray(state["reference_counts"], dtype=np.int64))
            det.history = np.asarray(state["history"], dtype=np.int64).reshape(-1, det.n_cells)
            det.open_counts = np.asarray(state["open_counts"], dtype=np.int64)
            det.open_size = int(state["open_size"])
        last = state.get("last_score")
        det.last_score = float(last) if last is not None else 0.0
        det.n_seen = int(state["n_seen"])
        det.n_alarms = int(state["n_alarms"])
        return det
