"""Seeded evaluator runs whose saved state (`to_state`) and findings are kept as fixtures.

Workers restore evaluator states saved by the previous release, so the state format must not
change by accident: `fixtures/evaluator_state_<scenario>.json` holds, for each scenario, the
findings and the `to_state()` JSON of a run that stops mid-window with events still buffered
(`cut`), and of the same evaluator after a continuation (`resumed`). `test_state_format.py`
replays the scenarios and compares byte for byte.

Regenerate (only when the format is meant to change, and say so in the commit):
`.venv/bin/python tests/evaluation/state_scenarios.py`
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from monitor.contracts.batch import PredictionBatch
from monitor.contracts.config import MonitorConfig
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.core.finding import Finding
from monitor.evaluation.evaluator import ModelEvaluator
from monitor.evaluation.join import JoinedOutcome, JoinStore

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def state_json(evaluator: ModelEvaluator) -> str:
    return json.dumps(evaluator.to_state(), allow_nan=False)


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "kind": str(finding.kind),
        "model_id": finding.model_id,
        "slice": finding.slice,
        "active": finding.active,
        "at": finding.at.isoformat(),
        "model_version": finding.model_version,
        "evidence": finding.evidence.model_dump(mode="json") if finding.evidence else None,
        "summary": finding.summary,
        "offset": finding.offset,
    }


# ---------------------------------------------------------------- binary: every check


def binary_events(start: int, stop: int, rng: np.random.Generator) -> tuple[list[PredictionEvent], list[int]]:
    """Two versions, a slice, serving signals on the first 150 predictions only (KLL sketches
    compact at random beyond 200 values, which would make the state differ between runs), and
    errors that rise after prediction 5,000 for v2 and for country=LU."""
    events, labels = [], []
    for i in range(start, stop):
        version = "v2" if rng.random() < 0.3 else "v1"
        country = ["DE", "FR", "LU"][int(rng.choice(3, p=[0.5, 0.35, 0.15]))]
        rate = 0.1
        if i >= 5000 and (version == "v2" or country == "LU"):
            rate = 0.35
        label = int(rng.random() < 0.4)
        prediction = 1 - label if rng.random() < rate else label
        confidence = float(rng.uniform(0.6, 0.95))
        p1 = confidence if prediction == 1 else 1 - confidence
        serving = i < 150
        events.append(
            PredictionEvent(
                model_id="churn",
                model_version=version,
                prediction_id=f"churn-{i:07d}",
                timestamp=datetime.fromtimestamp(T0 + i, UTC),
                features={"x": float(i % 7)},
                prediction=prediction,
                probabilities={"0": 1 - p1, "1": p1},
                slices={"country": country},
                latency_ms=float(rng.exponential(20.0)) if serving else None,
                request_status=("error" if rng.random() < 0.05 else "ok") if serving else None,
            )
        )
        labels.append(label)
    return events, labels


class Driver:
    """The monitor's loop: predictions one batch of 50 at a time, the outcome of prediction j
    100 predictions later (a tenth of them never), a window every 1,000 predictions."""

    def __init__(self, evaluator: ModelEvaluator, store: JoinStore):
        self.evaluator, self.store = evaluator, store
        self.findings: list[Finding] = []
        self.offset = 0

    def run(self, events: list[PredictionEvent], labels: list[int], first: int) -> None:
        ev = self.evaluator
        for k in range(0, len(events), 50):
            chunk = events[k : k + 50]
            for event in chunk:
                self.store.add_prediction(event)
            offsets = list(range(self.offset, self.offset + len(chunk)))
            self.offset += len(chunk)
            self.findings += ev.observe_predictions(PredictionBatch.from_events(chunk, offsets))
            for m, event in enumerate(chunk):
                i = first + k + m
                j = i - 100
                if j >= first and (j * 7919) % 10 != 3:
                    source = events[j - first]
                    joined = self.store.add_outcome(
                        OutcomeEvent(
                            prediction_id=source.prediction_id,
                            label=labels[j - first],
                            timestamp=datetime.fromtimestamp(source.timestamp.timestamp() + 100.5, UTC),
                        )
                    )
                    if joined is not None:
                        self.findings += ev.observe_outcome(joined, self.offset)
                    self.offset += 1
                if (i + 1) % 1000 == 0:
                    self.findings += ev.close_window(event.timestamp, self.offset - 1)


def binary_config() -> MonitorConfig:
    return MonitorConfig.model_validate(
        {
            "evaluation": {
                "warmup_outcomes": 2000,
                "expected_label_coverage": 0.95,
                "label_coverage_horizon_seconds": 1500,
                "max_latency_ms_p99": 60.0,
                "max_request_error_rate": 0.01,
                "slice_min_samples": 100,
                "canary_min_samples": 100,
            }
        }
    )


def run_binary(resume: Callable[[ModelEvaluator], ModelEvaluator] | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(2024)
    config = binary_config()
    evaluator, store = ModelEvaluator("churn", config, batch_size=256), JoinStore.from_config(config)
    driver = Driver(evaluator, store)
    events, labels = binary_events(0, 7730, rng)
    driver.run(events, labels, 0)
    cut = state_json(evaluator)
    cut_findings = [finding_dict(f) for f in driver.findings]
    if resume is not None:
        driver.evaluator = resume(evaluator)
    driver.findings = []
    events, labels = binary_events(7730, 9500, rng)
    driver.run(events, labels, 7730)
    driver.findings += driver.evaluator.flush()
    return {
        "cut": cut,
        "cut_findings": cut_findings,
        "resumed": state_json(driver.evaluator),
        "resumed_findings": [finding_dict(f) for f in driver.findings],
        "metrics": driver.evaluator.metrics(),
        "window_metrics": driver.evaluator.window_metrics(),
        "cbpe_report": driver.evaluator.cbpe_report(),
    }


# ---------------------------------------------------------------- regression, multiclass, reference


def regression_records(start: int, stop: int, rng: np.random.Generator) -> list[JoinedOutcome]:
    out = []
    for i in range(start, stop):
        truth = float(rng.normal(10.0, 2.0))
        noise = float(rng.normal(0.0, 1.0 if i < 4000 else 2.5))
        slices = (("region", "north" if i % 3 else "south"),)
        out.append(JoinedOutcome(f"r{i}", "price", "v1" if i % 4 else "v2", T0 + i, truth + noise, float("nan"),
                                 slices, truth, T0 + i + 30))  # fmt: skip
    return out


def multiclass_records(start: int, stop: int, rng: np.random.Generator) -> list[JoinedOutcome]:
    out = []
    names = ["cat", "dog", "fox"]
    for i in range(start, stop):
        label = names[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
        prediction = label if rng.random() < 0.8 else names[int(rng.integers(3))]
        p = {name: (0.7 if name == prediction else 0.15) for name in names}
        out.append(JoinedOutcome(f"a{i}", "animal", "v1", T0 + i, prediction, float("nan"), (), label, T0 + i + 5, p))
    return out


def score_records(start: int, stop: int, rng: np.random.Generator) -> list[JoinedOutcome]:
    out = []
    for i in range(start, stop):
        q = float(rng.random())
        if i >= 3000:
            q = min(1.0, q * 1.3)
        label = int(rng.random() < (q if i < 3000 else 0.5))
        out.append(JoinedOutcome(f"s{i}", "score", "v1", T0 + i, q if q not in (0.0, 1.0) else 0.5, float("nan"),
                                 (), label, T0 + i + 5))  # fmt: skip
    return out


def outcome_scenario(name: str) -> tuple[MonitorConfig, str, Callable[..., list[JoinedOutcome]], int]:
    if name == "regression":
        cfg = MonitorConfig.model_validate({"evaluation": {"warmup_outcomes": 1500}})
        return cfg, "price", regression_records, 1000
    if name == "multiclass":
        cfg = MonitorConfig.model_validate({"evaluation": {"warmup_outcomes": 500}})
        return cfg, "animal", multiclass_records, 500
    cfg = MonitorConfig.model_validate({"models": [{"model_id": "score", "task": "binary_classification"}]})
    return cfg, "score", score_records, 500


def run_outcomes(name: str, resume: Callable[[ModelEvaluator], ModelEvaluator] | None = None) -> dict[str, Any]:
    """Joined records straight into `observe_outcomes`, a window every `window` records, cut
    with records buffered; `reference` first fits a labelled reference."""
    config, model_id, records_of, window = outcome_scenario(name)
    rng = np.random.default_rng(7)
    evaluator = ModelEvaluator(model_id, config, batch_size=300, max_report_windows=4)
    if name == "reference":
        q = rng.random(3000)
        labels = (rng.random(3000) < q).astype(int)
        evaluator.fit_reference(labels.tolist(), (q >= 0.5).astype(int).tolist(), q.tolist())

    def feed(ev: ModelEvaluator, start: int, stop: int) -> list[Finding]:
        records = records_of(start, stop, rng)
        findings: list[Finding] = []
        for k in range(start, stop, 100):
            chunk = records[k - start : k - start + 100]
            findings += ev.observe_outcomes(chunk, list(range(k, k + len(chunk))))
            if (k + 100) % window == 0:
                findings += ev.close_window(datetime.fromtimestamp(T0 + k + 99.5, UTC), k + 99)
        return findings

    cut_findings = feed(evaluator, 0, 6150)
    cut = state_json(evaluator)
    if resume is not None:
        evaluator = resume(evaluator)
    findings = feed(evaluator, 6150, 8000)
    findings += evaluator.flush()
    return {
        "cut": cut,
        "cut_findings": [finding_dict(f) for f in cut_findings],
        "resumed": state_json(evaluator),
        "resumed_findings": [finding_dict(f) for f in findings],
        "metrics": evaluator.metrics(),
        "window_metrics": evaluator.window_metrics(),
        "cbpe_report": evaluator.cbpe_report(),
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "binary": run_binary,
    "regression": lambda resume=None: run_outcomes("regression", resume),
    "multiclass": lambda resume=None: run_outcomes("multiclass", resume),
    "reference": lambda resume=None: run_outcomes("reference", resume),
}


def fixture_path(name: str) -> Path:
    return FIXTURES / f"evaluator_state_{name}.json"


if __name__ == "__main__":
    FIXTURES.mkdir(exist_ok=True)
    for name, run in SCENARIOS.items():
        result = run()
        again = run()
        assert json.dumps(result) == json.dumps(again), f"{name}: not deterministic"
        fixture_path(name).write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        findings = result["cut_findings"] + result["resumed_findings"]
        active = sum(f["active"] for f in findings)
        print(f"{name}: {len(result['cut'])} bytes of state, {len(findings)} findings, {active} active")
