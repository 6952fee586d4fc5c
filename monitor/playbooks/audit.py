"""The audit trail: every decision, one JSON line each, in a file and (optionally) on a topic.

The file is the runner's memory across restarts (`read`); the topic is for people and tools.
A torn last line (the runner killed mid-write) is skipped when read back, and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import orjson
from pydantic import ValidationError

from monitor.contracts.retrain import PlaybookDecision

log = logging.getLogger(__name__)

Publish = Callable[[bytes | None, bytes], None]
"""Takes a key and a value. Sends them to the audit topic; must not block for long."""


class AuditTrail:
    """Append-only JSONL file, each line also handed to `publish` (errors there are logged, not raised)."""

    def __init__(self, path: Path, publish: Publish | None = None):
        self.path = Path(path)
        self.publish = publish
        self.unreadable_lines = 0
        self.publish_errors = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    def read(self) -> list[PlaybookDecision]:
        """Every decision in the file, oldest first; unreadable lines are skipped and counted."""
        decisions = []
        with self.path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    decisions.append(PlaybookDecision.model_validate_json(line))
                except ValidationError:
                    self.unreadable_lines += 1
        if self.unreadable_lines:
            log.warning("audit %s: %d unreadable lines skipped", self.path, self.unreadable_lines)
        return decisions

    def append(self, decision: PlaybookDecision) -> None:
        line = orjson.dumps(decision.model_dump(mode="json", exclude_none=True))
        self._file.write(line + b"\n")
        self._file.flush()
        if self.publish is not None:
            try:
                self.publish(decision.fingerprint.encode() if decision.fingerprint else None, line)
            except Exception as exc:  # the file has it; the topic is best effort
                self.publish_errors += 1
                log.warning("audit topic: %s", exc)

    def close(self) -> None:
        self._file.close()
