"""The river wrappers' saved states stay readable: `fixtures/river_states.json` holds states of
`adwin` and `page_hinkley` saved with river 0.26.1 (the release Driftline was tested with), a
stream to continue them with, and what they then did. Each is loaded with the river installed
now, continued, and must raise the same alarms and end in the same state.

The wrappers save river's private fields (ADWIN's bincode window, Page-Hinkley's sums), so a
river release that changes them could make the states in a running deployment's changelogs
unreadable, or worse, read them as something else. pyproject.toml therefore pins river to the
tested range; to widen it, install the new release and run this test. Never regenerate the
fixture to make it pass: it stands for states already saved in production. If a release
changes the format, convert old states in the wrapper (`_load_detector`) and keep this fixture.
(`python tests/detectors/test_river_state.py` writes the fixture; only for a new format.)
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import river
from packaging.requirements import Requirement

import monitor.detectors  # noqa: F401  (registers every detector)
from monitor.detectors.registry import DETECTORS, create

FIXTURE = Path(__file__).parent / "fixtures" / "river_states.json"
ROOT = Path(__file__).resolve().parents[2]
RIVER_DETECTORS = ("adwin", "page_hinkley")


def _saved() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("name", RIVER_DETECTORS)
def test_a_state_saved_with_the_tested_river_resumes_identically(name):
    saved = _saved()
    case = saved["detectors"][name]
    detector = DETECTORS[name].from_state(case["state"])
    assert json.loads(json.dumps(detector.to_state())) == case["state"]  # read back as written
    alarms = detector.update_many(np.array(saved["stream"]))
    saved_with = saved["saved_with"]["river"]
    assert alarms == case["alarms"], f"{name}: a state saved with river {saved_with} resumed differently"
    assert detector.score == case["score"]
    assert json.loads(json.dumps(detector.to_state())) == case["state_after"]


@pytest.mark.parametrize("name", RIVER_DETECTORS)
def test_a_changed_river_field_is_caught(name):
    """The comparison above notices a state read as something else, not only one that fails
    to load: one number of the saved river fields changed changes what the detector does."""
    saved = _saved()
    case = saved["detectors"][name]
    state = json.loads(json.dumps(case["state"]))
    if name == "adwin":
        import base64

        window = bytearray(base64.b64decode(state["detector"]["window"]))
        assert window[:8] == np.float64(0.002).tobytes()  # river 0.26's layout starts with delta
        window[:8] = np.float64(0.5).tobytes()  # as if another field were read there
        state["detector"]["window"] = base64.b64encode(bytes(window)).decode("ascii")
    else:
        state["detector"]["_sum_increase"] += 49.0
    try:
        detector = DETECTORS[name].from_state(state)
        changed = detector.update_many(np.array(saved["stream"])) != case["alarms"] or (
            json.loads(json.dumps(detector.to_state())) != case["state_after"]
        )
    except Exception:  # refused outright: caught too
        changed = True
    assert changed


def test_the_installed_river_is_in_the_pinned_range():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "river"]
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in pin.specifier), (
        f"{pin}: no upper bound, so an upgrade could make saved states unreadable"
    )
    assert pin.specifier.contains(river.__version__), f"river {river.__version__} is outside {pin}"
    assert pin.specifier.contains(_saved()["saved_with"]["river"])


def _write_fixture() -> None:
    rng = np.random.default_rng(21)
    stream = np.round(np.r_[rng.standard_normal(600), rng.standard_normal(600) + 1.0], 6)
    detectors = {}
    for name in RIVER_DETECTORS:
        detector = create(name).fit(np.round(rng.standard_normal(2000), 6), run_length=10_000)
        detector.update_many(np.round(rng.standard_normal(1500), 6))
        state = json.loads(json.dumps(detector.to_state()))
        resumed = DETECTORS[name].from_state(state)
        alarms = resumed.update_many(stream)
        detectors[name] = {
            "state": state,
            "alarms": alarms,
            "score": resumed.score,
            "state_after": json.loads(json.dumps(resumed.to_state())),
        }
    fixture = {"saved_with": {"river": river.__version__}, "stream": stream.tolist(), "detectors": detectors}
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    if FIXTURE.exists() and "--force" not in sys.argv:
        sys.exit(f"{FIXTURE} exists: it stands for states saved in production; --force to overwrite")
    _write_fixture()
