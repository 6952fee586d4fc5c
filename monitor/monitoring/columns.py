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

from collections import Counter
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


_TYPE_OF = np.frompyfunc(type, 1, 1)


def numeric_column(raw: Sequence[Any]) -> NumericColumn:
    array = np.array(raw) if len(raw) else np.empty(0)
    if array.dtype.kind in "fiu":  # every value a number: the common case
        return NumericColumn(array.astype(float, copy=False), np.arange(len(raw)), 0, 0)
    objects = np.empty(len(raw), dtype=object)
    objects[:] = raw
    types = _TYPE_OF(objects)
    positions = np.flatnonzero(np.equal(types, float) | np.equal(types, int))
    nulls = int(np.equal(types, type(None)).sum())
    values = objects[positions].astype(float)
    return NumericColumn(values, positions, nulls, len(raw) - len(positions) - nulls)


@dataclass(frozen=True, slots=True)
class CategoryColumn:
    codes: np.ndarray
    """Code of each non-null value, in batch order (`len(codes)` of the mapping for unseen ones)."""
    positions: np.ndarray
    """Index in the batch of each code."""
    unseen: int
    nulls: int
    counts: dict[str | None, int]
    """Occurrences of each value as text (None: nulls), for the window's frequencies."""


def category_column(raw: Sequence[Any], codes: Mapping[str, int]) -> CategoryColumn:
    """Codes of the non-null values against `codes`; the work is per distinct value, not per event.

    >>> column = category_column(["DE", None, "XX", "DE", True], {"DE": 0, "true": 1})
    >>> column.codes.tolist(), column.positions.tolist(), column.unseen, column.nulls, column.counts
    ([0, 2, 0, 1], [0, 2, 3, 4], 1, 1, {'DE': 2, None: 1, 'XX': 1, 'True': 1})
    """
    unseen_code = len(codes)
    counts = Counter(raw)
    nulls = counts.get(None, 0)
    if all(type(value) is str for value in counts if value is not None):
        lookup = {value: codes.get(value, unseen_code) for value in counts if value is not None}
        text_counts: dict[str | None, int] = dict(counts)
    else:  # True, 1 and 1.0 are one key of a Counter, and different categories
        lookup = None
        text_counts = dict(Counter(None if v is None else str(v) for v in raw))
    if nulls:
        present = np.fromiter((v is not None for v in raw), dtype=bool, count=len(raw))
        positions = np.flatnonzero(present)
        values = [raw[i] for i in positions]
    else:
        positions, values = np.arange(len(raw)), raw
    if lookup is None:
        code_of = lambda v: codes.get(category_text(v), unseen_code)  # noqa: E731
        array = np.fromiter(map(code_of, values), dtype=np.int64, count=len(values))
    else:
        array = np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=len(values))
    return CategoryColumn(array, positions, int((array == unseen_code).sum()), nulls, text_counts)


def category_codes(raw: Sequence[Any], codes: Mapping[str, int]) -> tuple[np.ndarray, int, int]:
    """Codes of the non-null values (`len(codes)` for unseen ones), the unseen count, the null count."""
    column = category_column(raw, codes)
    return column.codes, column.unseen, column.nulls
