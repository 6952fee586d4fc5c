"""`FleetMonitor`: every model's monitor, fed validated events, giving alerts.

This is the whole monitoring core behind one small API, used as is by `driftline replay` and by
the streaming worker: predictions go to their model's drift monitor and evaluator and wait in the
join store; an outcome joins its prediction and goes to that model's evaluator; findings of both
go through the model's alert lifecycle. Alerts come with the input offset of the event whose
processing raised them, so replay can report `detected_at_offset`.

>>> from monitor.contracts.config import MonitorConfig
>>> fleet = FleetMonitor(MonitorConfig())
>>> fleet.observe([], [])
[]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.alerts.lifecycle import AlertLifecycle
from monitor.contracts.alert import Alert
from monitor.contracts.config import MonitorConfig
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.core.finding import Finding
from monitor.core.reference import ReferenceProfile
from monitor.evaluation.evaluator import ModelEvaluator
from monitor.evaluation.join import JoinedOutcome, JoinStore
from monitor.monitoring.drift import DriftMonitor

LAGGING_OUTCOME_WINDOWS = 2
"""The evaluation checks also run once this many windows' worth of outcomes came without a
window of predictions closing."""


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    alert: Alert
    offset: int | None
    """Input position of the event whose processing raised it."""


class ModelMonitor:
    """One model: drift monitor, evaluator, and the alert lifecycle both feed."""

    def __init__(self, model_id: str, config: MonitorConfig, state: dict[str, Any] | None = None):
        model = config.model(model_id)
        self.lifecycle = AlertLifecycle(config.alerting)
        self.windows_closed = 0
        """Windows closed since this object was built (a metric, not state)."""
        assert model.window is not None
        self.outcomes_per_check = LAGGING_OUTCOME_WINDOWS * (model.window.size_events or model.window.min_events)
        self.outcomes_since_check = 0
        """Outcomes since the evaluation checks last ran (state)."""
        if state is None:
            reference = ReferenceProfile.load(model.reference) if model.reference else None
            self.drift = DriftMonitor(model, config, reference)
            self.evaluator = ModelEvaluator(model_id, config)
        else:
            self.drift = DriftMonitor.from_state(model, config, state["drift"])
            self.evaluator = ModelEvaluator.from_state(state["evaluator"], config)
            self.lifecycle.restore(state["lifecycle"])
            self.outcomes_since_check = state.get("outcomes_since_check", 0)

    def observe(
        self,
        predictions: Sequence[PredictionEvent],
        prediction_offsets: Sequence[int],
        outcomes: Sequence[JoinedOutcome],
        outcome_offsets: Sequence[int],
    ) -> list[RaisedAlert]:
        findings = self.drift.observe(predictions, prediction_offsets)
        findings += self.evaluator.observe_predictions(predictions, prediction_offsets)
        findings += self.evaluator.observe_outcomes(outcomes, outcome_offsets)
        findings += self._close_evaluation_windows()
        self.outcomes_since_check += len(outcomes)
        if self.outcomes_since_check >= self.outcomes_per_check:
            # Outcomes are running behind the predictions (a join lagging in streaming, the
            # labels of a model's last hours): check them now rather than at a window close
            # that may never come. In step, windows close first and this never runs.
            at = datetime.fromtimestamp(max(o.prediction_time for o in outcomes), UTC)
            findings += self.evaluator.close_window(at, outcome_offsets[-1])
            self.outcomes_since_check = 0
        return self.raise_alerts(findings)

    def advance_to(self, at: datetime, offset: int | None = None) -> list[RaisedAlert]:
        """Close the time windows event time `at` has passed though this model sent nothing (a
        timer in the streaming worker); see `DriftMonitor.advance_to`."""
        findings = self.drift.advance_to(at, offset)
        return self.raise_alerts(findings + self._close_evaluation_windows())

    def _close_evaluation_windows(self) -> list[Finding]:
        """Evaluation closes its windows on the drift monitor's clock."""
        findings = []
        if self.drift.closed_windows:
            self.outcomes_since_check = 0
        self.windows_closed += len(self.drift.closed_windows)
        for window_end, offset in self.drift.closed_windows:
            findings += self.evaluator.close_window(window_end, offset)
        self.drift.closed_windows.clear()
        return findings

    def flush(self) -> list[RaisedAlert]:
        """Process what the evaluator still buffers (end of a replay, or a timer)."""
        return self.raise_alerts(self.evaluator.flush())

    def raise_alerts(self, findings: list[Finding]) -> list[RaisedAlert]:
        findings.sort(key=lambda f: -1 if f.offset is None else f.offset)
        raised = []
        for finding in findings:
            alert = self.lifecycle.process_one(finding)
            if alert is not None:
                raised.append(RaisedAlert(alert, finding.offset))
        return raised

    def to_state(self) -> dict[str, Any]:
        """JSON-safe; `ModelMonitor(model_id, config, state)` resumes exactly where this left off."""
        return {
            "drift": self.drift.to_state(),
            "evaluator": self.evaluator.to_state(),
            "lifecycle": self.lifecycle.to_state(),
            "outcomes_since_check": self.outcomes_since_check,
        }


class FleetMonitor:
    def __init__(self, config: MonitorConfig):
        self.config = config
        self.models: dict[str, ModelMonitor] = {}
        self.join = JoinStore.from_config(config)
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
        predictions: dict[str, tuple[list[PredictionEvent], list[int]]] = {}
        outcomes: dict[str, tuple[list[JoinedOutcome], list[int]]] = {}
        for event, offset in zip(events, offsets, strict=True):
            if isinstance(event, PredictionEvent):
                batch = predictions.setdefault(event.model_id, ([], []))
                batch[0].append(event)
                batch[1].append(offset)
                joined = self.join.add_prediction(event)  # not None when its outcome came first
            else:
                joined = self.join.add_outcome(event)
            if joined is not None:
                done = outcomes.setdefault(joined.model_id, ([], []))
                done[0].append(joined)
                done[1].append(offset)
        raised: list[RaisedAlert] = []
        for model_id in predictions.keys() | outcomes.keys():
            monitor = self.model(model_id)
            model_predictions, prediction_offsets = predictions.get(model_id, ([], []))
            model_outcomes, outcome_offsets = outcomes.get(model_id, ([], []))
            if monitor is None:
                self.dropped["max_models"] += len(model_predictions) + len(model_outcomes)
                continue
            raised += monitor.observe(model_predictions, prediction_offsets, model_outcomes, outcome_offsets)
        raised.sort(key=lambda r: -1 if r.offset is None else r.offset)
        return raised

    def flush(self) -> list[RaisedAlert]:
        raised = [alert for monitor in self.models.values() for alert in monitor.flush()]
        raised.sort(key=lambda r: -1 if r.offset is None else r.offset)
        return raised

    def to_state(self) -> dict[str, Any]:
        """Every model and the join store, JSON- and msgpack-safe."""
        return {
            "models": {model_id: monitor.to_state() for model_id, monitor in self.models.items()},
            "join": self.join.to_state(),
            "dropped": dict(self.dropped),
        }

    @classmethod
    def from_state(cls, config: MonitorConfig, state: dict[str, Any]) -> FleetMonitor:
        fleet = cls(config)
        fleet.models = {model_id: ModelMonitor(model_id, config, s) for model_id, s in state["models"].items()}
        fleet.join.restore(state["join"])
        fleet.dropped = Counter(state["dropped"])
        return fleet
