"""JSON Schemas of every contract, generated from the pydantic models (the single source of truth).

`driftline schemas` writes them to `schemas/`; `driftline schemas --check` fails when the files
there differ from what the models generate, so a model edited without regenerating is caught.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from monitor.contracts.alert import Alert
from monitor.contracts.config import MonitorConfig
from monitor.contracts.deadletter import DeadLetter
from monitor.contracts.envelope import EventEnvelope
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.contracts.retrain import Approval, PlaybookDecision, RetrainRequest, ReviewRequest

CONTRACTS: dict[str, type[BaseModel]] = {
    "prediction_event": PredictionEvent,
    "outcome_event": OutcomeEvent,
    "event_envelope": EventEnvelope,
    "alert": Alert,
    "dead_letter": DeadLetter,
    "monitor_config": MonitorConfig,
    "retrain_request": RetrainRequest,
    "review_request": ReviewRequest,
    "approval": Approval,
    "playbook_decision": PlaybookDecision,
}


def render(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(mode="validation"), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in CONTRACTS.items():
        path = directory / f"{name}.json"
        path.write_text(render(model))
        written.append(path)
    return written


def stale_schemas(directory: Path) -> list[str]:
    """Names of schema files that are missing or differ from the models, and of stray files."""
    stale = [
        f"{name}.json"
        for name, model in CONTRACTS.items()
        if not (directory / f"{name}.json").is_file() or (directory / f"{name}.json").read_text() != render(model)
    ]
    expected = {f"{name}.json" for name in CONTRACTS}
    stale += sorted(p.name for p in directory.glob("*.json") if p.name not in expected)
    return stale
