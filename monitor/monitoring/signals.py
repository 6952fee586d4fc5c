"""Optional signals a model's configuration turns on, beside its drift monitor and evaluator.

A signal sees the model's predictions batch by batch, in the drift monitor's windows: `observe`
gets the events of one window at a time, and `close_window` is called where the drift monitor's
clock closed one (count or event time), so a signal's windows are the model's windows without a
clock of its own. Its findings go through the model's alert lifecycle like every other.

A model with none configured builds none: the hot path is unchanged (`ModelMonitor` loops over
an empty list). Each signal lives in its own module and registers here with a `SignalType`:
whether a model asks for it, how to build it, and how to resume it from its state.

>>> from monitor.contracts.config import MonitorConfig
>>> config = MonitorConfig()
>>> build_signals(config.model("fraud"), config)
{}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import ModelConfig, MonitorConfig
from monitor.core.finding import Finding


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
    create: Callable[[ModelConfig, MonitorConfig], Signal]
    restore: Callable[[ModelConfig, MonitorConfig, dict[str, Any]], Signal]


SIGNAL_TYPES: dict[str, SignalType] = {}
"""Signal name (its key in a model's state) -> its type."""


def build_signals(
    model: ModelConfig, config: MonitorConfig, states: dict[str, dict[str, Any]] | None = None
) -> dict[str, Signal]:
    """The signals `model` asks for, resumed from `states` where it holds theirs."""
    states = states or {}
    signals: dict[str, Signal] = {}
    for name, kind in SIGNAL_TYPES.items():
        if kind.wanted(model):
            state = states.get(name)
            signals[name] = kind.create(model, config) if state is None else kind.restore(model, config, state)
    return signals
