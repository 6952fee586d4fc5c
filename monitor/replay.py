"""`driftline replay`: the monitoring core over JSONL files, no broker.

Each input line is one event (a prediction, or an outcome: an object with `label` and no
`features`), in timestamp order. Alerts are written as the alert contract plus
`detected_at_offset`, the 0-based line number of the event whose processing raised it (and
`input`, the file, when there are several). Lines that fail validation go to the dead-letter file
with the reason, and replay goes on. Several inputs are merged by timestamp. Features marked `pii`
in the configuration are removed as the lines are decoded (`monitor.contracts.privacy`), and the
dead letters keep only what the policy allows.
"""

from __future__ import annotations

import csv
import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice, repeat
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from monitor.contracts.batch import decode_batch
from monitor.contracts.config import MonitorConfig
from monitor.contracts.deadletter import DeadLetter, DeadLetterSource
from monitor.contracts.privacy import PrivacyPolicy
from monitor.monitoring.fleet import FleetMonitor, RaisedAlert

BATCH_LINES = 1024
"""Lines decoded together into columns before the monitor sees them; alerts still carry each
event's own offset."""


@dataclass
class ReplaySummary:
    lines: int = 0
    predictions: int = 0
    outcomes: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    report_rows: int = 0

    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


@dataclass(slots=True)
class _Lines:
    """One batch of input lines that are not blank: the raw bytes (newline removed), each line's
    number in its file, and which file (an index into the inputs)."""

    raws: list[bytes]
    numbers: list[int]
    files: list[int]
    read: int
    """Lines read, blank ones included."""
    size: int
    """Bytes read, newlines included (for the progress bar)."""

    def positions(self, n_inputs: int) -> np.ndarray:
        """Each event's position for the monitor encodes its file and line (the evaluator may
        raise an alert for an event of an earlier batch, so no per-batch map would do)."""
        return np.asarray(self.numbers, dtype=np.int64) * n_inputs + np.asarray(self.files, dtype=np.int64)


def _batches(handles: Sequence[BinaryIO]) -> Iterator[_Lines]:
    """The inputs' lines, `BATCH_LINES` at a time; several inputs are merged by timestamp."""
    if len(handles) == 1:
        yield from _one_input(handles[0])
        return
    streams = [_numbered(handle, i) for i, handle in enumerate(handles)]
    numbered = heapq.merge(*streams, key=_timestamp_key)
    while chunk := list(islice(numbered, BATCH_LINES)):
        raws, files, numbers = zip(*chunk, strict=True)
        size = sum(map(len, raws))
        raws = [raw.rstrip(b"\r\n") for raw in raws]
        kept = [i for i, raw in enumerate(raws) if raw.strip()]  # blank lines are skipped, not dead letters
        if len(kept) < len(raws):
            raws, files, numbers = ([column[i] for i in kept] for column in (raws, files, numbers))
        yield _Lines(list(raws), list(numbers), list(files), len(chunk), size)


def _numbered(handle: BinaryIO, file: int) -> Iterator[tuple[bytes, int, int]]:
    """(line, file, line number) of one input (a function, so each stream keeps its own `file`)."""
    return ((raw, file, n) for n, raw in enumerate(handle))


def _one_input(handle: BinaryIO) -> Iterator[_Lines]:
    """`_batches` of one input, the work per batch in C where it can be (no tuple per line)."""
    start = 0
    while chunk := list(islice(handle, BATCH_LINES)):
        size = sum(map(len, chunk))
        raws = list(map(bytes.rstrip, chunk, repeat(b"\r\n")))
        numbers = list(range(start, start + len(chunk)))
        start += len(chunk)
        if not all(map(bytes.startswith, raws, repeat(b"{"))):  # some line may be blank: skipped, not dead letters
            kept = [i for i, raw in enumerate(raws) if raw.strip()]
            if len(kept) < len(raws):
                raws, numbers = [raws[i] for i in kept], [numbers[i] for i in kept]
        yield _Lines(raws, numbers, [0] * len(raws), len(chunk), size)


