"""Dead letters: every input Driftline could not accept, kept with its original bytes and why.

Nothing is lost: the worker publishes a `DeadLetter` to the dead-letter topic, replay writes it
to a JSONL file, and a person can fix and re-publish the original (`original_b64`).

Where the configuration marks features as personal data (`pii`), an input that could hold them
is kept redacted or not at all (`Redaction`, `RedactedOriginal`; `monitor.contracts.privacy`):

>>> kept = RedactedOriginal(b'{"features": {"email": "[redacted]"}}', b'{"features": {"email": "a@b.c"}}',
...                         Redaction.redacted, ("features.email",))
>>> letter = DeadLetter.of(kept, DeadLetterSource(file="x.jsonl", line=3), DeadLetterReason.schema, "...")
>>> letter.original(), letter.redaction.value, letter.redacted_fields, letter.original_bytes
(b'{"features": {"email": "[redacted]"}}', 'redacted', ['features.email'], 32)
"""

from __future__ import annotations

import base64
import hashlib
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


class Redaction(StrEnum):
    """What became of an input that could hold features marked `pii` in the configuration."""

    redacted = "redacted"
    """Re-encoded as JSON with the marked features' values replaced: by their keyed hash
    (`pii: hash`) or by "[redacted]" (`pii: drop`, or a value that is not a category)."""
    withheld = "withheld"
    """Not parseable, so nothing could be redacted: no bytes are kept, only their size and digest."""


class RedactedOriginal(bytes):
    """The bytes a dead letter keeps in place of an input that could hold marked features, and
    what was done: `DeadLetter.of` records it (`redaction`, `redacted_fields`, `original_bytes`,
    `original_sha256`). A `bytes`, so whoever builds dead letters passes it on unchanged."""

    redaction: Redaction
    fields: tuple[str, ...]
    original_bytes: int
    original_sha256: str

    def __new__(cls, kept: bytes, original: bytes, redaction: Redaction, fields: tuple[str, ...] = ()):
        self = super().__new__(cls, kept)
        self.redaction = redaction
        self.fields = fields
        self.original_bytes = len(original)
        self.original_sha256 = hashlib.sha256(original).hexdigest()
        return self


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
    original_b64: str = Field(
        description="The input exactly as received, base64-encoded; redacted or empty when `redaction` says so."
    )
    source: DeadLetterSource
    reason: DeadLetterReason
    error: str = Field(description="What is wrong, naming the field, for a person.")
    received_at: AwareDatetime
    redaction: Redaction | None = Field(
        None,
        description="Set when the input could hold features marked `pii` in the configuration: `redacted`"
        " (`original_b64` is the input re-encoded as JSON with those features' values replaced by their keyed hash"
        ' or "[redacted]") or `withheld` (unparseable, so no bytes are kept). Absent: `original_b64` is the input'
        " exactly as received.",
    )
    redacted_fields: list[str] | None = Field(
        None, description="Paths of the values replaced, e.g. `features.email` or `events.3.features.email`."
    )
    original_bytes: int | None = Field(None, description="Size of the input as received, when `redaction` is set.")
    original_sha256: str | None = Field(
        None, description="SHA-256 (hex) of the input as received, when `redaction` is set."
    )

    @classmethod
    def of(cls, original: bytes, source: DeadLetterSource, reason: DeadLetterReason, error: str) -> DeadLetter:
        """A dead letter of `original`; a `RedactedOriginal` says what was removed from the input."""
        redacted = {}
        if isinstance(original, RedactedOriginal):
            redacted = {
                "redaction": original.redaction,
                "redacted_fields": list(original.fields) or None,
                "original_bytes": original.original_bytes,
                "original_sha256": original.original_sha256,
            }
        return cls(
            original_b64=base64.b64encode(original).decode("ascii"),
            source=source,
            reason=reason,
            error=error,
            received_at=datetime.now(UTC),
            **redacted,
        )

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)
