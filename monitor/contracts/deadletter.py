"""Dead letters: every input Driftline could not accept, kept with its original bytes and why.

Nothing is lost: the worker publishes a `DeadLetter` to the dead-letter topic, replay writes it
to a JSONL file, and a person can fix and re-publish the original (`original_b64`).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from monitor.contracts.events import SCHEMA_VERSION


class DeadLetterReason(StrEnum):
    """Why an input was refused."""

    undecodable = "undecodable"
    """Not UTF-8, not JSON, or not a JSON object."""
    oversize = "oversize"
    """Larger than `limits.max_event_bytes`."""
    schema = "schema"
    """A field is missing, has the wrong type or an invalid value."""
    limit = "limit"
    """Within the size limit but over another limit (features, string length, timestamp range)."""
    unreadable = "unreadable"
    """The Kafka record could not be read (its batch failed the CRC check): skipped, with no
    bytes kept; `source` says where it is in the log."""


class DeadLetterSource(BaseModel):
    """Where the input came from: a Kafka record, or a line of a file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    file: str | None = None
    line: int | None = Field(None, description="0-based line number in `file`.")
    index: int | None = Field(
        None,
        description="0-based index of the event in its message's batch envelope; absent for a message of one event.",
    )


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: str = SCHEMA_VERSION
    original_b64: str = Field(description="The input exactly as received, base64-encoded.")
    source: DeadLetterSource
    reason: DeadLetterReason
    error: str = Field(description="What is wrong, naming the field, for a person.")
    received_at: AwareDatetime

    @classmethod
    def of(cls, original: bytes, source: DeadLetterSource, reason: DeadLetterReason, error: str) -> DeadLetter:
        return cls(
            original_b64=base64.b64encode(original).decode("ascii"),
            source=source,
            reason=reason,
            error=error,
            received_at=datetime.now(UTC),
        )

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)
