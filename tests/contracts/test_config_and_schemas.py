from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.contracts.config import ConfigError, MonitorConfig, load_config
from monitor.contracts.schemas import CONTRACTS, render, stale_schemas


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "driftline.yaml"
    path.write_text(text)
    return path


def test_yaml_config_with_environment_override(tmp_path, monkeypatch):
    path = write(tmp_path, "kafka: {partitions: 3}\nmodels:\n  - model_id: fraud\n    reference: refs/fraud.json\n")
    monkeypatch.setenv("DRIFTLINE_KAFKA__PARTITIONS", "8")
    monkeypatch.setenv("DRIFTLINE_KAFKA__SASL_PASSWORD", "from-env")
    config = load_config(path)
    assert config.kafka.partitions == 8
    assert config.kafka.sasl_password.get_secret_value() == "from-env"
    assert "from-env" not in repr(config)
    assert config.models[0].reference == tmp_path / "refs" / "fraud.json"


def test_model_settings_inherit_global_window(tmp_path):
    path = write(tmp_path, "window: {size_events: 250}\nmodels:\n  - model_id: a\n    window: {size_events: 50}\n")
    config = load_config(path)
    assert config.model("a").window.size_events == 50
    assert config.model("unconfigured").window.size_events == 250


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("window: {size_events: -1}\n", "window.size_events: input should be greater than 0, got -1"),
        ("windw: {}\n", "windw: extra inputs are not permitted"),
        ("models:\n  - {model_id: a}\n  - {model_id: a}\n", "model 'a' is configured twice"),
        ("kafka: {security_protocol: TLS}\n", "kafka.security_protocol: input should be 'PLAINTEXT'"),
        ("window: [\n", "while parsing"),
    ],
)
def test_bad_config_fails_with_field_path_and_reason(tmp_path, text, message):
    with pytest.raises(ConfigError, match="config") as caught:
        load_config(write(tmp_path, text))
    assert message in str(caught.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_checked_in_schemas_are_current(repo_root):
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "schemas", "--check", "--out-dir", str(repo_root / "schemas")],
        capture_output=True,
        text=True,
        cwd=repo_root,
    )
    assert result.returncode == 0, result.stderr


def test_schema_check_catches_a_model_edited_without_regenerating(tmp_path, monkeypatch):
    for name, model in CONTRACTS.items():
        (tmp_path / f"{name}.json").write_text(render(model))
    assert stale_schemas(tmp_path) == []

    class EditedPredictionEvent(CONTRACTS["prediction_event"]):
        new_field: str | None = None

    monkeypatch.setitem(CONTRACTS, "prediction_event", EditedPredictionEvent)
    assert stale_schemas(tmp_path) == ["prediction_event.json"]


def test_metrics_listen_on_every_interface_by_default_and_on_loopback_in_the_demo(tmp_path):
    from monitor.demo import demo_config

    assert MonitorConfig().metrics.host == "0.0.0.0"  # Prometheus scrapes workers from another host
    assert demo_config("127.0.0.1:9092", tmp_path, 0).metrics.host == "127.0.0.1"
