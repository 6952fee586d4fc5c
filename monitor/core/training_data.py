"""Rows of training data for reference profiles, from CSV, Parquet or JSONL.

Every format yields `(features, prediction)`: a flat row is all features except the prediction
column; a JSONL line shaped like a prediction event (`features`, `prediction`) is read as one.
CSV cells are text, so numbers are parsed and empty cells are nulls.

>>> list(_csv_value(v) for v in ["1.5", "7", "", "DE"])
[1.5, 7, None, 'DE']
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

Row = tuple[dict[str, Any], Any]


def _csv_value(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _split(row: dict[str, Any], features: Sequence[str] | None, prediction_column: str) -> Row:
    prediction = row.pop(prediction_column, None)
    if features is not None:
        row = {name: row.get(name) for name in features}
    return row, prediction


def read_rows(
    path: Path, features: Sequence[str] | None = None, prediction_column: str = "prediction"
) -> Iterator[Row]:
    """Rows of `path`, chosen by its suffix: `.csv`, `.parquet` or `.jsonl`."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as handle:
            for record in csv.DictReader(handle):
                yield _split({k: _csv_value(v) for k, v in record.items()}, features, prediction_column)
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("reading Parquet needs pyarrow: pip install 'driftline[parquet]'") from None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for record in batch.to_pylist():
                yield _split(record, features, prediction_column)
    elif suffix in (".jsonl", ".ndjson"):
        with path.open("rb") as handle:
            for number, line in enumerate(handle):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number + 1}: not JSON ({exc})") from None
                if isinstance(record.get("features"), dict):
                    record = {**record["features"], prediction_column: record.get("prediction")}
                yield _split(record, features, prediction_column)
    else:
        raise ValueError(f"{path}: unknown format {suffix!r}; use .csv, .parquet or .jsonl")
