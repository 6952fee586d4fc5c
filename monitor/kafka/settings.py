"""The one place that turns `KafkaConfig` into client settings, for kafka-python and for faust.

Two broker profiles: `kafka` (Apache Kafka, production) keeps the clients' defaults; `embedded`
(the Tansu broker of `driftline broker`, see BROKER.md) adds the workarounds it needs: short
group session timeouts (it makes a joining member wait half the session timeout) and, for
faust, `producer_max_batch_size=1` (with batches, its wrong `latest` offsets make table
recovery restore stale state). Those workarounds never apply to the `kafka` profile.

Security settings pass straight through: `security_protocol`, the SASL mechanism, user and
password (a `SecretStr`, revealed only here, into the client), and the SSL files.

>>> from monitor.contracts.config import KafkaConfig
>>> config = KafkaConfig(bootstrap_servers="k1:9093,k2:9093", security_protocol="SASL_SSL",
...                      sasl_mechanism="SCRAM-SHA-512", sasl_username="svc", sasl_password="s3cret")
>>> settings = producer_settings(config)
>>> settings["bootstrap_servers"], settings["sasl_mechanism"], settings["sasl_plain_password"]
(['k1:9093', 'k2:9093'], 'SCRAM-SHA-512', 's3cret')
>>> "session_timeout_ms" in consumer_settings(config)          # production keeps the defaults
False
>>> consumer_settings(config.model_copy(update={"profile": "embedded"}))["session_timeout_ms"]
6000
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from monitor.contracts.config import KafkaConfig

log = logging.getLogger(__name__)

EMBEDDED_CONSUMER = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
"""kafka-python group settings for the embedded broker: a joining member waits 3 s, not 23 s."""

EMBEDDED_FAUST = {
    "broker_session_timeout": 10,
    "broker_heartbeat_interval": 3,
    "producer_max_batch_size": 1,
}
"""faust settings for the embedded broker (BROKER.md: the combination that recovers tables right)."""

_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
_SSL_PROTOCOLS = ("SSL", "SASL_SSL")


def bootstrap_list(config: KafkaConfig) -> list[str]:
    """`"a:9092, b:9092"` as `["a:9092", "b:9092"]`."""
    servers = [server.strip() for server in config.bootstrap_servers.split(",") if server.strip()]
    if not servers:
        raise ValueError("Invalid 'kafka.bootstrap_servers': empty. Valid values are: host:port[,host:port...]")
    return servers


def _check_security(config: KafkaConfig) -> None:
    """Fail at start, naming the missing settings, rather than at the first connection."""
    if config.security_protocol in _SASL_PROTOCOLS:
        missing = [
            name
            for name, value in (
                ("kafka.sasl_mechanism", config.sasl_mechanism),
                ("kafka.sasl_username", config.sasl_username),
                ("kafka.sasl_password", config.sasl_password),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"kafka.security_protocol {config.security_protocol} needs {', '.join(missing)}"
                " (the password from DRIFTLINE_KAFKA__SASL_PASSWORD)"
            )
    if config.ssl_keyfile is not None and config.ssl_certfile is None:
        raise ValueError("kafka.ssl_keyfile is set without kafka.ssl_certfile")


def client_settings(config: KafkaConfig) -> dict[str, Any]:
    """Settings every kafka-python client shares: bootstrap servers and security."""
    _check_security(config)
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap_list(config),
        "security_protocol": config.security_protocol,
    }
    if config.security_protocol in _SASL_PROTOCOLS:
        settings["sasl_mechanism"] = config.sasl_mechanism
        settings["sasl_plain_username"] = config.sasl_username
        settings["sasl_plain_password"] = config.sasl_password.get_secret_value()
    if config.security_protocol in _SSL_PROTOCOLS:
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(config, name)
            if value is not None:
                settings[name] = str(value)
    return settings


def producer_settings(config: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `kafka.KafkaProducer`; `overrides` win."""
    return {**client_settings(config), **overrides}


def close_producer(producer: Any, timeout: float) -> bool:
    """Close a kafka-python producer within about `timeout` s; False if records the broker had not
    taken by then were dropped (their futures fail, so their errbacks see it).

    kafka-python's `close` flushes first and, when that times out (the broker is away), raises
    `KafkaTimeoutError` and leaves the producer open; its `__del__` then tries again at garbage
    collection, and the error surfaces there as an unraisable exception, in whatever code runs
    then. Here such a producer is force-closed: its sender stops and aborts what it still holds,
    and the second `close` has nothing left to flush."""
    import kafka.errors

    try:
        producer.close(timeout=timeout)
        return True
    except kafka.errors.KafkaTimeoutError:
        sender = getattr(producer, "_sender", None)  # kafka-python has no public force-close
        if sender is not None:
            sender.force_close()
            sender.join(timeout)
        producer.close(timeout=0)
        log.warning("Kafka producer closed after %g s with records the broker had not taken: dropped", timeout)
        return False


def consumer_settings(config: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `kafka.KafkaConsumer`, with the embedded profile's group timeouts."""
    settings = client_settings(config)
    if config.profile == "embedded":
        settings.update(EMBEDDED_CONSUMER)
    return {**settings, **overrides}


def admin_settings(config: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `kafka.KafkaAdminClient`; `overrides` win."""
    return {**client_settings(config), **overrides}


def ssl_context(config: KafkaConfig) -> ssl.SSLContext | None:
    """A verifying TLS context from the configured CA and client certificate (None without SSL).

    Built here because faust (over aiokafka) takes a context, not file names; reading the
    files now makes a wrong path fail at start."""
    if config.security_protocol not in _SSL_PROTOCOLS:
        return None
    _check_security(config)
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(config.ssl_cafile) if config.ssl_cafile else None
    )
    if config.ssl_certfile is not None:
        context.load_cert_chain(
            str(config.ssl_certfile), str(config.ssl_keyfile) if config.ssl_keyfile is not None else None
        )
    return context


def faust_credentials(config: KafkaConfig) -> Any:
    """faust `broker_credentials`: `SASLCredentials` (with a TLS context for SASL_SSL),
    `SSLCredentials`, or None for PLAINTEXT."""
    _check_security(config)
    protocol = config.security_protocol
    if protocol == "PLAINTEXT":
        return None
    import faust

    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(config))
    return faust.SASLCredentials(
        username=config.sasl_username,
        password=config.sasl_password.get_secret_value(),
        mechanism=config.sasl_mechanism,
        ssl_context=ssl_context(config),
    )


def faust_settings(config: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for `faust.App(id, **faust_settings(config), store=...)`.

    Both profiles: the broker URLs, credentials, partitions and replication factor of the
    internal topics, and at-least-once processing (faust's default, stated because Driftline's
    state is built for it: it records the offsets it covers and skips replays). The embedded
    profile adds `EMBEDDED_FAUST`."""
    settings: dict[str, Any] = {
        "broker": [f"kafka://{server}" for server in bootstrap_list(config)],
        "broker_credentials": faust_credentials(config),
        "topic_partitions": config.partitions,
        "topic_replication_factor": config.replication_factor,
        "processing_guarantee": "at_least_once",
    }
    if config.profile == "embedded":
        settings.update(EMBEDDED_FAUST)
    return settings
