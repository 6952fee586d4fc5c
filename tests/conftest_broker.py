"""pytest plugin: one Kafka broker for the whole test session, for tests marked `broker`.

Load it from `tests/conftest.py` with `pytest_plugins = ["conftest_broker"]`. The broker is,
in this order:

1. `DRIFTLINE_TEST_BOOTSTRAP=host:port`: an external broker (profile `kafka`, or the value of
   `DRIFTLINE_TEST_PROFILE`);
2. Docker, when an engine answers (and `DRIFTLINE_TEST_DOCKER` is not `0`): `apache/kafka`
   (`DRIFTLINE_TEST_KAFKA_IMAGE`) in KRaft mode through testcontainers, profile `kafka`;
3. the embedded broker (`monitor.kafka.broker.EmbeddedBroker`), profile `embedded`.

Fixtures: `kafka_bootstrap` and `kafka_profile` (session), `test_broker` (both, and where the
broker came from), and `kafka_config`: a `KafkaConfig` for that broker whose topic names are
unique to the test, so tests sharing the session broker never read each other's events.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pytest

from monitor.contracts.config import KafkaConfig, TopicsConfig

Profile = Literal["embedded", "kafka"]
_PROFILES = ("embedded", "kafka")
APACHE_KAFKA_IMAGE = "apache/kafka:3.9.0"


@dataclass(frozen=True)
class BrokerUnderTest:
    bootstrap_servers: str
    profile: Profile
    source: Literal["environment", "docker", "embedded"]


def _profile_from_env() -> Profile:
    profile = os.environ.get("DRIFTLINE_TEST_PROFILE", "kafka")
    if profile not in _PROFILES:
        raise pytest.UsageError(f"Invalid 'DRIFTLINE_TEST_PROFILE'. Valid values are: {_PROFILES}")
    return profile  # type: ignore[return-value]


def docker_answers(timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers a ping; False, quickly, when there is none."""
    if os.environ.get("DRIFTLINE_TEST_DOCKER", "1") == "0":
        return False
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
    except Exception:  # no socket, no permission, bad DOCKER_HOST: all mean "no Docker"
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _apache_kafka_container(image: str):
    """testcontainers' `KafkaContainer` drives Confluent images (its start script sources
    /etc/confluent/docker/*); this subclass keeps its start mechanism (a script written once the
    host port is known, so the advertised listener matches it) and configures the official
    `apache/kafka` image in KRaft mode, as testcontainers-java's `org.testcontainers.kafka`
    does."""
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.kafka import KafkaContainer

    class ApacheKafkaContainer(KafkaContainer):
        def __init__(self) -> None:
            super().__init__(image=image, port=9092)
            self.wait_for = re.compile(r".*Transitioning from RECOVERY to RUNNING.*")

        def configure(self) -> None:
            settings = {
                "CLUSTER_ID": "4L6g3nShT-eMCtK--X86sw",
                "KAFKA_NODE_ID": "1",
                "KAFKA_BROKER_ID": "1",
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9094",
                "KAFKA_LISTENERS": "PLAINTEXT://:9092,BROKER://:9093,CONTROLLER://:9094",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "BROKER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
                "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
                "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
                "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            }
            for name, value in settings.items():
                self.with_env(name, value)

        def tc_start(self) -> None:
            host, port = self.get_container_host_ip(), self.get_exposed_port(self.port)
            script = (
                "#!/bin/bash\n"
                f"export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://{host}:{port},BROKER://$(hostname -i):9093\n"
                "exec /etc/kafka/docker/run\n"
            )
            self.create_file(script.encode(), self.TC_START_SCRIPT)

    return ApacheKafkaContainer()


@pytest.fixture(scope="session")
def test_broker() -> Iterator[BrokerUnderTest]:
    external = os.environ.get("DRIFTLINE_TEST_BOOTSTRAP")
    if external:
        yield BrokerUnderTest(external, _profile_from_env(), "environment")
        return
    if docker_answers():
        container = _apache_kafka_container(os.environ.get("DRIFTLINE_TEST_KAFKA_IMAGE", APACHE_KAFKA_IMAGE))
        container.start(timeout=120)
        try:
            yield BrokerUnderTest(container.get_bootstrap_server(), "kafka", "docker")
        finally:
            container.stop()
        return
    from monitor.kafka.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield BrokerUnderTest(broker.bootstrap_servers, "embedded", "embedded")


@pytest.fixture(scope="session")
def kafka_bootstrap(test_broker: BrokerUnderTest) -> str:
    return test_broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_profile(test_broker: BrokerUnderTest) -> Profile:
    return test_broker.profile


@pytest.fixture
def kafka_config(request: pytest.FixtureRequest, kafka_bootstrap: str, kafka_profile: Profile) -> KafkaConfig:
    """Settings for the session broker, with topic names unique to this test."""
    suffix = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:80].strip("-") + "-" + uuid.uuid4().hex[:8]
    topics = {name: f"{default}.{suffix}" for name, default in TopicsConfig().model_dump().items()}
    return KafkaConfig(
        bootstrap_servers=kafka_bootstrap,
        profile=kafka_profile,
        topics=TopicsConfig(**topics),
        consumer_group=f"driftline.{suffix}",
        partitions=4,
    )
