"""The producer API for model services: `DriftlinePublisher` (see `monitor.client.publisher`)."""

from monitor.client.publisher import PUBLISHER_DEFAULTS, DriftlinePublisher
from monitor.contracts.validation import InvalidEvent

__all__ = ["PUBLISHER_DEFAULTS", "DriftlinePublisher", "InvalidEvent"]
