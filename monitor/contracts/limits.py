"""Limits every incoming event must respect, so hostile or broken producers cannot exhaust memory.

The size limit is checked on the raw bytes before parsing; the others during validation (they
reach the pydantic validators through the validation context, see `EventLimits.context`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventLimits(BaseModel):
    """Safe defaults; raise them in `limits:` of the configuration when a model needs more."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_event_bytes: int = Field(64 * 1024, gt=0)
    """Largest accepted event, in bytes of its encoded form."""
    max_features: int = Field(500, gt=0)
    """Most features one prediction may carry."""
    max_string_length: int = Field(1024, gt=0)
    """Longest string value (feature, prediction or label)."""
    max_vector_length: int = Field(4096, gt=0)
    """Most numbers in one feature value that is a list (an embedding)."""
    max_slices: int = Field(16, gt=0)
    """Most slice names one prediction may carry."""
    earliest_timestamp: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    """Events stamped before this are refused (a clock at zero, a unit mistake)."""
    latest_timestamp: datetime = datetime(2100, 1, 1, tzinfo=UTC)
    """Events stamped at or after this are refused."""

    @staticmethod
    @cache
    def default() -> EventLimits:
        return EventLimits()

    def context(self) -> dict[str, Any]:
        """The validation context that carries these limits into the event validators."""
        return {"limits": self}
