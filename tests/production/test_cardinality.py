"""Cardinality bounds: a flood of distinct category and slice values cannot grow a model's state.

The same run as `bench/cardinality.py` (which does 1,000,000 values and 100,000 slices and
reports RSS), smaller: 30,500 predictions, each with a new value of the categorical feature
`user_agent`, over 10,000 slice values of `customer`, every prediction joined by its outcome.
Bound stated and asserted: the state (msgpack of `FleetMonitor.to_state()`, what the worker
writes to its changelog) stays under 1 MiB, and within 32 KiB of a control run of the same
length with 10 values and 10 slices; the caps keep `max_categories` values and
`max_slice_values` slices, and count the rest.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest

from monitor.contracts.config import MonitorConfig

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 30_500  # half a window past a window's end, so the open window's statistics show
SLICES = 10_000
STATE_BOUND_BYTES = 1024 * 1024
CARDINALITY_ALLOWANCE_BYTES = 32 * 1024
"""What 100 kept categories and 50 kept slice values may add to the state, generously."""


def _bench():
    spec = importlib.util.spec_from_file_location("bench_cardinality", ROOT / "bench" / "cardinality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs():
    bench = _bench()
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 2000}, "window": {"size_events": 1000}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        flood = bench.run_flood(EVENTS, EVENTS, SLICES, [10_500], config)
        control = bench.run_flood(EVENTS, 10, 10, [10_500], config)
    return config, flood, control


def test_state_stays_bounded_under_a_million_value_flood(runs):
    config, flood, control = runs
    early, last = flood
    assert last.state_bytes < STATE_BOUND_BYTES, f"{last.state_bytes:,} bytes"
    # Distinct values cost no more than the caps allow: the flood's state is the control's.
    assert last.state_bytes <= control[-1].state_bytes + CARDINALITY_ALLOWANCE_BYTES, (
        last.state_bytes,
        control[-1].state_bytes,
    )
    # 20,000 more distinct values between the checkpoints grew the state no more than in the control.
    assert (
        last.state_bytes - early.state_bytes
        <= control[-1].state_bytes - control[0].state_bytes + CARDINALITY_ALLOWANCE_BYTES
    )


def test_categories_are_capped_and_the_rest_counted(runs):
    config, flood, _ = runs
    last = flood[-1]
    assert last.reference_categories == config.caps.max_categories
    assert last.kept_categories == config.caps.max_categories
    assert last.window_overflow == 500 - config.caps.max_categories  # the open window's 500 events, all distinct
    assert last.quality_alerts >= 1  # cardinality over its cap is a data-quality alert on the feature


def test_slice_values_are_capped_and_the_rest_counted(runs):
    config, flood, _ = runs
    last = flood[-1]
    cap = config.caps.max_slice_values
    assert last.kept_slice_values == cap + 1  # the first `cap` values and `other`
    # The join store folds values past the cap into `other`: every prediction whose value
    # (i % SLICES) is not among the first `cap` seen.
    first_values = sum(1 for i in range(EVENTS) if i % SLICES < cap)
    assert last.join_slices_over_cap == EVENTS - first_values
