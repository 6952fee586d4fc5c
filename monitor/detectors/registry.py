"""Detectors by name, so configuration can say `detectors: {numeric: [cusum, ks]}`.

>>> sorted(DETECTORS)[:3]  # doctest: +SKIP
['adwin', 'bernoulli_cusum', 'category_cusum']
>>> create("no_such_test")
Traceback (most recent call last):
...
ValueError: Unknown detector 'no_such_test'. Valid values are: ...
"""

from __future__ import annotations

from typing import Any

from monitor.detectors.base import Detector

DETECTORS: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its `name`."""
    if cls.name in DETECTORS:
        raise ValueError(f"detector {cls.name!r} registered twice")
    DETECTORS[cls.name] = cls
    return cls


def create(name: str, **params: Any) -> Detector:
    """A new, unfitted detector; a bad name or parameter fails here, naming the valid values."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ValueError(f"Unknown detector {name!r}. Valid values are: {sorted(DETECTORS)}") from None
    return cls(**params)
