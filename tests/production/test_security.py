"""Security from configuration to the wire, and the absence of dangerous code.

tests/client/test_kafka_settings.py checks that a `KafkaConfig` built in Python reaches the
clients. This file checks the deployment path on top of it: SASL/SSL settings given as
`DRIFTLINE_KAFKA__*` environment variables over the compose stack's YAML file
(`load_config`) reach the objects that connect (kafka-python producer, consumer and the admin
client's connection manager, the publisher's producer, the worker's faust app); the password
stays a `SecretStr` that no repr, dump, error message or log line shows; no repository
configuration holds a secret; and no module under `monitor/` deserialises with pickle, evaluates
code, loads YAML unsafely or runs a shell.
"""

from __future__ import annotations

import ast
import io
import logging
import re
import tokenize
from pathlib import Path

import faust
import pytest
import yaml
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError
from pydantic import SecretStr

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.config import ConfigError, load_config
from monitor.kafka.settings import admin_settings, consumer_settings, faust_settings, producer_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = ROOT / "deploy" / "driftline.yaml"
SECRET = "pa55-from-the-env-7f3a"
CLOSED_PORT = "127.0.0.1:1"
NO_CONNECT = {"api_version": (3, 9)}
"""A pinned protocol version: kafka-python builds producers and consumers without connecting."""


