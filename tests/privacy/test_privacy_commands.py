"""The commands with features marked `pii`: `driftline reference` profiles what the monitor would
keep (pseudonyms, no dropped feature), so replay over the same values finds no new category; a
missing key stops `reference`, `replay` and `worker` in one line naming the variable."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from monitor.contracts.config import load_config
from monitor.contracts.privacy import PII_KEY_ENV, PSEUDONYM, PrivacyPolicy

ROOT = Path(__file__).resolve().parents[2]
KEY = "a-test-key-of-forty-characters-at-least!"
MARKER = "PLANTEDPII"
CONFIG = """
reference: {warmup_events: 300}
window: {size_events: 200}
models:
  - model_id: fraud
    reference: ref.json
    features: {email: {pii: hash}, ssn: {pii: drop}}
"""


def _driftline(*args: str, key: str | None, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != PII_KEY_ENV} | {"PYTHONPATH": str(ROOT)}  # this checkout
    if key is not None:
        env[PII_KEY_ENV] = key
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def _email(k: int) -> str:
    return f"user{k}.{MARKER}@example.com"


def test_reference_profiles_pseudonyms_and_replay_recognises_them(tmp_path):
    (tmp_path / "driftline.yaml").write_text(CONFIG)
    rng = random.Random(2)
    with (tmp_path / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "ssn", "amount", "prediction"])
        for i in range(2000):
            writer.writerow([_email(rng.choice([0, 0, 1, 2])), f"{MARKER}-{i}", rng.gauss(0, 1), rng.random()])
    made = _driftline("reference", "--input", "train.csv", "--model-id", "fraud", "--config", "driftline.yaml",
                      "--out", "ref.json", key=KEY, cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    profile = (tmp_path / "ref.json").read_bytes()
    assert MARKER.encode() not in profile
    features = orjson.loads(profile)["features"]
    assert "ssn" not in features
    policy = PrivacyPolicy.from_config(load_config(tmp_path / "driftline.yaml"), {PII_KEY_ENV: KEY})
    assert set(features["email"]["categories"]) == {policy.pseudonym("email", _email(k)) for k in range(3)}
    assert all(PSEUDONYM.fullmatch(c) for c in features["email"]["categories"])

    with (tmp_path / "events.jsonl").open("w") as handle:
        for i in range(1500):
            features = {"email": _email(rng.choice([0, 0, 1, 2])), "ssn": f"{MARKER}-e{i}", "amount": rng.gauss(0, 1)}
            handle.write(json.dumps({"model_id": "fraud", "prediction_id": f"p{i}", "features": features,
                                     "timestamp": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                                     "prediction": rng.random()}) + "\n")  # fmt: skip
    replayed = _driftline("replay", "--config", "driftline.yaml", "--input", "events.jsonl", "--alerts-out",
                          "alerts.jsonl", key=KEY, cwd=tmp_path)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert not [a for a in alerts if a["feature"] == "email"], "the reference's pseudonyms are the stream's"
    assert MARKER not in (tmp_path / "alerts.jsonl").read_text() + replayed.stderr


@pytest.mark.parametrize("command", ["reference", "replay", "worker"])
def test_a_missing_key_stops_the_command_in_one_line(tmp_path, command):
    (tmp_path / "driftline.yaml").write_text(CONFIG.replace("    reference: ref.json\n", ""))
    (tmp_path / "in.jsonl").write_text("")
    args = {
        "reference": ["--input", "in.jsonl", "--model-id", "fraud", "--out", "ref.json"],
        "replay": ["--input", "in.jsonl", "--alerts-out", "alerts.jsonl"],
        "worker": ["--wait", "0"],
    }[command]
    result = _driftline(command, "--config", "driftline.yaml", *args, key=None, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.startswith("Error: pii: hash is configured") and PII_KEY_ENV in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "alerts.jsonl").exists() and not (tmp_path / "ref.json").exists()


def test_a_reference_built_without_the_policy_stops_replay(tmp_path):
    (tmp_path / "driftline.yaml").write_text(CONFIG)
    (tmp_path / "ref.json").write_bytes(
        orjson.dumps({"features": {"email": {"categories": [_email(0)]}}, "sample": {"email": [_email(0)]}})
    )
    (tmp_path / "in.jsonl").write_text("")
    result = _driftline("replay", "--config", "driftline.yaml", "--input", "in.jsonl", "--alerts-out", "a.jsonl",
                        key=KEY, cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0 and "raw values of the feature 'email'" in result.stderr
    assert "Traceback" not in result.stderr and MARKER not in result.stderr
    assert not (tmp_path / "a.jsonl").exists()
