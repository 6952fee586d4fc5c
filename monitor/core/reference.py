"""Reference profiles: what "normal" looks like for one model, built from training data or from
the model's first events (warm-up).

A profile keeps, per feature, the same bounded statistics a window keeps (`feature_stats`), the
feature's type (inferred, or declared in config), the reference categories, and a row-aligned
reservoir sample that detectors calibrate their thresholds on. Its `version` is a hash of its
content, so every alert can say exactly which reference it was judged against.

>>> builder = ReferenceBuilder("fraud", sample_size=100)
>>> for i in range(1000):
...     builder.add({"amount": float(i % 50), "country": "DE" if i % 3 else "FR"}, prediction=0.1)
>>> profile = builder.build()
>>> profile.feature_types()
{'amount': 'numeric', 'country': 'categorical'}
>>> profile.features["country"].categories, profile.n_rows, len(profile.sample["amount"])
(['DE', 'FR'], 1000, 100)
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from monitor.contracts.config import FeatureType
from monitor.core.feature_stats import CategoryStats, NumericStats

PREDICTION = "__prediction__"
"""Name under which the model's own output is profiled like a feature (prediction drift)."""

INFERENCE_ROWS = 1000
"""Feature types are inferred from the first rows (declare them in config to override); later
rows are added to the statistics in chunks of this many (numpy works per batch)."""


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def infer_type(values: Iterable[Any]) -> FeatureType:
    """Numeric when every non-null value is a number (booleans are categories).

    >>> [infer_type(values).value for values in ([1, 2.5, None], ["a", 1], [True, False])]
    ['numeric', 'categorical', 'categorical']
    """
    seen = [v for v in values if v is not None]
    return FeatureType.numeric if seen and all(is_number(v) for v in seen) else FeatureType.categorical


