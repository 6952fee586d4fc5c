"""Settings from `KafkaConfig` reach the real client objects: kafka-python producers, consumers
and the publisher (their `.config`), and faust apps (their `conf`, and the aiokafka settings
faust derives from it). Pinning `api_version` lets kafka-python build a client without
connecting, so SASL/SSL settings can be checked with no SASL broker at hand; the PLAINTEXT path
is exercised for real against the broker."""

from __future__ import annotations

import shutil
import subprocess
import time

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaConsumer, KafkaProducer

from monitor.client import DriftlinePublisher
from monitor.contracts.config import KafkaConfig
from monitor.kafka.settings import (
    EMBEDDED_FAUST,
    admin_settings,
    consumer_settings,
    faust_settings,
    producer_settings,
    ssl_context,
)
from monitor.kafka.topics import ensure_topics

NO_CONNECT = {"api_version": (3, 9)}

SASL_SSL = KafkaConfig(
    bootstrap_servers="kafka-1.internal:9096, kafka-2.internal:9096",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="driftline",
    sasl_password="from-the-environment",
    ssl_cafile="/etc/driftline/ca.pem",
)


@pytest.mark.parametrize(
    "client_class, build", [(KafkaProducer, producer_settings), (KafkaConsumer, consumer_settings)]
)
def test_sasl_ssl_settings_reach_the_kafka_python_clients(client_class, build):
    client = client_class(**build(SASL_SSL, **NO_CONNECT))
    try:
        assert client.config["bootstrap_servers"] == ["kafka-1.internal:9096", "kafka-2.internal:9096"]
        assert client.config["security_protocol"] == "SASL_SSL"
        assert client.config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert client.config["sasl_plain_username"] == "driftline"
        assert client.config["sasl_plain_password"] == "from-the-environment"
        assert client.config["ssl_cafile"] == "/etc/driftline/ca.pem"
    finally:
        client.close()


def test_sasl_settings_reach_the_publisher_producer():
    publisher = DriftlinePublisher(SASL_SSL, linger_ms=20, **NO_CONNECT)
    try:
        config = publisher.producer.config
        assert (config["security_protocol"], config["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
        assert config["sasl_plain_password"] == "from-the-environment"
        assert config["linger_ms"] == 20  # an override wins over the publisher's default of 5
        assert config["max_block_ms"] == 10_000
    finally:
        publisher.close(timeout=1)


def test_admin_settings_carry_the_same_security():
    # KafkaAdminClient always connects when built, so its keyword arguments are checked instead.
    settings = admin_settings(SASL_SSL)
    assert settings["security_protocol"] == "SASL_SSL"
    assert settings["sasl_plain_password"] == "from-the-environment"
    assert settings["ssl_cafile"] == "/etc/driftline/ca.pem"


def test_plaintext_sends_no_security_settings():
    settings = producer_settings(KafkaConfig(bootstrap_servers="localhost:9092"))
    assert settings == {"bootstrap_servers": ["localhost:9092"], "security_protocol": "PLAINTEXT"}


def test_sasl_without_credentials_fails_naming_what_is_missing():
    config = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_username="svc")
    with pytest.raises(ValueError, match="needs kafka.sasl_mechanism, kafka.sasl_password"):
        producer_settings(config)
    with pytest.raises(ValueError, match="needs kafka.sasl_mechanism"):
        faust_settings(config)


def test_the_embedded_workarounds_never_reach_the_kafka_profile():
    production = KafkaConfig(bootstrap_servers="kafka:9092", profile="kafka", replication_factor=3)
    assert "session_timeout_ms" not in consumer_settings(production)
    app, defaults = faust.App("driftline-test", **faust_settings(production)), faust.App("defaults")
    for setting in EMBEDDED_FAUST:
        assert getattr(app.conf, setting) == getattr(defaults.conf, setting), setting
    assert app.conf.topic_replication_factor == 3
    assert [str(url) for url in app.conf.broker] == ["kafka://kafka:9092"]


def test_the_embedded_profile_gets_its_workarounds():
    embedded = KafkaConfig(bootstrap_servers="127.0.0.1:19092", profile="embedded", partitions=6)
    consumer = KafkaConsumer(**consumer_settings(embedded, **NO_CONNECT))
    try:
        assert (consumer.config["session_timeout_ms"], consumer.config["heartbeat_interval_ms"]) == (6000, 2000)
    finally:
        consumer.close()
    app = faust.App("driftline-test", **faust_settings(embedded))
    assert (app.conf.broker_session_timeout, app.conf.broker_heartbeat_interval) == (10, 3)
    assert app.conf.producer_max_batch_size == 1
    assert app.conf.processing_guarantee.value == "at_least_once"
    assert (app.conf.topic_partitions, app.conf.topic_replication_factor) == (6, 1)


def test_sasl_credentials_reach_faust_and_aiokafka():
    config = SASL_SSL.model_copy(update={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256"})
    app = faust.App("driftline-test", **faust_settings(config))
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "driftline",
        "sasl_plain_password": "from-the-environment",
        "ssl_context": None,
    }


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate and its key, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=driftline-test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_ssl_files_reach_faust_as_a_verifying_context(certificate):
    cert, key = certificate
    for protocol in ("SSL", "SASL_SSL"):
        config = SASL_SSL.model_copy(
            update={"security_protocol": protocol, "ssl_cafile": cert, "ssl_certfile": cert, "ssl_keyfile": key}
        )
        app = faust.App("driftline-test", **faust_settings(config))
        auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
        assert auth["security_protocol"] == protocol
        context = auth["ssl_context"]
        assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"
        assert any(ca["subject"] == ((("commonName", "driftline-test"),),) for ca in context.get_ca_certs())


def test_a_wrong_ssl_file_fails_at_start():
    config = SASL_SSL.model_copy(update={"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"})
    with pytest.raises(FileNotFoundError):
        ssl_context(config)


@pytest.mark.broker
def test_embedded_profile_consumers_join_a_group_quickly(kafka_config):
    """The point of the embedded profile: a group member gets its partitions in seconds, not
    the ~23 s the broker makes kafka-python's default 45 s session wait."""
    ensure_topics(kafka_config)
    started = time.monotonic()
    consumer = KafkaConsumer(kafka_config.topics.predictions, **consumer_settings(kafka_config, group_id="g"))
    try:
        while not consumer.assignment() and time.monotonic() - started < 30:
            consumer.poll(timeout_ms=100)
        joined_after, assigned = time.monotonic() - started, consumer.assignment()
    finally:
        consumer.close()
    assert len(assigned) == kafka_config.partitions
    # ~3 s with the embedded profile against ~23 s without: the bound leaves room for a loaded
    # machine and still tells the two apart.
    assert joined_after < (15 if kafka_config.profile == "embedded" else 30)
