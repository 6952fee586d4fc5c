"""Every script in bench/ imports against the current package (a renamed helper once broke
`detector_accuracy.py` unnoticed: no test ran it), and `delay_bounds.py`'s oracle threshold gives
the run length it is asked for."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "bench").glob("*.py"))
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.stem for path in SCRIPTS])
def test_the_script_imports(script, monkeypatch):
    name = f"bench_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)


def test_the_oracles_threshold_gives_the_run_length_asked():
    """Calibrated on one sample of the pre-change law, the oracle's CUSUM raises about one alarm
    per run length on another (excursions reaching h: each is an alarm of a CUSUM restarted at 0)."""
    from delay_bounds import tail_level, threshold

    from monitor.detectors.calibration import excursion_maxima

    rng = np.random.default_rng(5)
    shift = 0.5
    llr = lambda x: shift * x - shift * shift / 2  # noqa: E731  N(0.5, 1) against N(0, 1)
    h = threshold(tail_level(llr(rng.standard_normal(2_000_000))), 20_000)
    heights, _ = excursion_maxima(llr(rng.standard_normal(4_000_000)).reshape(1000, -1))
    alarms = int((heights >= h).sum())
    assert 150 <= alarms <= 260  # 200 asked; Lorden's h = ln(20,000) would give far fewer
    assert h < np.log(20_000) - 1
