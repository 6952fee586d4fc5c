"""Events that services publish: one `PredictionEvent` per prediction, one `OutcomeEvent` per label.

These models are the single source of truth for the wire format; `schemas/*.json` are generated
from them (`driftline schemas`). Changes are additive only: a new optional field, never a renamed
or retyped one, and `SCHEMA_VERSION` says which version a producer wrote.

Limits (event size, number of features, string length, timestamp range) come from the
`EventLimits` passed as validation context, so one model serves every configuration:

>>> from monitor.contracts.limits import EventLimits
>>> raw = b'{"model_id": "fraud", "prediction_id": "p1", "timestamp": "2024-01-01T00:00:00Z",'
>>> raw += b' "features": {"amount": 12.5, "country": "DE"}, "prediction": 0.93}'
>>> event = PredictionEvent.model_validate_json(raw, context=EventLimits().context())
>>> event.model_version, event.schema_version, event.features["country"]
('unversioned', '1.1', 'DE')
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from monitor.contracts.limits import EventLimits

SCHEMA_VERSION = "1.1"
"""Version of the event contracts this code writes; readers accept events without one, and every
earlier minor version. 1.1 added `attributions` and list-of-number (embedding) feature values."""

UNVERSIONED = "unversioned"
"""`model_version` of events whose producer did not say which version served them."""

# Unions are tried left to right: the first member that accepts the value wins (faster than
# pydantic's "smart" mode, and unambiguous since the members are strict).
FeatureValue = Annotated[
    StrictBool | StrictInt | StrictFloat | StrictStr | list[StrictFloat] | None, Field(union_mode="left_to_right")
]
"""A feature's value: a number, a string (category), a boolean, a list of numbers (an embedding,
at most `EventLimits.max_vector_length`; integers in it read as floats) or null (missing)."""

Label = Annotated[StrictBool | StrictInt | StrictFloat | StrictStr, Field(union_mode="left_to_right")]
"""A class (string, integer or boolean), a score or a regression value."""

FeatureName = Annotated[str, Field(min_length=1, max_length=256)]

Identifier = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]
"""An id or name: non-empty, at most 256 characters, no control characters."""


class RequestStatus(StrEnum):
    """Outcome of the serving request, for the request error rate per model version."""

    ok = "ok"
    error = "error"
    timeout = "timeout"


def _limits(info: ValidationInfo) -> EventLimits:
    context = info.context or {}
    return context.get("limits") or EventLimits.default()


def _check_string(value: Any, limits: EventLimits, what: str) -> None:
    if isinstance(value, str) and len(value) > limits.max_string_length:
        raise PydanticCustomError(
            "limit_string_length",
            "{what} is {length} characters long, over the limit of {limit}",
            {"what": what, "length": len(value), "limit": limits.max_string_length},
        )


class _Event(BaseModel):
    """Shared settings: unknown fields are allowed but kept apart (`model_extra`) and counted
    by the monitor; NaN and infinity are refused (JSON has no such numbers)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    schema_version: str = Field(SCHEMA_VERSION, max_length=16, description="Contract version the producer wrote.")
    timestamp: AwareDatetime = Field(description="Event time, ISO 8601 with a timezone.")

    @field_validator("timestamp")
    @classmethod
    def _timestamp_in_range(cls, value: datetime, info: ValidationInfo) -> datetime:
        limits = _limits(info)
        if not limits.earliest_timestamp <= value < limits.latest_timestamp:
            raise PydanticCustomError(
                "limit_timestamp",
                "timestamp {value} is outside the accepted range [{earliest}, {latest})",
                {
                    "value": value.isoformat(),
                    "earliest": limits.earliest_timestamp.isoformat(),
                    "latest": limits.latest_timestamp.isoformat(),
                },
            )
        return value


