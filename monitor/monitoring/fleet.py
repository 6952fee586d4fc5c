"""`FleetMonitor`: every model's monitor, fed validated events, giving alerts.

This is the whole monitoring core behind one small API, used as is by `driftline replay` and by
the streaming worker: predictions go to their model's drift monitor and evaluator and wait in the
join store; an outcome joins its prediction and goes to that model's evaluator; findings of both
go through the model's alert lifecycle. Alerts come with the input offset of the event whose
processing raised them, so replay can report `detected_at_offset`.

>>> from monitor.contracts.config import MonitorConfig
>>> fleet = FleetMonitor(MonitorConfig())
>>> fleet.observe(PredictionBatch.empty())
[]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from monitor.alerts.lifecycle import AlertLifecycle
from monitor.contracts.alert import Alert
from monitor.contracts.batch import OutcomeBatch, PredictionBatch
from monitor.contracts.config import MonitorConfig
from monitor.core.finding import Finding
from monitor.core.reference import ReferenceProfile
from monitor.evaluation.evaluator import ModelEvaluator
from monitor.evaluation.join import JoinedOutcome, JoinStore
from monitor.monitoring.drift import DriftMonitor
from monitor.monitoring.signals import build_signals

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
            self.signals = build_signals(model, config, self.drift)
        else:
            self.drift = DriftMonitor.from_state(model, config, state["drift"])
            self.evaluator = ModelEvaluator.from_state(state["evaluator"], config)
            self.signals = build_signals(model, config, self.drift, state.get("signals"))
            self.lifecycle.restore(state["lifecycle"])
            self.outcomes_since_check = state.get("outcomes_since_check", 0)

    def observe(
        self, predictions: PredictionBatch, outcomes: Sequence[JoinedOutcome], outcome_offsets: Sequence[int]
    ) -> list[RaisedAlert]:
        """This model's predictions and the joined outcomes of one batch; alerts in input order."""
        findings = self.drift.observe(predictions)
        if self.signals:
            findings += self._observe_signals(predictions)
        findings += self._close_evaluation_windows(predictions, outcomes, outcome_offsets)
        # After the closes: an outcome counts in its prediction's window, which may close in this batch.
        findings += self.evaluator.observe_outcomes(outcomes, outcome_offsets)
        return self.raise_alerts(findings)

    def advance_to(self, at: datetime, offset: int | None = None) -> list[RaisedAlert]:
        """Close the time windows event time `at` has passed though this model sent nothing (a
        timer in the streaming worker); see `DriftMonitor.advance_to`."""
        findings = self.drift.advance_to(at, offset)
        if self.signals:
            findings += self._observe_signals(PredictionBatch.empty())
        return self.raise_alerts(findings + self._close_evaluation_windows(PredictionBatch.empty(), [], []))

    def _observe_signals(self, predictions: PredictionBatch) -> list[Finding]:
        """Each signal sees `predictions` window by window, its windows closing where the drift
        monitor's did (`closed_windows`, not yet drained by the evaluation)."""
        findings: list[Finding] = []
        start = 0
        for window_end, offset, stop in self.drift.closed_windows:
            part = predictions.take(slice(start, max(start, stop)))
            for signal in self.signals.values():
                if len(part):
                    findings += signal.observe(part)
                findings += signal.close_window(window_end, offset)
            start = max(start, stop)
        rest = predictions.take(slice(start, None))
        if len(rest):
            for signal in self.signals.values():
                findings += signal.observe(rest)
        return findings

    def _close_evaluation_windows(
        self, predictions: PredictionBatch, outcomes: Sequence[JoinedOutcome], offsets: Sequence[int]
    ) -> list[Finding]:
        """The evaluator sees `predictions` and closes its windows where the drift monitor's clock
        closed one, or where outcomes ran behind (`_lagging_closes`): a window holds the
        predictions up to the event that closed it, whatever the batches."""
        closes = self.drift.closed_windows
        self.windows_closed += len(closes)
        if closes:
            self.outcomes_since_check = 0
        closes = sorted([*closes, *self._lagging_closes(predictions, outcomes, offsets)], key=lambda close: close[2])
        self.drift.closed_windows.clear()
        findings = []
        start = 0
        for window_end, offset, stop in closes:
            findings += self.evaluator.observe_predictions(predictions.take(slice(start, max(start, stop))))
            findings += self.evaluator.close_window(window_end, offset)
            start = max(start, stop)
        return findings + self.evaluator.observe_predictions(predictions.take(slice(start, None)))

    def _lagging_closes(
        self, predictions: PredictionBatch, outcomes: Sequence[JoinedOutcome], offsets: Sequence[int]
    ) -> list[tuple[datetime, int | None, int]]:
        """Outcomes running behind the predictions (a join lagging in streaming, the labels of a
        model's last hours, the warm-up): every `outcomes_per_check` outcomes without a window of
        predictions closing, the evaluation closes one at that outcome's prediction time, rather
        than wait for a close that may never come. In step, windows close first and this never
        runs. Each close is (time, offset, predictions of the batch before it)."""
        closes = []
        start = 0
        while len(outcomes) - start >= self.outcomes_per_check - self.outcomes_since_check:
            last = start + self.outcomes_per_check - self.outcomes_since_check - 1
            end = max(o.prediction_time for o in outcomes[start : last + 1])
            later = np.flatnonzero(predictions.timestamps > end)
            closes.append(
                (datetime.fromtimestamp(end, UTC), offsets[last], int(later[0]) if len(later) else len(predictions))
            )
            self.outcomes_since_check = 0
            start = last + 1
        self.outcomes_since_check += len(outcomes) - start
        return closes

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
            **({"signals": {name: signal.to_state() for name, signal in self.signals.items()}} if self.signals else {}),
        }


