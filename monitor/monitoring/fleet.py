"""`FleetMonitor`: every model's monitor, fed validated events, giving alerts.

This is the whole monitoring core behind one small API, used as is by `driftline replay` and by
the streaming worker. Alerts come with the input offset of the event whose processing raised
them, so replay can report `detected_at_offset`.

>>> from monitor.contracts.config import MonitorConfig
>>> fleet = FleetMonitor(MonitorConfig())
>>> fleet.observe([], [])
[]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from monitor.alerts.lifecycle import AlertLifecycle
from monitor.contracts.alert import Alert
from monitor.contracts.config import MonitorConfig
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.core.finding import Finding
from monitor.core.reference import ReferenceProfile
from monitor.monitoring.drift import DriftMonitor


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    alert: Alert
    offset: int | None
    """Input position of the event whose processing raised it."""


class ModelMonitor:
    """One model: drift monitor and alert lifecycle."""

    def __init__(self, model_id: str, config: MonitorConfig, state: dict[str, Any] | None = None):
        model = config.model(model_id)
        self.lifecycle = AlertLifecycle(config.alerting)
        if state is None:
            reference = ReferenceProfile.load(model.reference) if model.reference else None
            self.drift = DriftMonitor(model, config, reference)
        else:
            self.drift = DriftMonitor.from_state(model, config, state["drift"])
            self.lifecycle.restore(state["lifecycle"])

    def to_state(self) -> dict[str, Any]:
        """JSON-safe; `ModelMonitor(model_id, config, state)` resumes exactly where this left off."""
        return {"drift": self.drift.to_state(), "lifecycle": self.lifecycle.to_state()}

    def raise_alerts(self, findings: list[Finding]) -> list[RaisedAlert]:
        raised = []
        for finding in findings:
            alert = self.lifecycle.process_one(finding)
            if alert is not None:
                raised.append(RaisedAlert(alert, finding.offset))
        return raised


class FleetMonitor:
    def __init__(self, config: MonitorConfig):
        self.config = config
        self.models: dict[str, ModelMonitor] = {}
        self.dropped = Counter[str]()
        """Events not monitored, by reason (e.g. `max_models` reached)."""

    def model(self, model_id: str) -> ModelMonitor | None:
        monitor = self.models.get(model_id)
        if monitor is None:
            if len(self.models) >= self.config.caps.max_models:
                return None
            monitor = self.models[model_id] = ModelMonitor(model_id, self.config)
        return monitor

    def observe(self, events: Sequence[PredictionEvent | OutcomeEvent], offsets: Sequence[int]) -> list[RaisedAlert]:
        """Process a batch of validated events in order; alerts in order of their offsets."""
        by_model: dict[str, tuple[list[PredictionEvent], list[int]]] = {}
        for event, offset in zip(events, offsets, strict=True):
            if isinstance(event, PredictionEvent):
                batch = by_model.setdefault(event.model_id, ([], []))
                batch[0].append(event)
                batch[1].append(offset)
        raised: list[RaisedAlert] = []
        for model_id, (predictions, pred_offsets) in by_model.items():
            monitor = self.model(model_id)
            if monitor is None:
                self.dropped["max_models"] += len(predictions)
                continue
            raised += monitor.raise_alerts(monitor.drift.observe(predictions, pred_offsets))
        raised.sort(key=lambda r: -1 if r.offset is None else r.offset)
        return raised