def category_text(value: Any) -> str:
    """Categories are compared as text: `True` -> "true", `3` -> "3"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


@dataclass
class FeatureReference:
    name: str
    type: FeatureType
    stats: NumericStats | CategoryStats
    categories: list[str]
    """Reference categories, most frequent first (categorical only); their order gives the codes."""

    def to_state(self) -> dict[str, Any]:
        return {"type": self.type.value, "stats": self.stats.to_state(), "categories": self.categories}

    @classmethod
    def from_state(cls, name: str, state: dict[str, Any]) -> FeatureReference:
        kind = FeatureType(state["type"])
        stats_cls = NumericStats if kind is FeatureType.numeric else CategoryStats
        return cls(name, kind, stats_cls.from_state(state["stats"]), list(state["categories"]))


@dataclass
class ReferenceProfile:
    model_id: str
    version: str
    created_at: str
    source: str
    n_rows: int
    features: dict[str, FeatureReference]
    """Every profiled column, the prediction included under `PREDICTION`."""
    sample: dict[str, list[Any]]
    """Row-aligned reservoir: `sample[f][i]` and `sample[g][i]` come from the same row."""

    def feature_types(self, include_prediction: bool = False) -> dict[str, str]:
        return {name: ref.type.value for name, ref in self.features.items() if include_prediction or name != PREDICTION}

    def numeric_sample(self, name: str) -> np.ndarray:
        """Non-null reference values of a numeric feature."""
        return np.array([v for v in self.sample.get(name, []) if is_number(v)], dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "version": self.version,
            "created_at": self.created_at,
            "source": self.source,
            "n_rows": self.n_rows,
            "features": {name: ref.to_state() for name, ref in self.features.items()},
            "sample": self.sample,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfile:
        return cls(
            model_id=data["model_id"],
            version=data["version"],
            created_at=data["created_at"],
            source=data["source"],
            n_rows=data["n_rows"],
            features={name: FeatureReference.from_state(name, s) for name, s in data["features"].items()},
            sample={name: list(values) for name, values in data["sample"].items()},
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        return cls.from_dict(orjson.loads(Path(path).read_bytes()))


class ReferenceBuilder:
    """Streams rows into a profile: types from the first `INFERENCE_ROWS` rows (unless declared),
    exact counts and moments, KLL quantiles, capped categories and a reservoir sample."""

    def __init__(
        self,
        model_id: str,
        declared_types: Mapping[str, FeatureType] | None = None,
        *,
        max_categories: int = 100,
        max_features: int = 200,
        sample_size: int = 5000,
        source: str = "",
        seed: int = 0,
    ):
        self.model_id = model_id
        self.declared_types = dict(declared_types or {})
        self.max_categories = max_categories
        self.max_features = max_features
        self.sample_size = sample_size
        self.source = source
        self._random = random.Random(seed)
        self._pending: list[dict[str, Any]] = []
        self._types: dict[str, FeatureType] | None = None
        self._stats: dict[str, NumericStats | CategoryStats] = {}
        self._sample: list[tuple[int, dict[str, Any]]] = []
        self.n_rows = 0
        self.dropped_features: set[str] = set()
        """Columns beyond `max_features`, not profiled."""

    def to_state(self) -> dict[str, Any]:
        """A warm-up in progress, JSON-safe (bounded: at most `sample_size` + `INFERENCE_ROWS` rows)."""
        version, internal, gauss = self._random.getstate()
        return {
            "model_id": self.model_id,
            "declared_types": {name: kind.value for name, kind in self.declared_types.items()},
            "max_categories": self.max_categories,
            "max_features": self.max_features,
            "sample_size": self.sample_size,
            "source": self.source,
            "random": [version, list(internal), gauss],
            "pending": self._pending,
            "types": None if self._types is None else {name: kind.value for name, kind in self._types.items()},
            "stats": {name: stats.to_state() for name, stats in self._stats.items()},
            "sample": [[number, row] for number, row in self._sample],
            "n_rows": self.n_rows,
            "dropped_features": sorted(self.dropped_features),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReferenceBuilder:
        builder = cls(
            state["model_id"],
            {name: FeatureType(kind) for name, kind in state["declared_types"].items()},
            max_categories=state["max_categories"],
            max_features=state["max_features"],
            sample_size=state["sample_size"],
            source=state["source"],
        )
        version, internal, gauss = state["random"]
        builder._random.setstate((version, tuple(internal), gauss))
        builder._pending = list(state["pending"])
        if state["types"] is not None:
            builder._types = {name: FeatureType(kind) for name, kind in state["types"].items()}
            builder._stats = {
                name: (NumericStats if builder._types[name] is FeatureType.numeric else CategoryStats).from_state(s)
                for name, s in state["stats"].items()
            }
        builder._sample = [(number, row) for number, row in state["sample"]]
        builder.n_rows = state["n_rows"]
        builder.dropped_features = set(state["dropped_features"])
        return builder

    def add(self, features: Mapping[str, Any], prediction: Any = None) -> None:
        # Lists (embeddings) are not profiled: a declared `vector` feature is the embedding
        # signal's, an undeclared one the drift monitor counts as unknown. Kept, 5,000 rows of
        # 384 numbers would be most of a checkpoint.
        row = {name: value for name, value in features.items() if type(value) is not list}
        if prediction is not None:
            row[PREDICTION] = prediction
        self.n_rows += 1
        self._reservoir(row)
        self._pending.append(row)
        if len(self._pending) >= INFERENCE_ROWS:
            if self._types is None:
                self._settle_types()
            else:
                self._accumulate(self._pending)
                self._pending = []

    def _reservoir(self, row: dict[str, Any]) -> None:
        # Rows keep their arrival number: the sample is put back in arrival order at the end,
        # because calibration bootstraps it in blocks to keep its autocorrelation.
        if len(self._sample) < self.sample_size:
            self._sample.append((self.n_rows, row))
        else:
            slot = self._random.randrange(self.n_rows)
            if slot < self.sample_size:
                self._sample[slot] = (self.n_rows, row)

    def _settle_types(self) -> None:
        names = [name for name in dict.fromkeys(n for row in self._pending for n in row) if name != PREDICTION]
        self.dropped_features = set(names[self.max_features :])
        names = names[: self.max_features]
        if any(PREDICTION in row for row in self._pending):
            names.append(PREDICTION)
        self._types = {
            name: self.declared_types.get(name) or infer_type(row.get(name) for row in self._pending) for name in names
        }
        self._stats = {
            name: NumericStats() if kind is FeatureType.numeric else CategoryStats(self.max_categories)
            for name, kind in self._types.items()
        }
        pending, self._pending = self._pending, []
        self._accumulate(pending)

    def _accumulate(self, rows: list[dict[str, Any]]) -> None:
        assert self._types is not None
        for name, kind in self._types.items():
            column = [row.get(name) for row in rows]
            stats = self._stats[name]
            if kind is FeatureType.numeric:
                numbers = [v for v in column if is_number(v)]
                nulls = sum(v is None for v in column)
                stats.update(np.array(numbers, dtype=float), nulls=nulls, mismatches=len(column) - len(numbers) - nulls)
            else:
                stats.update([None if v is None else category_text(v) for v in column])

    def build(self) -> ReferenceProfile:
        if self.n_rows == 0:
            raise ValueError(f"reference for model {self.model_id!r}: no rows")
        if self._types is None:
            self._settle_types()
        elif self._pending:
            self._accumulate(self._pending)
            self._pending = []
        assert self._types is not None
        features = {}
        for name, kind in self._types.items():
            stats = self._stats[name]
            categories = []
            if isinstance(stats, CategoryStats):
                categories = [c for c, _ in sorted(stats.frequencies.items(), key=lambda item: (-item[1], item[0]))]
            features[name] = FeatureReference(name, kind, stats, categories)
        rows = [row for _, row in sorted(self._sample, key=lambda numbered: numbered[0])]
        sample = {name: [self._sample_value(row.get(name), kind) for row in rows] for name, kind in self._types.items()}
        # The hash covers exact statistics, categories and the seeded sample, not the KLL sketch,
        # whose compaction is randomised: the same data gives the same version.
        body = {
            "model_id": self.model_id,
            "n_rows": self.n_rows,
            "features": {
                name: {**ref.to_state(), "stats": {k: v for k, v in ref.stats.to_state().items() if k != "sketch"}}
                for name, ref in features.items()
            },
            "sample": sample,
        }
        version = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        return ReferenceProfile(
            model_id=self.model_id,
            version=version,
            created_at=datetime.now(UTC).isoformat(),
            source=self.source,
            n_rows=self.n_rows,
            features=features,
            sample=sample,
        )

    @staticmethod
    def _sample_value(value: Any, kind: FeatureType) -> Any:
        if value is None:
            return None
        if kind is FeatureType.numeric:
            return float(value) if is_number(value) else None
        return category_text(value)
