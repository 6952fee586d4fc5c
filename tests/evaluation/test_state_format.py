"""The evaluator's saved state stays byte-identical for the same inputs, and old states resume.

Workers restore states saved by the previous release (a changelog topic outlives a deploy), so
`to_state()` is a format: the fixtures were written by the evaluator before it was split into
modules (`state_scenarios.py` says how), and every scenario must still produce the same JSON,
the same findings and the same reports, and resume from the saved state to the same end.
"""

from __future__ import annotations

import json

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


def same_state(new: str, old: str) -> None:
    """Byte for byte but for the configuration the state embeds, which may only gain fields
    (the contract's changes are additive: a new setting must not fail every saved state)."""
    new_state, old_state = json.loads(new), json.loads(old)
    assert contained(old_state.pop("config"), new_state.pop("config"))
    assert json.dumps(new_state, allow_nan=False) == json.dumps(old_state, allow_nan=False)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_state_and_findings_are_identical_to_the_previous_release(name):
    saved = fixture(name)
    result = SCENARIOS[name]()
    same_state(result["cut"], saved["cut"])  # buffered events included
    same_state(result["resumed"], saved["resumed"])
    assert as_json(result["cut_findings"]) == saved["cut_findings"]
    assert as_json(result["resumed_findings"]) == saved["resumed_findings"]
    for report in ("metrics", "window_metrics", "cbpe_report"):
        assert as_json(result[report]) == saved[report], report


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_state_saved_by_the_previous_release_resumes_to_the_same_end(name):
    saved = fixture(name)

    def restore(_running: ModelEvaluator) -> ModelEvaluator:
        resumed = ModelEvaluator.from_state(json.loads(saved["cut"]))
        same_state(json.dumps(resumed.to_state(), allow_nan=False), saved["cut"])
        return resumed

    result = SCENARIOS[name](restore)
    same_state(result["resumed"], saved["resumed"])
    assert as_json(result["resumed_findings"]) == saved["resumed_findings"]
    for report in ("metrics", "window_metrics", "cbpe_report"):
        assert as_json(result[report]) == saved[report], report
