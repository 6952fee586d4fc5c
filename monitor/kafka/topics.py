"""Create Driftline's topics at start, idempotently, with the admin client.

Every topic gets `kafka.partitions` partitions and `kafka.replication_factor` replicas. A topic
that exists already is left alone (Kafka cannot shrink partitions, and the embedded broker
cannot add them), but `predictions` and `outcomes` must keep the same partition count: the
join co-partitions them by `prediction_id`, so a difference is an error, not a warning.
The worker's own stages (`internal_topics`: the join input and the joined outcomes) and the
compacted changelogs of its tables are created here too, with the same partition count as the
inputs they are co-partitioned with. (faust would create the changelogs when the worker starts;
creating them here also lets an operator recreate every topic after the embedded broker lost
them: a running worker that writes a state before the changelog exists again makes the broker
create it from the produce request, and that record cannot be fetched, so the next worker hangs
in recovery; tests/production/README.md.)
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError, for_code

from monitor.contracts.config import KafkaConfig
from monitor.kafka.settings import admin_settings

log = logging.getLogger(__name__)


class TopicError(RuntimeError):
    """A topic could not be created or has a layout Driftline cannot work with."""


MODEL_STATE_TABLE = "model-state"
"""Table model_id -> monitor state."""
JOIN_STATE_TABLE = "join-state"
"""Table join partition -> join store."""
POSITIONS_TABLE = "input-positions"
"""Table `<topic>:<partition>` -> the next offset of that input partition whose effects are all
saved (b"1234"; `monitor.stream.positions`)."""
STATE_TABLES = (MODEL_STATE_TABLE, JOIN_STATE_TABLE, POSITIONS_TABLE)
"""The worker's tables; each is backed by the compacted changelog `changelog_topic(config, table)`."""


class InternalTopics(NamedTuple):
    join_input: str
    """Prediction and outcome items keyed by `prediction_id` (partitioned like `outcomes`)."""
    joined: str
    """Joined outcomes keyed by `model_id` (partitioned like `predictions`)."""


def internal_topics(config: KafkaConfig) -> InternalTopics:
    """The worker's internal topics, named after its consumer group (as faust names changelogs).

    >>> internal_topics(KafkaConfig(consumer_group="driftline"))
    InternalTopics(join_input='driftline-join-input', joined='driftline-joined')
    """
    group = config.consumer_group
    return InternalTopics(join_input=f"{group}-join-input", joined=f"{group}-joined")


def changelog_topic(config: KafkaConfig, table: str) -> str:
    """The changelog of one of the worker's `STATE_TABLES`, named as faust names it.

    >>> changelog_topic(KafkaConfig(consumer_group="driftline"), MODEL_STATE_TABLE)
    'driftline-model-state-changelog'
    """
    return f"{config.consumer_group}-{table}-changelog"


def topic_names(config: KafkaConfig) -> list[str]:
    """The topics Driftline reads and writes: `TopicsConfig` in order, the internal ones, then
    the changelogs."""
    changelogs = [changelog_topic(config, table) for table in STATE_TABLES]
    return [*config.topics.model_dump().values(), *internal_topics(config), *changelogs]


def ensure_topics(config: KafkaConfig, *, timeout_ms: int = 10_000) -> dict[str, int]:
    """Create the missing topics; the partition count of every topic, created or not.

    Raises `TopicError` when the broker refuses a topic for another reason than its existence,
    or when `predictions` and `outcomes` end up with different partition counts, and kafka-python's
    `KafkaTimeoutError` when no broker answers within `timeout_ms`."""
    names = topic_names(config)
    settings = admin_settings(config, client_id="driftline-topics", request_timeout_ms=timeout_ms)
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:  # kafka-python >= 2.1; 30 s by default
        settings["bootstrap_timeout_ms"] = timeout_ms  # an unreachable broker fails within `timeout_ms` too
    admin = KafkaAdminClient(**settings)
    try:
        changelogs = {changelog_topic(config, table) for table in STATE_TABLES}
        changelog_configs = {"cleanup.policy": "compact", "max.message.bytes": str(config.max_state_bytes)}
        response = admin.create_topics(
            {
                name: {
                    "num_partitions": config.partitions,
                    "replication_factor": config.replication_factor,
                    "configs": changelog_configs if name in changelogs else {},
                }
                for name in names
            },
            timeout_ms=timeout_ms,
            raise_errors=False,
            wait_for_metadata=True,  # new topics can take a moment to show in metadata (KRaft)
        )
        for topic in response["topics"]:
            error = for_code(topic["error_code"])
            if topic["error_code"] == 0:
                log.info("created topic %s (%d partitions)", topic["name"], config.partitions)
            elif error is not TopicAlreadyExistsError:
                detail = topic.get("error_message") or error.__name__
                raise TopicError(f"cannot create topic {topic['name']!r}: {detail}")
        partitions = {
            topic["name"]: len(topic["partitions"])
            for topic in admin.describe_topics(names)
            if topic["error_code"] == 0
        }
    finally:
        admin.close()
    for name in names:
        if partitions.get(name, config.partitions) != config.partitions:
            log.warning("topic %s exists with %d partitions, configured %d", name, partitions[name], config.partitions)
    predictions, outcomes = config.topics.predictions, config.topics.outcomes
    if partitions.get(predictions) != partitions.get(outcomes):
        raise TopicError(
            f"topics {predictions!r} ({partitions.get(predictions)} partitions) and {outcomes!r} "
            f"({partitions.get(outcomes)} partitions) must have the same partition count: "
            "the outcome join is co-partitioned by prediction_id"
        )
    return partitions
