"""The producer API for model services: `DriftlinePublisher` (see `monitor.client.publisher`), and
`validate_prediction` / `validate_outcome`, the publisher's checks with no broker
(`monitor.client.events`)."""

from monitor.client.events import validate_outcome, validate_prediction
from monitor.client.publisher import PUBLISHER_DEFAULTS, BrokerUnreachable, DriftlinePublisher
from monitor.contracts.validation import InvalidEvent

__all__ = [
    "PUBLISHER_DEFAULTS",
    "BrokerUnreachable",
    "DriftlinePublisher",
    "InvalidEvent",
    "validate_outcome",
    "validate_prediction",
]