@pytest.fixture
def sasl_env(monkeypatch):
    """The SASL settings an operator sets in the environment of the compose services."""
    for name, value in {
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": CLOSED_PORT,
        "DRIFTLINE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "DRIFTLINE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "DRIFTLINE_KAFKA__SASL_USERNAME": "driftline-svc",
        "DRIFTLINE_KAFKA__SASL_PASSWORD": SECRET,
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def config(sasl_env):
    return load_config(DEPLOY_CONFIG)


def _assert_sasl(settings: dict) -> None:
    assert settings["bootstrap_servers"] == [CLOSED_PORT]
    assert settings["security_protocol"] == "SASL_SSL"
    assert settings["sasl_mechanism"] == "SCRAM-SHA-512"
    assert settings["sasl_plain_username"] == "driftline-svc"
    assert settings["sasl_plain_password"] == SECRET


def test_environment_overrides_the_deployment_file(config):
    assert config.kafka.security_protocol == "SASL_SSL"
    assert isinstance(config.kafka.sasl_password, SecretStr)
    assert config.kafka.consumer_group == "driftline"  # the rest still comes from the file


@pytest.mark.parametrize(
    "client_class, build", [(KafkaProducer, producer_settings), (KafkaConsumer, consumer_settings)]
)
def test_environment_sasl_reaches_kafka_python_clients(config, client_class, build):
    client = client_class(**build(config.kafka, **NO_CONNECT))
    try:
        _assert_sasl(client.config)
    finally:
        client.close()


def test_environment_sasl_reaches_the_admin_clients_connections(config):
    """`KafkaAdminClient` bootstraps in its constructor, so it cannot be built without a broker.
    Its network client (the object that opens the connections) is built before that; a subclass
    of the real one keeps a reference to it, and the bootstrap against a closed port times out."""
    built = []

    class KeptNetworkClient(KafkaAdminClient.DEFAULT_CONFIG["kafka_client"]):
        def __init__(self, **configs):
            super().__init__(**configs)
            built.append(self)

    settings = admin_settings(config.kafka, **NO_CONNECT, bootstrap_timeout_ms=300, kafka_client=KeptNetworkClient)
    with pytest.raises(KafkaTimeoutError):
        KafkaAdminClient(**settings)
    [client] = built
    try:
        _assert_sasl(client._manager.config)
    finally:
        client.close()


def test_environment_sasl_reaches_the_publishers_producer(config):
    publisher = DriftlinePublisher(config.kafka, **NO_CONNECT)
    try:
        _assert_sasl(publisher.producer.config)
    finally:
        publisher.close(timeout=1)


def test_environment_sasl_reaches_the_workers_faust_app(config):
    from monitor.stream.worker import build_app

    # SASL_SSL with no CA file: the system's trust store, hostname checked.
    for app in (faust.App("driftline-settings", **faust_settings(config.kafka)), build_app(config)):
        auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
        assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
        assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("driftline-svc", SECRET)
        assert auth["ssl_context"].check_hostname and auth["ssl_context"].verify_mode.name == "CERT_REQUIRED"
        assert [str(url) for url in app.conf.broker] == [f"kafka://{CLOSED_PORT}"]


def test_the_password_shows_in_no_repr_dump_or_error(config, monkeypatch):
    for text in (
        repr(config),
        str(config),
        repr(config.kafka),
        config.model_dump_json(),
        str(config.model_dump()),
        yaml.safe_dump(config.model_dump(mode="json")),
    ):
        assert SECRET not in text
    assert "**********" in repr(config.kafka.sasl_password)
    # A configuration error elsewhere in the same section does not echo the secret.
    monkeypatch.setenv("DRIFTLINE_KAFKA__SECURITY_PROTOCOL", "SASL_TLS")
    with pytest.raises(ConfigError) as error:
        load_config(DEPLOY_CONFIG)
    assert "security_protocol" in str(error.value) and SECRET not in str(error.value)


def test_the_password_shows_in_no_log_line(config, caplog):
    """Everything logged at DEBUG while clients and the worker app are built, and while a
    producer tries the closed port, is free of the password."""
    from monitor.stream.worker import build_app

    caplog.set_level(logging.DEBUG)
    producer = KafkaProducer(**producer_settings(config.kafka, **NO_CONNECT, max_block_ms=300))
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send("predictions", b"{}").get(timeout=1)
    finally:
        producer.close(timeout=1)
    consumer = KafkaConsumer(**consumer_settings(config.kafka, **NO_CONNECT))
    consumer.close()
    build_app(config)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "nothing was logged: the check would prove nothing"
    assert SECRET not in logged


def test_no_repository_configuration_holds_a_secret():
    """Secrets come only from the environment: no YAML the repository ships sets a password,
    and the compose file passes none in its environments."""
    paths = [ROOT / "docker-compose.yml", *(ROOT / "deploy").rglob("*.yml"), *(ROOT / "deploy").rglob("*.yaml")]
    assert DEPLOY_CONFIG in paths
    secret_key = re.compile(r"(password|secret|token|credentials?)$", re.IGNORECASE)

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if secret_key.search(str(key)) and value not in (None, ""):
                    raise AssertionError(f"{where}: {key} is set in the repository")
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for path in paths:
        walk(yaml.safe_load(path.read_text()), path.relative_to(ROOT))
    assert not load_config(DEPLOY_CONFIG).kafka.sasl_password


# ----------------------------------------------------------------------------- dangerous code

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_SERIALIZERS = {"pickle", "pickle|binary"}


def dangerous_code(source: str, filename: str = "<source>") -> list[str]:
    """Each use of pickle and its kin, eval/exec/compile, unsafe YAML loading, `shell=True`,
    `os.system` or a faust pickle serializer in `source`, as `file:line: what`. Comments and
    docstrings do not count: the code's syntax tree is read, not its text."""
    found = []
    tree = ast.parse(source, filename)

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    report(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            report(node, f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            keywords = {k.arg: k.value for k in node.keywords}
            if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
                report(node, f"{func.id}(...)")
            if isinstance(func, ast.Attribute):
                owner = func.value.id if isinstance(func.value, ast.Name) else None
                if owner == "yaml" and func.attr in UNSAFE_YAML:
                    loader = keywords.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
                    name = getattr(loader, "attr", None) or getattr(loader, "id", None)
                    if func.attr not in ("load", "load_all") or name not in SAFE_LOADERS:
                        report(node, f"yaml.{func.attr} without SafeLoader")
                if owner == "os" and func.attr in ("system", "popen"):
                    report(node, f"os.{func.attr}(...)")
            shell = keywords.get("shell")
            if isinstance(shell, ast.Constant) and shell.value is True:
                report(node, "shell=True")
            for name in ("value_serializer", "key_serializer", "serializer"):
                value = keywords.get(name)
                if isinstance(value, ast.Constant) and value.value in UNSAFE_SERIALIZERS:
                    report(node, f"{name}={value.value!r}")
    return sorted(found, key=lambda line: int(line.split(":")[-2]))


def _code_tokens(source: str) -> str:
    """The source without comments and strings, for a plain grep of names."""
    kept = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type not in (tokenize.COMMENT, tokenize.STRING)
    ]
    return " ".join(kept)


def test_the_checker_finds_each_dangerous_use():
    snippet = """
import pickle, yaml, subprocess, os
from marshal import loads
eval("1 + 1")
exec("x = 1")
yaml.load(text)
yaml.load(text, Loader=yaml.FullLoader)
yaml.unsafe_load(text)
subprocess.run("ls", shell=True)
os.system("ls")
app.topic("t", value_serializer="pickle")
yaml.load(text, Loader=yaml.SafeLoader)
yaml.safe_load(text)
re.compile("x")
"""  # the last three are safe
    found = dangerous_code(snippet)
    assert [line.split(": ", 1)[1] for line in found] == [
        "import pickle",
        "from marshal import ...",
        "eval(...)",
        "exec(...)",
        "yaml.load without SafeLoader",
        "yaml.load without SafeLoader",
        "yaml.unsafe_load without SafeLoader",
        "shell=True",
        "os.system(...)",
        "value_serializer='pickle'",
    ]
    assert "pickle" not in _code_tokens('"""never pickle"""  # no pickle\nx = 1\n')


def test_no_module_under_monitor_uses_pickle_eval_exec_unsafe_yaml_or_a_shell():
    files = sorted((ROOT / "monitor").rglob("*.py"))
    assert len(files) > 30
    found = []
    for path in files:
        source = path.read_text()
        found += dangerous_code(source, str(path.relative_to(ROOT)))
        # And a plain grep of the code (not its docs) for the names, however they are reached.
        code = _code_tokens(source)
        for name in sorted(UNSAFE_MODULES):
            if re.search(rf"\b{name}\b", code):
                found.append(f"{path.relative_to(ROOT)}: mentions {name} in code")
    assert not found, "\n".join(found)
