"""Optional signals a model's configuration turns on, beside its drift monitor and evaluator.

A signal sees the model's predictions batch by batch, in the drift monitor's windows: `observe`
gets the events of one window at a time, and `close_window` is called where the drift monitor's
clock closed one (count or event time), so a signal's windows are the model's windows without a
clock of its own. Its findings go through the model's alert lifecycle like every other.

A model with none configured builds none: the hot path is unchanged (`ModelMonitor` loops over
an empty list). Each signal lives in its own module and registers here with a `SignalType`:
whether a model asks for it, how many calibrated detectors it adds to the model's false-alarm
budget, how to build it, and how to resume it from its state.

The budget is the model's, whatever runs: `drift.count_detectors` adds each wanted signal's
detectors to the drift monitor's, and every detector, the drift monitor's and the signals',
is calibrated to the same share (`drift.detector_run_length`). Turning a signal on makes the
model's other detectors a little stricter; it does not raise the model's false-alarm rate. A
signal gets the run length from the drift monitor (`DriftMonitor.run_length`), once that has its
reference: the count depends on the reference's features.

>>> from monitor.contracts.config import MonitorConfig
>>> config = MonitorConfig()
>>> from monitor.monitoring.drift import DriftMonitor
>>> build_signals(config.model("fraud"), config, DriftMonitor(config.model("fraud"), config))
{}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import FeatureType, ModelConfig, MonitorConfig
from monitor.core.finding import Finding

if TYPE_CHECKING:
    from monitor.monitoring.drift import DriftMonitor


class Signal(Protocol):
    """What `ModelMonitor` needs of a signal."""

    def observe(self, predictions: PredictionBatch) -> list[Finding]:
        """Predictions of one window (a part of it), in input order."""
        ...

    def close_window(self, at: datetime, offset: int | None) -> list[Finding]:
        """The model's window closed at event time `at`, at input position `offset`."""
        ...

    def to_state(self) -> dict[str, Any]:
        """JSON-safe; the `SignalType.restore` of it resumes exactly here."""
        ...


@dataclass(frozen=True)
class SignalType:
    wanted: Callable[[ModelConfig], bool]
    """Whether this model's configuration asks for the signal."""
    detectors: Callable[[ModelConfig, dict[str, FeatureType]], int]
    """How many calibrated detectors it shares the model's drift budget with, given the types of
    the reference's features (`drift.count_detectors`)."""
    create: Callable[[ModelConfig, MonitorConfig, DriftMonitor], Signal]
    """Given the model's drift monitor, whose `run_length()` is what each of the signal's
    detectors is calibrated to once the drift monitor has its reference."""
    restore: Callable[[ModelConfig, MonitorConfig, DriftMonitor, dict[str, Any]], Signal]


SIGNAL_TYPES: dict[str, SignalType] = {}
"""Signal name (its key in a model's state) -> its type; filled by `signal_types`."""

_registered = False


def signal_types() -> dict[str, SignalType]:
    """Every signal type by name. The modules are imported on first use, not at import time:
    they use the drift monitor, which imports this module to count their detectors."""
    global _registered
    if not _registered:
        from monitor.monitoring.attribution import ATTRIBUTION
        from monitor.monitoring.embeddings import EMBEDDINGS
        from monitor.monitoring.slice_drift import SLICE_DRIFT

        SIGNAL_TYPES["slice_drift"] = SLICE_DRIFT
        SIGNAL_TYPES["attribution"] = ATTRIBUTION
        SIGNAL_TYPES["embeddings"] = EMBEDDINGS
        _registered = True
    return SIGNAL_TYPES


def signal_detectors(model: ModelConfig, feature_types: dict[str, FeatureType]) -> int:
    """Calibrated detectors the signals `model` asks for add to its drift budget."""
    return sum(kind.detectors(model, feature_types) for kind in signal_types().values() if kind.wanted(model))


def build_signals(
    model: ModelConfig, config: MonitorConfig, drift: DriftMonitor, states: dict[str, dict[str, Any]] | None = None
) -> dict[str, Signal]:
    """The signals `model` asks for, beside its drift monitor, resumed from `states` where it
    holds theirs."""
    states = states or {}
    signals: dict[str, Signal] = {}
    for name, kind in signal_types().items():
        if kind.wanted(model):
            state = states.get(name)
            signals[name] = (
                kind.create(model, config, drift) if state is None else kind.restore(model, config, drift, state)
            )
    return signals