class FleetMonitor:
    def __init__(self, config: MonitorConfig):
        self.config = config
        self.models: dict[str, ModelMonitor] = {}
        self.join = JoinStore.from_config(config)
        self.dropped = Counter[str]()
        """Events not monitored, by reason (e.g. `max_models` reached)."""
        self.event_time = -math.inf
        """Latest prediction time seen, of any model: the stream's event-time clock."""

    def model(self, model_id: str) -> ModelMonitor | None:
        monitor = self.models.get(model_id)
        if monitor is None:
            if len(self.models) >= self.config.caps.max_models:
                return None
            monitor = self.models[model_id] = ModelMonitor(model_id, self.config)
        return monitor

    def observe(self, predictions: PredictionBatch, outcomes: OutcomeBatch | None = None) -> list[RaisedAlert]:
        """Process a batch of validated events; alerts in order of their input positions.

        Each prediction waits in the join store and goes to its model's drift monitor and
        evaluator; each outcome that meets its prediction goes to that model's evaluator."""
        joined: dict[str, tuple[list[JoinedOutcome], list[int]]] = {}
        for position, record in self.join.add_batch(predictions, outcomes or OutcomeBatch.empty()):
            records, positions = joined.setdefault(record.model_id, ([], []))
            records.append(record)
            positions.append(position)
        by_model = predictions.by_model()
        raised: list[RaisedAlert] = []
        for model_id in by_model.keys() | joined.keys():
            monitor = self.model(model_id)
            index = by_model.get(model_id)
            model_predictions = predictions.take(index) if index is not None else PredictionBatch.empty()
            records, positions = joined.get(model_id, ([], []))
            if monitor is None:
                self.dropped["max_models"] += len(model_predictions) + len(records)
                continue
            raised += monitor.observe(model_predictions, records, positions)
        if len(predictions):
            raised += self.advance_to(float(predictions.timestamps.max()), int(predictions.positions[-1]))
        raised.sort(key=lambda r: -1 if r.offset is None else r.offset)
        return raised

    def advance_to(self, event_time: float, offset: int | None = None) -> list[RaisedAlert]:
        """Move the stream's event time to `event_time` (seconds) and close every model's time
        windows it has passed, quiet models' too: the same rule as the streaming worker's timer
        (`ModelMonitor.advance_to`), so a model that goes quiet reports its last window in replay
        as in the worker. `offset`: the event that moved the clock."""
        self.event_time = max(self.event_time, event_time)
        at = datetime.fromtimestamp(self.event_time, UTC)
        return [alert for monitor in self.models.values() for alert in monitor.advance_to(at, offset)]

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
            "event_time": None if self.event_time == -math.inf else self.event_time,
        }

    @classmethod
    def from_state(cls, config: MonitorConfig, state: dict[str, Any]) -> FleetMonitor:
        fleet = cls(config)
        fleet.models = {model_id: ModelMonitor(model_id, config, s) for model_id, s in state["models"].items()}
        fleet.join.restore(state["join"])
        fleet.dropped = Counter(state["dropped"])
        fleet.event_time = -math.inf if state.get("event_time") is None else state["event_time"]
        return fleet
