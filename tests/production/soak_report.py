"""pytest plugin behind `make soak`: a short Markdown report of the slow runs, one row per test
appended as soon as the test finishes, so an interrupted soak (Ctrl-C, a time limit) still leaves
the runs that finished. Loaded with `-p soak_report` (tests/production on PYTHONPATH); writes to
the file named by the SOAK_REPORT environment variable, and does nothing without it. Tests whose id
contains SOAK_LAST (the longest run) go last, so a soak stopped at a time limit has the others."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

_durations: dict[str, float] = {}
_outcomes: dict[str, str] = {}
_notes: dict[str, str] = {}
_reported: set[str] = set()
_started = time.monotonic()


def _path() -> Path | None:
    name = os.environ.get("SOAK_REPORT")
    return Path(name) if name else None


def _append(text: str) -> None:
    path = _path()
    if path is not None:
        with path.open("a") as out:
            out.write(text)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def pytest_configure(config: pytest.Config) -> None:
    path = _path()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    dirty = [line[3:] for line in _git("status", "--short", "--untracked-files=no").splitlines()]
    path.write_text(
        f"# Slow runs (`make soak`), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"- commit {_git('rev-parse', '--short', 'HEAD').strip()}"
        + (f", with uncommitted changes in {', '.join(dirty)}" if dirty else "")
        + f"\n- {os.cpu_count()} cores, load average at start {_load()} (1, 5, 15 min)\n\n"
        "| test | result | duration | load at end | what it printed / why it failed |\n"
        "|---|---|---|---|---|\n"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = os.environ.get("SOAK_LAST")
    if _path() is not None and last:
        items.sort(key=lambda item: last in item.nodeid)  # stable: the rest keep their order


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _path() is None:
        return
    nodeid = report.nodeid
    _durations[nodeid] = _durations.get(nodeid, 0.0) + report.duration
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            _outcomes[nodeid] = "xpassed" if report.passed else "xfailed (known limitation)"
        else:
            _outcomes[nodeid] = report.outcome
        printed = " ".join(line for line in report.capstdout.splitlines() if line.strip())[:600]
        crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
        reason = crash.message.splitlines()[0][:400] if crash is not None else ""
        _notes[nodeid] = "; ".join(text for text in (printed, reason) if text).replace("|", "\\|")
    elif report.when == "teardown" and report.failed:
        _outcomes[nodeid] = "error in teardown"
    if report.when == "teardown":
        _reported.add(nodeid)
        _append(
            f"| `{nodeid}` | {_outcomes.get(nodeid, report.outcome)} | {_minutes(_durations[nodeid])} "
            f"| {_load()} | {_notes.get(nodeid, '')} |\n"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _path() is None:
        return
    unfinished = [item.nodeid for item in session.items if item.nodeid not in _reported]
    lines = [f"\nSession ended after {_minutes(time.monotonic() - _started)}, pytest exit status {int(exitstatus)}."]
    if unfinished:
        lines.append(" Not finished: " + ", ".join(f"`{nodeid}`" for nodeid in unfinished) + ".")
    _append("".join(lines) + "\n")
