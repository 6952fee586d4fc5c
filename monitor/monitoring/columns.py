"""Turn a batch of events into typed columns, counting nulls and type mismatches on the way.

Detectors take arrays, not events: a batch of predictions becomes, per numeric feature, the
non-null values and their positions in the batch; per categorical feature, category codes against
the reference (the last code standing for every unseen value).

>>> col = numeric_column([1.0, None, "abc", 4])
>>> col.values.tolist(), col.positions.tolist(), col.nulls, col.mismatches
([1.0, 4.0], [0, 3], 1, 1)
>>> codes, unseen, nulls = category_codes(["DE", "FR", None, "XX"], {"DE": 0, "FR": 1})
>>> codes.tolist(), unseen, nulls
([0, 1, 2], 1, 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.core.reference import category_text


@dataclass(frozen=True, slots=True)
class NumericColumn:
    values: np.ndarray
    """Non-null numeric values, float64, in batch order."""
    positions: np.ndarray
    """Index in the batch of each value."""
    nulls: int
    mismatches: int
    """Values that are not numbers (strings, booleans)."""


def numeric_column(raw: Sequence[Any]) -> NumericColumn:
    array = np.array(raw) if raw else np.empty(0)
    if array.dtype.kind in "fiu":  # every value a number: the common case, no Python loop
        return NumericColumn(array.astype(float, copy=False), np.arange(len(raw)), 0, 0)
    values, positions, nulls, mismatches = [], [], 0, 0
    for position, value in enumerate(raw):
        if value is None:
            nulls += 1
        elif type(value) is float or type(value) is int:
            values.append(value)
            positions.append(position)
        else:
            mismatches += 1
    return NumericColumn(np.array(values, dtype=float), np.array(positions, dtype=np.int64), nulls, mismatches)


def category_codes(raw: Sequence[Any], codes: Mapping[str, int]) -> tuple[np.ndarray, int, int]:
    """Codes of the non-null values (`len(codes)` for unseen ones), the unseen count, the null count."""
    unseen_code = len(codes)
    out = [codes.get(v if type(v) is str else category_text(v), unseen_code) for v in raw if v is not None]
    array = np.array(out, dtype=np.int64)
    return array, int((array == unseen_code).sum()), len(raw) - len(out)
