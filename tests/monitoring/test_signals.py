"""Optional signals see every prediction once, in the drift monitor's windows, and resume from state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import MonitorConfig
from monitor.contracts.events import PredictionEvent
from monitor.core.finding import Finding
from monitor.monitoring import signals
from monitor.monitoring.fleet import ModelMonitor


class CountingSignal:
    """Remembers the positions of each window it was shown."""

    def __init__(self, windows: list[list[int]] | None = None):
        self.windows = windows or [[]]

    def observe(self, predictions: PredictionBatch) -> list[Finding]:
        self.windows[-1] += predictions.positions.tolist()
        return []

    def close_window(self, at: datetime, offset: int | None) -> list[Finding]:
        self.windows.append([])
        return []

    def to_state(self) -> dict[str, Any]:
        return {"windows": self.windows}


@pytest.fixture
def counting():
    signals.signal_types()["counting"] = signals.SignalType(
        wanted=lambda model: model.model_id == "counted",
        detectors=lambda model, feature_types: 0,
        create=lambda model, config, drift: CountingSignal(),
        restore=lambda model, config, drift, state: CountingSignal(state["windows"]),
    )
    yield
    del signals.signal_types()["counting"]


def _batch(start: int, stop: int) -> PredictionBatch:
    events = [
        PredictionEvent(model_id="counted", prediction_id=f"p{i}", timestamp=datetime.fromtimestamp(1.7e9 + i, UTC),
                        features={"x": float(i % 7)}, prediction=0.5)
        for i in range(start, stop)
    ]  # fmt: skip
    return PredictionBatch.from_events(events, range(start, stop))


def test_a_signal_sees_each_prediction_once_in_the_models_windows_and_resumes(counting):
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 100}, "window": {"size_events": 50}})
    monitor = ModelMonitor("counted", config)
    monitor.observe(_batch(0, 230), [], [])
    resumed = ModelMonitor("counted", config, monitor.to_state())
    resumed.observe(_batch(230, 420), [], [])

    windows = resumed.signals["counting"].windows  # type: ignore[attr-defined]
    assert [p for window in windows for p in window] == list(range(420))
    # The warm-up's 100 events open no window; then every 50 events close one.
    assert [len(w) for w in windows] == [150, 50, 50, 50, 50, 50, 20]


def test_a_model_without_signals_builds_none():
    config = MonitorConfig()
    assert ModelMonitor("plain", config).signals == {}
    assert "signals" not in ModelMonitor("plain", config).to_state()
    assert signals.build_signals(config.model("plain"), config, ModelMonitor("plain", config).drift) == {}


def test_a_signals_detectors_share_the_models_budget(counting):
    from monitor.monitoring.drift import count_detectors

    kinds = {"x": signals.FeatureType.numeric}
    config = MonitorConfig()
    plain = count_detectors(config.model("plain"), kinds)
    signals.signal_types()["counting"] = signals.SignalType(
        wanted=lambda model: model.model_id == "counted",
        detectors=lambda model, feature_types: 3 * len(feature_types),
        create=lambda model, config, drift: CountingSignal(),
        restore=lambda model, config, drift, state: CountingSignal(state["windows"]),
    )
    assert count_detectors(config.model("counted"), kinds) == plain + 3
