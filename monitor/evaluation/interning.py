"""Small integer codes for a model's versions, slices, classes and metric scopes, under caps.

The evaluator works on arrays, so every string of an outcome (its version, its slice values,
its predicted and actual class) becomes a code once, here, and the codes index the metric
accumulators. The caps of design principle 5 live here too: a version, slice value or class
beyond its cap becomes `other` and is counted, so a stream of distinct values cannot grow the
state without bound.

A scope is one metric group: `("all",)`, `("version", name)` or `("slice", name, value)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from monitor.contracts.config import CapsConfig, ModelConfig
from monitor.evaluation.labels import OTHER, class_name

MAX_SLICE_NAMES = 16
"""Slice names (dimensions) tracked per model; values per name are capped by `caps.max_slice_values`."""

OVERALL = ("all",)

SliceKey = tuple[tuple[str, str], ...]


class Interner:
    """Codes of one model's versions, slice tuples, classes and scopes.

    `counters` is the evaluator's, where values over a cap are counted; `on_version` is called
    with each new version's code (the serving check keeps all-time stats per version)."""

    def __init__(
        self, model: ModelConfig, caps: CapsConfig, counters: dict[str, int], on_version: Callable[[int], None]
    ):
        self.model = model
        self.caps = caps
        self.counters = counters
        self.on_version = on_version
        self.positive_name = class_name(model.positive_class)
        self.versions: list[str] = []
        self.version_code: dict[str, int] = {}
        self.version_scope: list[int] = []
        self.slice_tuples: list[SliceKey] = []
        self.slice_code: dict[SliceKey, int] = {}
        self.slice_scopes: list[list[int]] = []
        self.slice_table = np.zeros((0, 0), dtype=np.int64)
        self.slice_values: dict[str, set[str]] = {}
        self.scopes: list[tuple[str, ...]] = []
        self.scope_index: dict[tuple[str, ...], int] = {}
        self.scope(OVERALL)
        self.classes: list[str] = []
        self.class_index: dict[str, int] = {}
        self.class_cache: dict[Any, int] = {}
        self.positive_code = self.intern_class(self.positive_name)
        self.negative_code = -1

    def scope(self, scope: tuple[str, ...]) -> int:
        index = self.scope_index.get(scope)
        if index is None:
            index = self.scope_index[scope] = len(self.scopes)
            self.scopes.append(scope)
        return index

    def version(self, name: str) -> int:
        code = self.version_code.get(name)
        if code is not None:
            return code
        if len(self.versions) >= self.caps.max_model_versions and name != OTHER:
            self.counters["versions_over_cap"] += 1
            return self.version(OTHER)
        code = self.version_code[name] = len(self.versions)
        self.versions.append(name)
        self.version_scope.append(self.scope(("version", name)))
        self.on_version(code)
        return code

    def slices(self, pairs: SliceKey) -> int:
        code = self.slice_code.get(pairs)
        if code is not None:
            return code
        allowed = set(self.model.slices) if self.model.slices else None
        capped = []
        over = False
        for name, value in pairs:
            if allowed is not None and name not in allowed:
                continue
            values = self.slice_values.get(name)
            if values is None:
                if len(self.slice_values) >= MAX_SLICE_NAMES:
                    over = True
                    continue
                values = self.slice_values[name] = set()
            if value not in values:
                if len(values) >= self.caps.max_slice_values and value != OTHER:
                    over = True
                    value = OTHER
                else:
                    values.add(value)
            capped.append((name, value))
        key = tuple(capped)
        if over:
            self.counters["slice_values_over_cap"] += 1
        code = self.slice_code.get(key)
        if code is None:
            code = self._add_slice_tuple(key)
        if not over:
            self.slice_code[pairs] = code
        return code

    def _add_slice_tuple(self, key: SliceKey) -> int:
        code = self.slice_code[key] = len(self.slice_tuples)
        self.slice_tuples.append(key)
        self.slice_scopes.append([self.scope(("slice", name, value)) for name, value in key])
        self.slice_table = np.zeros((0, 0), dtype=np.int64)  # rebuilt on the next use
        return code

    def intern_class(self, name: str) -> int:
        code = self.class_index.get(name)
        if code is None:
            if len(self.classes) >= self.caps.max_categories and name != OTHER:
                self.counters["classes_over_cap"] += 1
                return self.intern_class(OTHER)
            code = self.class_index[name] = len(self.classes)
            self.classes.append(name)
        return code

    def klass(self, value: Any) -> int:
        """Class code of a raw prediction or label (True, 1 and 1.0 are one class)."""
        code = self.class_cache.get(value)
        if code is None:
            code = self.intern_class(class_name(value))
            if len(self.class_cache) < 4 * self.caps.max_categories and self.classes[code] != OTHER:
                self.class_cache[value] = code
        return code

    def negative(self) -> int:
        """Class code of "not positive", for score predictions (a probability, no class)."""
        if self.negative_code < 0:
            self.negative_code = self.intern_class("0" if self.positive_name == "1" else f"not {self.positive_name}")
        return self.negative_code

    def scope_rows(self, versions: np.ndarray, slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(group, row) pairs: every row in the overall scope, its version's and its slices'."""
        n = len(versions)
        rows = np.arange(n)
        version_scope = np.asarray(self.version_scope, dtype=np.int64)
        groups = [np.zeros(n, dtype=np.int64), version_scope[versions]]
        row_parts = [rows, rows]
        width = max((len(s) for s in self.slice_scopes), default=0)
        if width:
            if self.slice_table.shape != (len(self.slice_scopes), width):
                table = np.full((len(self.slice_scopes), width), -1, dtype=np.int64)
                for code, scopes in enumerate(self.slice_scopes):
                    table[code, : len(scopes)] = scopes
                self.slice_table = table
            chosen = self.slice_table[slices]
            for column in range(width):
                scope = chosen[:, column]
                present = scope >= 0
                groups.append(scope[present])
                row_parts.append(rows[present])
        return np.concatenate(groups), np.concatenate(row_parts)

    def slice_scope_items(self) -> list[tuple[int, str]]:
        """(scope index, `name=value`) of every slice scope."""
        return [(index, f"{scope[1]}={scope[2]}") for index, scope in enumerate(self.scopes) if scope[0] == "slice"]

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The interning part of the evaluator's state (its keys and order are the format's)."""
        return {
            "versions": self.versions,
            "slice_tuples": [[list(p) for p in pairs] for pairs in self.slice_tuples],
            "slice_values": {name: sorted(values) for name, values in self.slice_values.items()},
            "scopes": [list(s) for s in self.scopes],
            "classes": self.classes,
            "negative_code": self.negative_code,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.versions, self.version_code, self.version_scope = [], {}, []
        self.scopes, self.scope_index = [], {}
        for scope in state["scopes"]:
            self.scope(tuple(scope))
        for name in state["versions"]:
            self.version(name)
        self.slice_values = {name: set(values) for name, values in state["slice_values"].items()}
        for pairs in state["slice_tuples"]:
            self._add_slice_tuple(tuple((name, value) for name, value in pairs))
        self.classes, self.class_index, self.class_cache = [], {}, {}
        for name in state["classes"]:
            self.intern_class(name)
        self.positive_code = self.class_index[self.positive_name]
        self.negative_code = state["negative_code"]
