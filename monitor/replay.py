"""`driftline replay`: the monitoring core over JSONL files, no broker.

Each input line is one event (a prediction, or an outcome: an object with `label` and no
`features`), in timestamp order. Alerts are written as the alert contract plus
`detected_at_offset`, the 0-based line number of the event whose processing raised it (and
`input`, the file, when there are several). Lines that fail validation go to the dead-letter file
with the reason, and replay goes on. Several inputs are merged by timestamp.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from monitor.contracts.config import MonitorConfig
from monitor.contracts.deadletter import DeadLetter, DeadLetterSource
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.contracts.validation import InvalidEvent, decode_any
from monitor.monitoring.fleet import FleetMonitor, RaisedAlert

BATCH_LINES = 1024
"""Lines decoded before the monitor sees them; alerts still carry each event's own offset."""


@dataclass
class ReplaySummary:
    lines: int = 0
    predictions: int = 0
    outcomes: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class _Line:
    raw: bytes
    file_index: int
    number: int


def _lines(handle: BinaryIO, file_index: int) -> Iterator[_Line]:
    for number, raw in enumerate(handle):
        yield _Line(raw.rstrip(b"\r\n"), file_index, number)


def _timestamp_key(line: _Line) -> str:
    """Sort key for merging inputs: the raw timestamp text (ISO 8601 in UTC sorts as text);
    a line without one sorts first and is dead-lettered."""
    try:
        return str(orjson.loads(line.raw).get("timestamp", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def replay(
    config: MonitorConfig,
    inputs: Sequence[Path],
    alerts_out: Path,
    dead_letters_out: Path,
    progress: bool = False,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
) -> ReplaySummary:
    """Replay `inputs` through a fresh monitor; `on_alert` sees each alert record as it is written."""
    summary = ReplaySummary()
    fleet = FleetMonitor(config)
    limits = config.limits
    handles = [path.open("rb") for path in inputs]
    started = time.perf_counter()
    try:
        streams = [_lines(handle, i) for i, handle in enumerate(handles)]
        lines = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_timestamp_key)
        with (
            alerts_out.open("wb") as alerts_file,
            dead_letters_out.open("wb") as dead_file,
            _progress(inputs, enabled=progress) as advance,
        ):
            batch: list[PredictionEvent | OutcomeEvent] = []
            # Each event's offset for the monitor encodes its file and line (the evaluator may
            # raise an alert for an event of an earlier batch, so no per-batch map would do).
            positions: list[int] = []
            n_inputs = len(inputs)

            def flush(final: bool = False) -> None:
                raised_alerts = fleet.observe(batch, positions)
                if final:
                    raised_alerts += fleet.flush()
                for raised in raised_alerts:
                    record = _alert_record(raised, n_inputs, inputs)
                    alerts_file.write(orjson.dumps(record) + b"\n")
                    if on_alert is not None:
                        on_alert(record)
                    summary.alerts[raised.alert.kind.value] += 1
                batch.clear()
                positions.clear()

            for line in lines:
                summary.lines += 1
                advance(len(line.raw) + 1)
                if not line.raw.strip():
                    continue
                try:
                    event = decode_any(line.raw, limits)
                except InvalidEvent as exc:
                    summary.invalid[exc.reason.value] += 1
                    source = DeadLetterSource(file=str(inputs[line.file_index]), line=line.number)
                    dead_file.write(DeadLetter.of(line.raw, source, exc.reason, str(exc)).model_dump_json().encode())
                    dead_file.write(b"\n")
                    continue
                if isinstance(event, PredictionEvent):
                    summary.predictions += 1
                else:
                    summary.outcomes += 1
                batch.append(event)
                positions.append(line.number * n_inputs + line.file_index)
                if len(batch) >= BATCH_LINES:
                    flush()
            flush(final=True)
    finally:
        for handle in handles:
            handle.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _alert_record(raised: RaisedAlert, n_inputs: int, inputs: Sequence[Path]) -> dict[str, Any]:
    record = raised.alert.model_dump(mode="json")
    record["detected_at_offset"] = None if raised.offset is None else raised.offset // n_inputs
    if n_inputs > 1 and raised.offset is not None:
        record["input"] = str(inputs[raised.offset % n_inputs])
    return record


class _progress:
    """A progress bar over the input bytes on a terminal; nothing otherwise."""

    def __init__(self, inputs: Sequence[Path], enabled: bool):
        self.total = sum(path.stat().st_size for path in inputs)
        self.enabled = enabled
        self._bar = None
        self._pending = 0

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        self._bar = Progress("replay", BarColumn(), DownloadColumn(), TimeRemainingColumn(), transient=True)
        self._bar.start()
        task = self._bar.add_task("replay", total=self.total)

        def advance(n: int) -> None:
            self._pending += n
            if self._pending > 1 << 20:
                self._bar.update(task, advance=self._pending)
                self._pending = 0

        return advance

    def __exit__(self, *exc_info):
        if self._bar is not None:
            self._bar.stop()
        return False
