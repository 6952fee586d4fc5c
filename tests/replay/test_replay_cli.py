"""`driftline replay` and `driftline reference` as a user runs them: real files, real processes."""

from __future__ import annotations

import base64
import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

QUALITY_ONLY = "detectors: {numeric: [], categorical: [], prediction: [], multivariate: []}\n"


def driftline(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True, cwd=cwd)


def prediction(i: int, **features) -> bytes:
    event = {
        "model_id": "m",
        "prediction_id": f"p{i}",
        "timestamp": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
        "features": {"x": float(i % 7), "colour": "red" if i % 2 else "blue", **features},
        "prediction": 0.5,
    }
    return orjson.dumps(event)


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_invalid_lines_are_dead_lettered_with_reason_and_replay_goes_on(tmp_path):
    lines = [prediction(i) for i in range(300)]
    bad = {
        10: b"not json",
        20: b'{"model_id": "m", "prediction_id": "p", "timestamp": "2024-01-01T00:00:00Z", "features": {"x": {"a": 1}},'
        b' "prediction": 1}',
        30: b"\xff\xfe\x00",
        40: b'{"model_id": "m"}',
    }
    for index, raw in bad.items():
        lines[index] = raw
    config = write_lines(tmp_path / "c.yaml", [QUALITY_ONLY.encode()])
    events = write_lines(tmp_path / "events.jsonl", lines)
    result = driftline(
        "replay",
        "--config",
        str(config),
        "--input",
        str(events),
        "--alerts-out",
        str(tmp_path / "alerts.jsonl"),
        "--dead-letters-out",
        str(tmp_path / "dead.jsonl"),
    )
    assert result.returncode == 0, result.stderr
    assert "300 lines" in result.stderr and "296 predictions" in result.stderr and "4 invalid" in result.stderr
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["source"]["line"] for d in dead] == [10, 20, 30, 40]
    assert [d["reason"] for d in dead] == ["undecodable", "schema", "undecodable", "schema"]
    assert dead[1]["error"].startswith(
        "features.x: input should be a boolean, a number, a string, a list of numbers or null"
    )
    assert base64.b64decode(dead[2]["original_b64"]) == b"\xff\xfe\x00"
    assert all(d["source"]["file"] == str(events) for d in dead)


def test_data_quality_alert_points_at_the_line_that_raised_it(tmp_path):
    lines = [prediction(i) for i in range(600)] + [prediction(i, x=None) for i in range(600, 1200)]
    config = write_lines(
        tmp_path / "c.yaml",
        [QUALITY_ONLY.encode(), b"reference: {warmup_events: 200}", b"window: {size_events: 200, min_events: 100}"],
    )
    events = write_lines(tmp_path / "events.jsonl", lines)
    alerts_path = tmp_path / "alerts.jsonl"
    result = driftline("replay", "--config", str(config), "--input", str(events), "--alerts-out", str(alerts_path))
    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    assert [(a["kind"], a["feature"], a["status"]) for a in alerts] == [("data_quality", "x", "firing")]
    # windows after the 200 warm-up events are [200, 400), [400, 600), [600, 800): the first all-null one
    assert alerts[0]["detected_at_offset"] == 799
    assert alerts[0]["evidence"]["detector"] == "data_quality.null_rate"
    details = alerts[0]["evidence"]["details"]
    assert (details["reference_null_rate"], details["null_rate"]) == (0.0, 1.0)  # the page shows both
    assert alerts[0]["runbook_url"].endswith("/data_quality.md")
    assert (tmp_path / "alerts.dead-letters.jsonl").read_text() == ""


def test_two_inputs_are_merged_by_timestamp(tmp_path):
    even = write_lines(tmp_path / "even.jsonl", [prediction(i) for i in range(0, 400, 2)])
    odd = write_lines(
        tmp_path / "odd.jsonl", [prediction(i, x=None) if i > 300 else prediction(i) for i in range(1, 400, 2)]
    )
    config = write_lines(
        tmp_path / "c.yaml",
        [QUALITY_ONLY.encode(), b"reference: {warmup_events: 100}", b"window: {size_events: 100, min_events: 50}"],
    )
    alerts_path = tmp_path / "alerts.jsonl"
    result = driftline(
        "replay", "--config", str(config), "--input", str(even), "--input", str(odd), "--alerts-out", str(alerts_path)
    )
    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    assert len(alerts) == 1 and alerts[0]["input"] in (str(even), str(odd))


