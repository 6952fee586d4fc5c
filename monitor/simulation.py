"""A simulated service with several models and planted problems, for the demo and tests.

* `fraud-scorer` (binary classifier): feature `amount` drifts upward at 60% of the run, and
  `device` starts arriving null for a tenth of requests at 80% (a data-quality problem);
* `churn-model` (binary classifier): inputs stay put, but the world changes under it: from
  the middle of the run its predictions are wrong twice as often, which only the delayed labels
  (`label_delay_hours` of event time later) can show;
* `pricing-model` (binary classifier): version `v2` serves a tenth of traffic as a canary from
  the start and is wrong more often than its baseline `v1`.

Every prediction of the classifiers gets its outcome `label_delay_hours` later in event time.

>>> events = list(simulate(n_predictions=300, seed=1))
>>> sorted({e["model_id"] for e in events if "features" in e})
['churn-model', 'fraud-scorer', 'pricing-model']
>>> sum("label" in e for e in events) > 0
True
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

START = datetime(2024, 3, 1, tzinfo=UTC)
MODELS = ("fraud-scorer", "churn-model", "pricing-model")


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def simulate(
    n_predictions: int = 60_000,
    seed: int = 7,
    seconds_between: float = 3.0,
    label_delay_hours: float = 6.0,
) -> Iterator[dict[str, Any]]:
    """Events (as dicts) in timestamp order: predictions of all three models and their outcomes."""
    rng = np.random.default_rng(seed)
    outcomes: list[tuple[datetime, int, dict[str, Any]]] = []
    delay = timedelta(hours=label_delay_hours)
    for i in range(n_predictions):
        now = START + timedelta(seconds=i * seconds_between)
        while outcomes and outcomes[0][0] <= now:
            yield heapq.heappop(outcomes)[2]
        model_id = MODELS[i % 3]
        progress = i / n_predictions
        event, p_wrong = _prediction(model_id, progress, rng)
        event.update(prediction_id=f"{model_id}-{i}", timestamp=_iso(now), model_id=model_id)
        yield event
        truth = int(event["prediction"]) ^ int(rng.random() < p_wrong)
        outcome = {
            "prediction_id": event["prediction_id"],
            "model_id": model_id,
            "label": truth,
            "timestamp": _iso(now + delay),
        }
        heapq.heappush(outcomes, (now + delay, i, outcome))
    while outcomes:
        yield heapq.heappop(outcomes)[2]


def _prediction(model_id: str, progress: float, rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    """One prediction event (without ids and time) and the probability that it is wrong."""
    version = "v1"
    if model_id == "fraud-scorer":
        shift = 0.8 if progress >= 0.6 else 0.0
        amount = float(np.exp(rng.normal(3.0 + shift, 0.6)))
        device = None if progress >= 0.8 and rng.random() < 0.1 else str(rng.choice(["ios", "android", "web"]))
        features = {
            "amount": round(amount, 2),
            "age": int(rng.integers(18, 80)),
            "device": device,
            "country": str(rng.choice(["DE", "FR", "US"], p=[0.5, 0.3, 0.2])),
        }
        score = 1 / (1 + math.exp(-(math.log(amount) - 3.6) * 2))
        p_wrong = 0.1
    elif model_id == "churn-model":
        features = {
            "tenure_months": int(rng.integers(1, 72)),
            "monthly_spend": round(float(rng.gamma(4, 15)), 2),
            "plan": str(rng.choice(["basic", "plus", "pro"])),
        }
        score = float(rng.beta(2, 5))
        p_wrong = 0.24 if progress >= 0.5 else 0.12
    else:
        version = "v2" if rng.random() < 0.1 else "v1"
        features = {"basket_size": int(rng.poisson(4)), "discount": round(float(rng.uniform(0, 0.3)), 3)}
        score = float(rng.beta(3, 3))
        p_wrong = 0.25 if version == "v2" else 0.12
    prediction = int(score >= 0.5)
    event = {
        "model_version": version,
        "features": features,
        "prediction": prediction,
        "probabilities": {"0": round(1 - score, 6), "1": round(score, 6)},
        "latency_ms": round(float(rng.gamma(2, 10)), 2),
        "request_status": "ok",
    }
    return event, p_wrong
