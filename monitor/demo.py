"""`driftline demo`: the monitor over a simulated service with planted problems.

It writes the simulated events (`monitor.simulation`) to a folder, replays them through the
monitor and prints each alert as it fires or resolves, then a summary. It ends by itself.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from monitor.contracts.config import MonitorConfig
from monitor.replay import replay
from monitor.simulation import simulate


def alert_row(record: dict[str, Any], repeat: bool) -> list[str]:
    """One table row: when (event time), what, about what, and the evidence in brief."""
    evidence = record["evidence"]
    if record["status"] == "resolved":
        when, status = record["ends_at"], "[green]resolved[/]"
    elif repeat:
        when, status = evidence["window_end"] or record["starts_at"], "[red]repeat[/]"
    else:
        when, status = record["starts_at"], "[bold red]firing[/]"
    return [
        when[:16].replace("T", " "),
        status,
        record["kind"],
        record["model_id"],
        record["feature"] or record["slice"] or "",
        f"{evidence['detector']} {evidence['score']:.3g} >= {evidence['threshold']:.3g}",
        record["summary"],
    ]


def run_demo(out_dir: Path, n_predictions: int, console: Console) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    events = out_dir / "events.jsonl"
    with events.open("wb") as handle:
        for event in simulate(n_predictions=n_predictions):
            handle.write(orjson.dumps(event) + b"\n")
    console.print(f"simulated {n_predictions} predictions and their delayed outcomes of 3 models -> {events}")
    table = Table("event time", "status", "kind", "model", "feature", "evidence", "summary", title="alerts")
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 3000}})

    seen: set[str] = set()

    def show(record: dict[str, Any]) -> None:
        row = alert_row(record, repeat=record["alert_id"] in seen)
        seen.add(record["alert_id"])
        table.add_row(*row)
        if not console.is_terminal:  # a log, not a screen: one line per alert
            console.print(" | ".join(row), soft_wrap=True)

    with Live(table, console=console, auto_refresh=False) if console.is_terminal else nullcontext() as live:
        summary = replay(
            config,
            [events],
            out_dir / "alerts.jsonl",
            out_dir / "dead-letters.jsonl",
            on_alert=show if live is None else lambda record: (show(record), live.refresh()),
        )
    console.print(
        f"{summary.lines} events in {summary.seconds:.1f} s, {sum(summary.alerts.values())} alerts "
        f"-> {out_dir / 'alerts.jsonl'}"
    )
    return 0
