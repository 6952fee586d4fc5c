"""The `driftline` command as a new user meets it: the README's examples work on a fresh folder,
and an expected failure is one line on stderr (`Error: <what>: <why>`), a non-zero exit status and
no traceback."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIFTLINE = Path(sys.executable).parent / "driftline"  # the installed console script, as a user runs it
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DRIFTLINE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def readme_command(name: str) -> list[str]:
    """The README's example of `driftline <name>`, as words."""
    readme = (ROOT / "README.md").read_text()
    (line,) = re.findall(rf"^\.venv/bin/driftline {name} .*$", readme, flags=re.MULTILINE)
    return shlex.split(line)[1:]


def write_training_csv(path: Path, rows: int = 300) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["amount", "country", "prediction"])
        writer.writerows([i * 1.5, ["DE", "FR", "IT"][i % 3], i % 2] for i in range(rows))
    return path


def test_the_readme_reference_example_runs_on_a_fresh_folder(tmp_path):
    args = readme_command("reference")
    assert args[args.index("--out") + 1] == "refs/fraud.json"  # a folder that does not exist yet
    write_training_csv(tmp_path / args[args.index("--input") + 1])
    assert not (tmp_path / "refs").exists()

    result = run(*args, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    profile = json.loads((tmp_path / "refs" / "fraud.json").read_text())
    assert profile["model_id"] == "fraud"
    assert profile["features"]["amount"]["type"] == "numeric"
    assert "300 rows, 2 features" in result.stdout


def test_a_missing_input_file_is_one_line(tmp_path):
    result = run("reference", "--input", "train.csv", "--model-id", "fraud", "--out", "refs/fraud.json", cwd=tmp_path)
    assert_one_line_error(result, "'--input'", "'train.csv' does not exist")
    assert not (tmp_path / "refs").exists()  # nothing made for a command that could not run


def test_a_missing_replay_input_and_config_are_one_line(tmp_path):
    result = run("replay", "--input", "events.jsonl", "--alerts-out", "alerts.jsonl", cwd=tmp_path)
    assert_one_line_error(result, "'--input'", "'events.jsonl' does not exist")
    (tmp_path / "events.jsonl").write_text("")
    result = run("replay", "--config", "nope.yaml", "--input", "events.jsonl", "--alerts-out", "a.jsonl", cwd=tmp_path)
    assert_one_line_error(result, "'--config'", "'nope.yaml' does not exist")


def test_an_input_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "train.csv").mkdir()
    result = run("reference", "--input", "train.csv", "--model-id", "fraud", "--out", "ref.json", cwd=tmp_path)
    assert_one_line_error(result, "'train.csv' is a directory")


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_unreadable_training_data_is_one_line_naming_the_file(tmp_path, suffix):
    (tmp_path / f"train.{suffix}").write_bytes(b"\x8a\xff\x00garbage\x01" * 50)
    result = run("reference", "--input", f"train.{suffix}", "--model-id", "fraud", "--out", "ref.json", cwd=tmp_path)
    assert_one_line_error(result, f"train.{suffix}")
    assert not (tmp_path / "ref.json").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    write_training_csv(tmp_path / "train.csv")
    result = run(
        "reference", "--input", "train.csv", "--model-id", "fraud", "--out", "train.csv/ref.json", cwd=tmp_path
    )
    assert_one_line_error(result, "cannot create the folder 'train.csv'")


def test_replay_makes_the_folders_of_its_outputs(tmp_path):
    event = {
        "model_id": "fraud",
        "prediction_id": "p-1",
        "timestamp": "2024-03-01T12:00:00Z",
        "features": {"amount": 12.5},
        "prediction": 1,
    }
    (tmp_path / "events.jsonl").write_text(json.dumps(event) + "\n")
    result = run("replay", "--input", "events.jsonl", "--alerts-out", "out/run-1/alerts.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/run-1/alerts.jsonl").is_file()
    assert (tmp_path / "out/run-1/alerts.dead-letters.jsonl").is_file()


def test_a_yaml_syntax_error_is_one_line(tmp_path):
    (tmp_path / "driftline.yaml").write_text("window: [1, 2\n")
    (tmp_path / "events.jsonl").write_text("")
    result = run(
        "replay", "--config", "driftline.yaml", "--input", "events.jsonl", "--alerts-out", "a.jsonl", cwd=tmp_path
    )
    assert_one_line_error(result, "driftline.yaml", "line 1")


def test_an_unreachable_broker_is_one_line_naming_it(tmp_path):
    result = run("topics", "--wait", "0", cwd=tmp_path, env={"DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": NOWHERE}, timeout=60)
    assert_one_line_error(result, f"kafka {NOWHERE}: no broker answered")


def test_explain_with_no_broker_says_so_in_one_line_within_seconds(tmp_path):
    """It waited 30 s and printed a 52-line traceback; the timeout here only guards against a hang
    (the wait is `explain.BOOTSTRAP_SECONDS`, 5 s)."""
    (tmp_path / "driftline.yaml").write_text(f"kafka: {{bootstrap_servers: '{NOWHERE}'}}\n")
    result = run("explain", "abc", "--config", "driftline.yaml", cwd=tmp_path, timeout=20)
    assert_one_line_error(result, f"kafka {NOWHERE}: cannot read the alerts topic")


def test_a_reference_too_small_for_the_budget_is_one_warning_saying_how_many_rows_would_do(tmp_path):
    write_training_csv(tmp_path / "train.csv", rows=300)
    result = run("reference", "--input", "train.csv", "--model-id", "fraud", "--out", "ref.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ref.json").is_file()  # a warning, not a refusal
    (line,) = result.stderr.strip().splitlines()
    # amount (cusum, ks), country (3 categorical detectors), the prediction (cusum, ks): 7 detectors
    assert line == (
        "warning: 300 reference rows are too few for the false-alarm budget (0.1 a day over 1,000,000 events,"
        " 7 detectors): about 4,300 rows would do"
    )


def test_a_reference_large_enough_gives_no_warning(tmp_path):
    write_training_csv(tmp_path / "train.csv", rows=4300)
    result = run("reference", "--input", "train.csv", "--model-id", "fraud", "--out", "ref.json", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_rows_needed_follow_the_configuration(tmp_path):
    """A detector watching for larger shifts (a larger CUSUM allowance) or a larger false-alarm
    budget needs fewer rows: 300 then do."""
    write_training_csv(tmp_path / "train.csv", rows=300)
    (tmp_path / "coarse.yaml").write_text("detectors: {params: {cusum: {mean_shifts: [1.0]}}}\n")
    args = ("reference", "--input", "train.csv", "--model-id", "fraud", "--out", "ref.json", "--config")
    result = run(*args, "coarse.yaml", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_rows_needed_by_the_rule():
    from monitor.contracts.config import FeatureType, load_config
    from monitor.monitoring.drift import reference_rows_needed as rows_needed

    config = load_config(None)
    model = config.model("fraud")
    types = {"a": FeatureType.numeric, "b": FeatureType.numeric, "c": FeatureType.numeric}
    types |= {"country": FeatureType.categorical, "__prediction__": FeatureType.numeric}
    # 3 x 2 numeric + 3 categorical + 2 on the score + 1 multivariate; R = 1e7 / 0.5 x 12 = 2.4e8
    assert rows_needed(config, model, types) == (4500, 12)
    budget = config.model_copy(
        update={"alerting": config.alerting.model_copy(update={"false_alarms_per_model_per_day": 100.0})}
    )
    assert rows_needed(budget, model, types) == (1900, 12)  # R = 2.4e5: (ln R / (0.125 ln 10))^2 = 1,853