def test_bad_config_stops_with_field_path(tmp_path):
    config = write_lines(tmp_path / "c.yaml", [b"window: {size_events: zero}"])
    events = write_lines(tmp_path / "events.jsonl", [prediction(0)])
    result = driftline(
        "replay", "--config", str(config), "--input", str(events), "--alerts-out", str(tmp_path / "a.jsonl")
    )
    assert result.returncode == 1
    assert "window.size_events: input should be a valid integer" in result.stderr


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_reference_from_training_data(tmp_path, suffix):
    rows = [{"amount": i * 1.5, "country": ["DE", "FR"][i % 2], "prediction": i % 2} for i in range(1500)]
    path = tmp_path / f"train.{suffix}"
    if suffix == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == "jsonl":
        write_lines(path, [orjson.dumps(r) for r in rows])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    out = tmp_path / "ref.json"
    result = driftline("reference", "--input", str(path), "--model-id", "fraud", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1500 rows, 2 features (1 numeric, 1 categorical)" in result.stdout
    profile = json.loads(out.read_text())
    assert profile["features"]["amount"]["type"] == "numeric"
    assert profile["features"]["country"]["categories"] == ["DE", "FR"]
    assert profile["features"]["__prediction__"]["type"] == "numeric"
    again = tmp_path / "again.json"
    driftline("reference", "--input", str(path), "--model-id", "fraud", "--out", str(again))
    assert json.loads(again.read_text())["version"] == profile["version"]  # content hash, not time


def test_every_command_has_help():
    for command in ("schemas", "reference", "replay", "demo", "broker", "worker"):
        result = driftline(command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout


@pytest.mark.parametrize("name", ["report.jsonl", "report.csv"])
def test_the_window_report_has_counts_realised_and_estimated_metrics_and_drift_scores(tmp_path, name):
    """Labels two windows late: each closed window still ends up fully labelled in the report,
    with CBPE's estimate of its accuracy beside the realised one."""
    rng = random.Random(3)
    lines, outcomes = [], []
    for i in range(4000):
        p = rng.random()
        stamp = f"2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        event = {"model_id": "m", "prediction_id": f"p{i}", "timestamp": stamp, "prediction": int(p > 0.5),
                 "probabilities": {"0": 1 - p, "1": p}, "features": {"x": rng.gauss(0, 1)}}  # fmt: skip
        lines.append(orjson.dumps(event))
        outcomes.append((i + 1000, {"prediction_id": f"p{i}", "label": int(rng.random() < p), "timestamp": stamp}))
        while outcomes and outcomes[0][0] <= i:
            lines.append(orjson.dumps(outcomes.pop(0)[1]))
    lines += [orjson.dumps(outcome) for _, outcome in outcomes]
    config = write_lines(tmp_path / "c.yaml", [b"reference: {warmup_events: 1000}", b"window: {size_events: 500}"])
    events = write_lines(tmp_path / "events.jsonl", lines)
    report = tmp_path / name
    result = driftline("replay", "--config", str(config), "--input", str(events), "--alerts-out",
                       str(tmp_path / "alerts.jsonl"), "--report", str(report))  # fmt: skip
    assert result.returncode == 0, result.stderr
    if name.endswith(".csv"):
        rows = list(csv.DictReader(report.open()))
        rows = [{k: (float(v) if v not in ("", None) and k not in ("model", "start", "end") else v)
                 for k, v in row.items()} for row in rows]  # fmt: skip
    else:
        rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert f"{len(rows)} windows -> {report}" in result.stderr
    closed = rows[1:]  # the first holds the warm-up
    assert [row["predictions"] for row in closed] == [500] * len(closed) and len(closed) >= 5
    assert {row["label_coverage"] for row in closed} == {1.0}
    for row in closed:
        assert row["drift.x.ks"] >= 0 and row["drift.x.cusum"] >= 0
    # CBPE is fitted on the first 1,000 labelled outcomes: windows that closed before have no estimate
    estimated = [row for row in closed if row.get("estimated_accuracy") not in (None, "")]
    assert len(estimated) >= len(closed) - 2
    for row in estimated:
        assert abs(row["estimated_accuracy"] - row["accuracy"]) < 0.1


def test_each_of_two_inputs_is_named_for_its_own_lines(tmp_path):
    """Lines keep their own file: a dead letter of the first input names the first input, and
    the alert of a problem planted in the second names the second (with its line number)."""
    lines = [prediction(i) for i in range(0, 400, 2)]
    first = write_lines(tmp_path / "first.jsonl", [*lines[:50], b"{not json", *lines[50:]])
    second = write_lines(
        tmp_path / "second.jsonl", [prediction(i, x=None) if i > 300 else prediction(i) for i in range(1, 400, 2)]
    )
    config = write_lines(
        tmp_path / "c.yaml",
        [QUALITY_ONLY.encode(), b"reference: {warmup_events: 100}", b"window: {size_events: 100, min_events: 50}"],
    )
    alerts_path = tmp_path / "alerts.jsonl"
    result = driftline(
        "replay",
        "--config",
        str(config),
        "--input",
        str(first),
        "--input",
        str(second),
        "--alerts-out",
        str(alerts_path),
    )
    assert result.returncode == 0, result.stderr
    dead = [json.loads(line) for line in (tmp_path / "alerts.dead-letters.jsonl").read_text().splitlines()]
    assert [(d["source"]["file"], d["source"]["line"]) for d in dead] == [(str(first), 50)]
    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    assert len(alerts) == 1 and alerts[0]["input"] == str(second)
    assert alerts[0]["detected_at_offset"] > 150
