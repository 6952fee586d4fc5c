"""Seeded prediction/outcome streams and the monitor's loop, shared by the evaluation tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.core.finding import Finding
from monitor.evaluation.evaluator import ModelEvaluator
from monitor.evaluation.join import JoinStore

T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


@dataclass
class Stream:
    """Predictions in time order (one per second) and the label of each."""

    predictions: list[PredictionEvent] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)

    def extend(self, other: Stream) -> Stream:
        self.predictions += other.predictions
        self.labels += other.labels
        return self


def binary_stream(
    n: int,
    rng: np.random.Generator,
    *,
    start: int = 0,
    model_id: str = "churn",
    versions: dict[str, float] | None = None,
    error_rate: dict[str, float] | float = 0.1,
    slices: dict[str, dict[str, float]] | None = None,
    slice_error_rate: dict[str, float] | None = None,
    with_probability: bool = True,
    latency_ms: dict[str, float] | None = None,
) -> Stream:
    """A binary classifier's stream: version chosen by share, error rate per version (or one
    for all), optional slices (name -> value -> share) with an error rate per `name=value`."""
    versions = versions or {"v1": 1.0}
    names = list(versions)
    shares = np.array([versions[v] for v in names])
    stream = Stream()
    for i in range(start, start + n):
        version = names[int(rng.choice(len(names), p=shares / shares.sum()))]
        chosen = {}
        for name, values in (slices or {}).items():
            options = list(values)
            weights = np.array([values[o] for o in options])
            chosen[name] = options[int(rng.choice(len(options), p=weights / weights.sum()))]
        rate = error_rate[version] if isinstance(error_rate, dict) else error_rate
        for name, value in chosen.items():
            rate = (slice_error_rate or {}).get(f"{name}={value}", rate)
        label = int(rng.random() < 0.4)
        wrong = rng.random() < rate
        prediction = 1 - label if wrong else label
        confidence = float(rng.uniform(0.6, 0.95))
        p1 = confidence if prediction == 1 else 1 - confidence
        stream.predictions.append(
            PredictionEvent(
                model_id=model_id,
                model_version=version,
                prediction_id=f"{model_id}-{i:07d}",
                timestamp=at(i),
                features={"x": float(i % 7)},
                prediction=prediction,
                probabilities={"0": 1 - p1, "1": p1} if with_probability else None,
                slices=chosen or None,
                latency_ms=float(rng.exponential(latency_ms[version])) if latency_ms else None,
                request_status="ok" if latency_ms else None,
            )
        )
        stream.labels.append(label)
    return stream


def scored_stream(
    n: int,
    rng: np.random.Generator,
    *,
    start: int = 0,
    model_id: str = "churn",
    truth: Any = None,
    reported: Any = None,
) -> Stream:
    """Scores with a known truth: P(y=1) = q = `truth(u)` for u ~ U(0, 1) (u itself when None);
    the model predicts q >= 0.5 and reports `reported(q)` as its probability (q when None: a
    calibrated model). A monotone `reported` that keeps the side of 0.5 leaves every prediction,
    and so the accuracy, unchanged."""
    u = rng.random(n)
    q = u if truth is None else truth(u)
    labels = (rng.random(n) < q).astype(int)
    reported_p = q if reported is None else reported(q)
    stream = Stream()
    for k in range(n):
        i = start + k
        p1 = float(reported_p[k])
        stream.predictions.append(
            PredictionEvent(
                model_id=model_id,
                prediction_id=f"{model_id}-{i:07d}",
                timestamp=at(i),
                features={},
                prediction=int(q[k] >= 0.5),
                probabilities={"0": 1 - p1, "1": p1},
            )
        )
        stream.labels.append(int(labels[k]))
    return stream


@dataclass
class Run:
    findings: list[Finding]
    offsets_of_outcomes: list[int]
    """Input offset of the outcome of prediction i (its line in a replay file)."""


def drive(
    evaluator: ModelEvaluator,
    store: JoinStore,
    stream: Stream,
    *,
    delay: int = 100,
    window: int = 1000,
    label_share: float = 1.0,
    rng: np.random.Generator | None = None,
) -> Run:
    """The monitor's loop over one model: each prediction goes to the store and the evaluator;
    the outcome of prediction j comes `delay` predictions later (stamped `delay + 0.5` s after
    it); a window closes every `window` predictions at the last one's time. With `label_share`
    below 1, that share of the outcomes (chosen by `rng`) ever arrives."""
    findings: list[Finding] = []
    offsets = [-1] * len(stream.predictions)
    offset = 0
    rng = rng or np.random.default_rng(0)
    labelled = rng.random(len(stream.predictions)) < label_share

    def outcome(j: int) -> None:
        nonlocal offset
        event = stream.predictions[j]
        if labelled[j]:
            outcome_event = OutcomeEvent(
                prediction_id=event.prediction_id,
                label=stream.labels[j],
                timestamp=datetime.fromtimestamp(event.timestamp.timestamp() + delay + 0.5, UTC),
            )
            joined = store.add_outcome(outcome_event)
            if joined is not None:
                offsets[j] = offset
                findings.extend(evaluator.observe_outcome(joined, offset))
        offset += 1

    for i, event in enumerate(stream.predictions):
        store.add_prediction(event)
        findings.extend(evaluator.observe_predictions(PredictionBatch.from_events([event], [offset])))
        offset += 1
        if i >= delay:
            outcome(i - delay)
        if (i + 1) % window == 0:
            findings.extend(evaluator.close_window(event.timestamp, offset - 1))
    for j in range(max(0, len(stream.predictions) - delay), len(stream.predictions)):
        outcome(j)
    findings.extend(evaluator.flush())
    return Run(findings, offsets)


def active(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind and f.active]


def inactive(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind and not f.active]
