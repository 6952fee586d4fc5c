"""The evaluator's saved state stays identical for the same inputs, and old states resume.

Workers restore states saved by the previous release (a changelog topic outlives a deploy), so
`to_state()` is a format: the fixtures were written by the evaluator before it was split into
modules (`state_scenarios.py` says how), and every scenario must still produce the same JSON,
the same findings and the same reports, and resume from the saved state to the same end.

"The same" is exact for keys, strings, integers and structure, and to 1e-9 relative for floats:
numpy picks its SIMD kernels by CPU (AVX-512 on the machine that wrote the fixtures, AVX2 on
others), and their sums and logarithms differ in the last bits (e.g. a calibrated limit
37.120377824388754 against 37.120377824387404). Any change of logic moves far more than that.
"""

from __future__ import annotations

import json
import math

import pytest
from state_scenarios import SCENARIOS, fixture_path

from monitor.evaluation.evaluator import ModelEvaluator


def fixture(name: str) -> dict:
    return json.loads(fixture_path(name).read_text())


def as_json(value: object) -> object:
    return json.loads(json.dumps(value))


def contained(old: object, new: object) -> bool:
    """`new` holds everything `old` does, with the same values (a mapping may gain keys, also
    inside a list: a model's settings in `models`)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(key in new and contained(value, new[key]) for key, value in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(old) == len(new) and all(map(contained, old, new))
    return old == new


FLOAT_TOLERANCE = 1e-9
"""Relative: far above the last-bit differences of numpy's kernels between CPUs, far below any
change of logic."""


def difference(new: object, old: object, path: str = "") -> str | None:
    """Where `new` differs from `old` (JSON values), or None: exact but for floats, which may
    differ by `FLOAT_TOLERANCE` relative."""
    if isinstance(old, dict) and isinstance(new, dict):
        if list(new) != list(old):
            return f"{path}: keys {list(new)} != {list(old)}"
        found = (difference(new[key], value, f"{path}.{key}") for key, value in old.items())
        return next((d for d in found if d is not None), None)
    if isinstance(old, list) and isinstance(new, list):
        if len(new) != len(old):
            return f"{path}: {len(new)} items != {len(old)}"
        found = (difference(n, o, f"{path}[{i}]") for i, (n, o) in enumerate(zip(new, old, strict=True)))
        return next((d for d in found if d is not None), None)
    if type(new) is float and type(old) is float:
        return None if math.isclose(new, old, rel_tol=FLOAT_TOLERANCE, abs_tol=0.0) else f"{path}: {new!r} != {old!r}"
    return None if type(new) is type(old) and new == old else f"{path}: {new!r} != {old!r}"


def same_state(new: str, old: str) -> None:
    """The same state (`difference`) but for the configuration the state embeds, which may only
    gain fields (the contract's changes are additive: a new setting must not fail every saved
    state)."""
    new_state, old_state = json.loads(new), json.loads(old)
    assert contained(old_state.pop("config"), new_state.pop("config"))
    assert difference(new_state, old_state) is None, difference(new_state, old_state)


def same(new: object, old: object) -> None:
    assert difference(as_json(new), old) is None, difference(as_json(new), old)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_state_and_findings_are_identical_to_the_previous_release(name):
    saved = fixture(name)
    result = SCENARIOS[name]()
    same_state(result["cut"], saved["cut"])  # buffered events included
    same_state(result["resumed"], saved["resumed"])
    same(result["cut_findings"], saved["cut_findings"])
    same(result["resumed_findings"], saved["resumed_findings"])
    for report in ("metrics", "window_metrics", "cbpe_report"):
        same(result[report], saved[report])


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_state_saved_by_the_previous_release_resumes_to_the_same_end(name):
    saved = fixture(name)

    def restore(_running: ModelEvaluator) -> ModelEvaluator:
        resumed = ModelEvaluator.from_state(json.loads(saved["cut"]))
        same_state(json.dumps(resumed.to_state(), allow_nan=False), saved["cut"])
        return resumed

    result = SCENARIOS[name](restore)
    same_state(result["resumed"], saved["resumed"])
    same(result["resumed_findings"], saved["resumed_findings"])
    for report in ("metrics", "window_metrics", "cbpe_report"):
        same(result[report], saved[report])