class PredictionEvent(_Event):
    """One prediction served by a model, published when it is made (topic `predictions`, key
    `model_id`)."""

    model_id: Identifier = Field(description="Which model made the prediction.")
    model_version: Identifier = Field(UNVERSIONED, description="Version of the model that served it.")
    prediction_id: Identifier = Field(description="Unique id; the outcome event refers to it.")
    features: dict[FeatureName, FeatureValue] = Field(
        description="Model inputs by name: number, string (category), boolean, list of numbers (embedding)"
        " or null (missing)."
    )
    prediction: Label = Field(description="The class, score or value the model returned.")
    probabilities: dict[Identifier, Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(
        None, description="Probability per class, for classifiers that give them."
    )
    slices: dict[Identifier, Annotated[str, Field(max_length=256)]] | None = Field(
        None, description="Segments the prediction belongs to, e.g. country or device."
    )
    latency_ms: Annotated[float, Field(ge=0.0)] | None = Field(None, description="Serving latency.")
    request_status: RequestStatus | None = Field(None, description="Whether the serving request succeeded.")
    attributions: dict[FeatureName, StrictFloat] | None = Field(
        None,
        description="How much each feature moved this prediction (e.g. SHAP values), in the prediction's units, "
        "by feature name; at most as many as `features` may hold.",
    )

    @field_validator("features")
    @classmethod
    def _features_within_limits(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limits = _limits(info)
        if len(value) > limits.max_features:
            raise PydanticCustomError(
                "limit_features",
                "{count} features, over the limit of {limit}",
                {"count": len(value), "limit": limits.max_features},
            )
        longest = limits.max_string_length
        too_long = [name for name, v in value.items() if type(v) is str and len(v) > longest]
        if too_long:
            _check_string(value[too_long[0]], limits, f"value of feature {too_long[0]!r}")
        longest = limits.max_vector_length
        too_many = [name for name, v in value.items() if type(v) is list and len(v) > longest]
        if too_many:
            raise PydanticCustomError(
                "limit_vector_length",
                "value of feature {name} has {length} numbers, over the limit of {limit}",
                {"name": repr(too_many[0]), "length": len(value[too_many[0]]), "limit": longest},
            )
        return value

    @field_validator("attributions")
    @classmethod
    def _attributions_within_limits(
        cls, value: dict[str, float] | None, info: ValidationInfo
    ) -> dict[str, float] | None:
        limits = _limits(info)
        if value and len(value) > limits.max_features:
            raise PydanticCustomError(
                "limit_attributions",
                "{count} attributions, over the limit of {limit} features",
                {"count": len(value), "limit": limits.max_features},
            )
        return value

    @field_validator("prediction")
    @classmethod
    def _prediction_within_limits(cls, value: Any, info: ValidationInfo) -> Any:
        _check_string(value, _limits(info), "prediction")
        return value

    @field_validator("probabilities")
    @classmethod
    def _probabilities_sum_to_one(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            total = sum(value.values())
            if abs(total - 1.0) > 1e-3:
                raise PydanticCustomError(
                    "probabilities_sum", "probabilities sum to {total}, not 1", {"total": round(total, 6)}
                )
        return value

    @field_validator("slices")
    @classmethod
    def _slices_within_limits(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if value:
            limits = _limits(info)
            if len(value) > limits.max_slices:
                raise PydanticCustomError(
                    "limit_slices",
                    "{count} slices, over the limit of {limit}",
                    {"count": len(value), "limit": limits.max_slices},
                )
        return value


class OutcomeEvent(_Event):
    """The true outcome of an earlier prediction, published when it becomes known (topic
    `outcomes`, key `prediction_id`)."""

    prediction_id: Identifier = Field(description="Id of the prediction this outcome belongs to.")
    model_id: Identifier | None = Field(None, description="Model of that prediction, when the producer knows it.")
    label: Label = Field(description="The true class or value.")

    @field_validator("label")
    @classmethod
    def _label_within_limits(cls, value: Any, info: ValidationInfo) -> Any:
        _check_string(value, _limits(info), "label")
        return value