def _timestamp_key(line: tuple[bytes, int, int]) -> str:
    """Sort key for merging inputs: the raw timestamp text (ISO 8601 in UTC sorts as text);
    a line without one sorts first and is dead-lettered."""
    try:
        return str(orjson.loads(line[0]).get("timestamp", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


REPORT_METRICS = ("accuracy", "error_rate", "f1", "roc_auc", "log_loss", "brier", "ece", "mae", "rmse")
"""Realised metrics in the window report (those the model's task has)."""

REPORT_EVERY = 16
"""Batches between two refreshes of the window report (each refresh summarises recent windows)."""


class WindowReport:
    """One row per model and evaluation window: predictions, labelled, realised metrics, CBPE's
    estimate, and each drift check's score at the window's close.

    Rows are refreshed while the replay runs, so labels that come after their window closed are
    counted, as long as the window is among the evaluator's recent ones (`max_report_windows`);
    a window's drift scores are those of its close. Written as JSONL, or CSV when the file name
    ends in `.csv`."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}

    def refresh(self, fleet: FleetMonitor) -> None:
        for model_id, monitor in fleet.models.items():
            for window in monitor.evaluator.window_metrics():
                key = (model_id, window["window"])
                row = self.rows.get(key)
                if row is None:
                    row = self.rows[key] = {"model": model_id, **self._drift_scores(monitor, window["end"])}
                row.update(self._counts(window))

    @staticmethod
    def _counts(window: dict[str, Any]) -> dict[str, Any]:
        overall, estimate = window["overall"], window["cbpe"] or {}
        return {
            "window": window["window"],
            "start": _iso(window["start"]),
            "end": _iso(window["end"]),
            "predictions": window["predictions"],
            "labelled": window["labelled"],
            "label_coverage": window["label_coverage"],
            **{metric: overall[metric] for metric in REPORT_METRICS if metric in overall},
            **{f"estimated_{metric}": estimate.get(metric) for metric in ("accuracy", "f1", "roc_auc") if estimate},
        }

    @staticmethod
    def _drift_scores(monitor: Any, end: float | None) -> dict[str, float]:
        scores = {}
        for feature in monitor.drift.features.values():
            for check, points in feature.history.items():
                at_close = [score for when, score in points if when == end]
                if at_close and not check.startswith("data_quality."):
                    scores[f"drift.{feature.name}.{check}"] = at_close[-1]
        return scores

    def write(self, path: Path) -> int:
        rows = [self.rows[key] for key in sorted(self.rows)]
        if path.suffix.lower() == ".csv":
            columns = list(dict.fromkeys(column for row in rows for column in row))
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, columns)
                writer.writeheader()
                writer.writerows(rows)
        else:
            with path.open("wb") as handle:
                for row in rows:
                    handle.write(orjson.dumps(row) + b"\n")
        return len(rows)


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def replay(
    config: MonitorConfig,
    inputs: Sequence[Path],
    alerts_out: Path,
    dead_letters_out: Path,
    progress: bool = False,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    report_out: Path | None = None,
) -> ReplaySummary:
    """Replay `inputs` through a fresh monitor; `on_alert` sees each alert record as it is
    written; `report_out` receives the per-window table (`WindowReport`). A configuration that
    marks features `pii: hash` without the key in the environment raises `ConfigError` before
    anything is read or written."""
    privacy = PrivacyPolicy.from_config(config)
    summary = ReplaySummary()
    fleet = FleetMonitor(config)
    report = WindowReport() if report_out is not None else None
    limits = config.limits
    handles = [path.open("rb") for path in inputs]
    started = time.perf_counter()
    n_inputs = len(inputs)
    try:
        with (
            alerts_out.open("wb") as alerts_file,
            dead_letters_out.open("wb") as dead_file,
            _progress(inputs, enabled=progress) as advance,
        ):

            def write(raised_alerts: list[RaisedAlert]) -> None:
                for raised in raised_alerts:
                    record = _alert_record(raised, n_inputs, inputs)
                    alerts_file.write(orjson.dumps(record) + b"\n")
                    if on_alert is not None:
                        on_alert(record)
                    summary.alerts[raised.alert.kind.value] += 1

            for batch_number, lines in enumerate(_batches(handles)):
                if report is not None and batch_number % REPORT_EVERY == 0:
                    report.refresh(fleet)
                summary.lines += lines.read
                advance(lines.size)
                decoded = decode_batch(lines.raws, lines.positions(n_inputs), limits, privacy=privacy)
                for index, error in decoded.rejected:
                    summary.invalid[error.reason.value] += 1
                    source = DeadLetterSource(file=str(inputs[lines.files[index]]), line=lines.numbers[index])
                    original, error = privacy.refusal(lines.raws[index], error)
                    letter = DeadLetter.of(original, source, error.reason, str(error))
                    dead_file.write(letter.model_dump_json().encode() + b"\n")
                summary.predictions += len(decoded.predictions)
                summary.outcomes += len(decoded.outcomes)
                write(fleet.observe(decoded.predictions, decoded.outcomes))
            write(fleet.flush())
        if report is not None and report_out is not None:
            report.refresh(fleet)
            summary.report_rows = report.write(report_out)
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
