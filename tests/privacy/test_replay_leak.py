"""`driftline replay` with features marked `pii`: a recognisable value planted in them is in
none of the places replay writes or keeps (alerts, dead letters, the window report, the model
states, explain pages, metrics, log lines), while the hashed feature is still monitored."""

from __future__ import annotations

import base64
import json
import logging
import random
from datetime import UTC, datetime, timedelta

import msgpack
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import monitor.replay as replay_module
from monitor.contracts.config import MonitorConfig
from monitor.contracts.privacy import PII_KEY_ENV, PSEUDONYM, PrivacyPolicy
from monitor.monitoring.fleet import FleetMonitor
from monitor.observability.explain import explain
from monitor.observability.metrics import DriftlineMetrics

MARKER = b"PLANTEDPII"
KEY = "a-test-key-of-forty-characters-at-least!"
SHIFT_AT, EVENTS = 1800, 3000


def _email(k: int) -> str:
    return f"user{k}.{MARKER.decode()}@example.com"


def _write_events(path) -> None:
    rng = random.Random(11)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    lines = []
    for i in range(EVENTS):
        at = (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
        k = rng.choice([0, 0, 0, 1, 1, 2]) if i < SHIFT_AT else rng.choice([3, 4, 4])  # the mix of emails moves
        features = {"email": _email(k), "ssn": f"{MARKER.decode()}-{i:06d}", "amount": rng.gauss(0, 1)}
        lines.append({"model_id": "fraud", "prediction_id": f"p{i}", "timestamp": at, "features": features,
                      "prediction": int(rng.random() < 0.3), "probabilities": None})  # fmt: skip
        if i % 3 == 0:
            lines.append({"prediction_id": f"p{i}", "label": rng.choice([0, 1]), "timestamp": at})
        if i % 10 == 0:  # a model that marks nothing: its values are its own business
            other = {"email": f"VISIBLE{i % 4}", "amount": rng.gauss(0, 1)}
            fraud = lines[-1 if i % 3 else -2]
            lines.append({**fraud, "model_id": "other", "prediction_id": f"o{i}", "features": other})
    bad = [
        {"model_id": "fraud", "prediction_id": "b1", "timestamp": "2024-01-01T00:00:00Z",
         "features": {"email": {"nested": _email(9)}, "ssn": f"{MARKER.decode()}-bad"}, "prediction": 1},
        {"model_id": "fraud", "prediction_id": "b2", "timestamp": "not a time",
         "features": {"email": _email(8), "ssn": f"{MARKER.decode()}-bad2"}, "prediction": 1},
        {"prediction_id": "b3", "timestamp": "2024-01-01T00:00:00Z", "features": {"email": _email(7)}},
    ]  # fmt: skip
    with path.open("wb") as handle:
        for line in lines[:100] + bad + lines[100:]:
            handle.write(orjson.dumps(line) + b"\n")
        handle.write(b'{"model_id": "fraud", "features": {"email": "' + _email(6).encode() + b'"\n')  # cut short
        handle.write(b'{"model_id": "other", "prediction_id": "v", "features": {"email": "VISIBLE"}}\n')


def _config() -> MonitorConfig:
    return MonitorConfig.model_validate(
        {
            "reference": {"warmup_events": 600},
            "window": {"size_events": 200},
            "models": [{"model_id": "fraud", "features": {"email": {"pii": "hash"}, "ssn": {"pii": "drop"}}}],
        }
    )


@pytest.fixture
def kept_fleets(monkeypatch):
    """The `FleetMonitor` replay builds, to search its state afterwards."""
    fleets: list[FleetMonitor] = []

    class Kept(FleetMonitor):
        def __init__(self, config):
            super().__init__(config)
            fleets.append(self)

    monkeypatch.setattr(replay_module, "FleetMonitor", Kept)
    return fleets


def test_a_planted_value_in_marked_features_is_nowhere_replay_writes_or_keeps(
    tmp_path, monkeypatch, caplog, kept_fleets
):
    monkeypatch.setenv(PII_KEY_ENV, KEY)
    events = tmp_path / "events.jsonl"
    _write_events(events)
    assert MARKER in events.read_bytes()  # the input holds it: the search below can find it
    alerts, dead, report = tmp_path / "alerts.jsonl", tmp_path / "dead.jsonl", tmp_path / "report.jsonl"
    caplog.set_level(logging.DEBUG)

    summary = replay_module.replay(_config(), [events], alerts, dead, report_out=report)

    records = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    email = [r for r in records if r["feature"] == "email"]
    assert email, f"the hashed feature raised nothing: {[(r['kind'], r['feature']) for r in records]}"
    assert PSEUDONYM.search(json.dumps(email)), "an alert on a hashed feature names its categories by pseudonym"
    assert summary.invalid.total() == 5

    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    originals = [base64.b64decode(letter["original_b64"]) for letter in letters]
    assert sorted(str(letter.get("redaction")) for letter in letters) == [
        "None", "redacted", "redacted", "redacted", "withheld"
    ]  # fmt: skip
    assert b"VISIBLE" in b"".join(originals)  # a model that marks nothing keeps its bytes

    pages = []
    for record in records:
        page = tmp_path / f"{record['alert_id']}.html"
        explain(record["alert_id"], page, alerts_path=alerts)
        pages.append(page.read_bytes())

    (fleet,) = kept_fleets
    states = msgpack.packb(fleet.to_state())
    assert PrivacyPolicy.from_config(_config()).pseudonym("email", _email(0)).encode() in states
    assert b"VISIBLE0" in states  # raw categories of a model that marks nothing: the search finds such values
    registry = CollectorRegistry()
    metrics = DriftlineMetrics(registry)
    for model_id, monitor in fleet.models.items():
        metrics.observe_model(model_id, monitor)
        for raised in monitor.lifecycle.active.values():
            metrics.observe_alert(raised.alert)

    places = {
        "alerts": alerts.read_bytes(),
        "dead letters": dead.read_bytes() + b"".join(originals),
        "window report": report.read_bytes(),
        "explain pages": b"".join(pages),
        "model states": states,
        "metrics": generate_latest(registry),
        "log lines": caplog.text.encode(),
        "summary": repr(summary).encode(),
    }
    assert all(places.values()), [name for name, content in places.items() if not content]
    leaked = [name for name, content in places.items() if MARKER in content or MARKER.lower() in content.lower()]
    assert not leaked, f"the planted value is in: {leaked}"
