"""`driftline explain`: one alert's evidence as a self-contained HTML page, for a person paged at 3 a.m.

The page answers, top to bottom: what fired (kind, model, version, feature, slice, severity,
status), what to read first (the runbook link), how sure the detector is (score against the
threshold actually applied, over the recent windows), what changed (the reference against the
current distribution: a histogram for a numeric column, category bars for a categorical one) and,
for performance alerts, the error metric over time by model version. Then every record of the
alert (fire, repeats, resolve) and every number of its evidence.

Everything is drawn with inline SVG: no script, no style sheet or font fetched, no network (a
Content-Security-Policy meta tag forbids it), so the page opens from a laptop, a ticket or a
mail. Every string that comes from an alert is untrusted input and is escaped (`html.escape`);
the runbook link is only a link when it is `http(s)`.

Where the pictures come from (nothing is recomputed; the page draws what the evidence carries):

* `recent_scores` / `recent_window_ends`: the check's score at each of its last closed windows
  (`monitor.monitoring.drift`, `monitor.evaluation.evaluator`); the scores of the alert's own
  records are added;
* `reference_*` / `current_*`: the reference's and the window's summaries (window tests): for
  numeric columns quantiles (p05 ... p95, min, max), drawn as an equal-mass histogram whose bars
  hold 5, 20, 25, 25, 20 and 5 % of the values; for categorical columns the top categories with
  their counts;
* `metric_name`, `metric_window_ends`, `metric_versions`, `metric_by_version`: the error metric
  of the last closed windows, overall (`all`) and per model version.

>>> from datetime import UTC, datetime
>>> from monitor.contracts.alert import Alert, Evidence
>>> alert = Alert(alert_id="f-1", fingerprint="f", kind="feature_drift", status="firing", severity="warning",
...               model_id="fraud", model_version="all", feature="<amount>", starts_at=datetime(2024, 3, 1, tzinfo=UTC),
...               summary="amount drifted", runbook_url="https://example.org/runbooks/feature_drift",
...               evidence=Evidence(detector="ks", score=0.3, threshold=0.1, settings_hash="abc",
...                                 details={"recent_scores": [0.05, 0.3],
...                                          "recent_window_ends": ["2024-03-01T00:00:00Z", "2024-03-01T01:00:00Z"]}))
>>> page = render_page([alert])
>>> "&lt;amount&gt;" in page and "<amount>" not in page
True
>>> page.count("<svg")
1
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from monitor.contracts.alert import Alert, AlertKind, AlertStatus
from monitor.contracts.config import KafkaConfig

PERFORMANCE_KINDS = frozenset(
    {
        AlertKind.performance_degradation,
        AlertKind.canary_regression,
        AlertKind.slice_regression,
        AlertKind.estimated_performance_drop,
    }
)
"""Kinds whose page shows the error metric over time by model version."""

QUANTILES = ("min", "p05", "p25", "p50", "p75", "p95", "max")
QUANTILE_MASS = (0.05, 0.20, 0.25, 0.25, 0.20, 0.05)
"""Share of the values between consecutive `QUANTILES`: the bars of the equal-mass histogram."""

REFERENCE_COLOUR = "#868e96"
CURRENT_COLOUR = "#e8590c"
THRESHOLD_COLOUR = "#c92a2a"
SERIES_COLOURS = ("#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#5c940d", "#d6336c")

CHART_WIDTH = 1040

BOOTSTRAP_SECONDS = 5
"""How long `explain --config` waits for a broker to answer before saying it does not."""
MAX_POLLS_PAST_END = 5
"""Polls that may still bring records once the end offsets read at the start are reached."""


class ExplainError(ValueError):
    """The alert cannot be explained: not found, ambiguous, or no alerts to read."""


# -- reading alerts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRecord:
    """One alert record as read, with where it came from (file line or topic partition/offset)."""

    alert: Alert
    source: str


def parse_alert_records(raw_records: Iterable[tuple[bytes, str]]) -> tuple[list[AlertRecord], int]:
    """Alerts from raw JSON records (with their source); returns them and how many were skipped
    because they are not alerts (not JSON, or not the alert contract)."""
    records: list[AlertRecord] = []
    skipped = 0
    for raw, source in raw_records:
        if not raw.strip():
            continue
        try:
            records.append(AlertRecord(Alert.model_validate(orjson.loads(raw)), source))
        except (orjson.JSONDecodeError, ValidationError, TypeError):
            skipped += 1
    return records, skipped


def read_alerts_jsonl(path: Path) -> tuple[list[AlertRecord], int]:
    """Alerts of a JSONL file (`driftline replay --alerts-out`, or a dump of the alerts topic)."""
    with path.open("rb") as handle:
        return parse_alert_records((line, f"{path}:{number + 1}") for number, line in enumerate(handle))


def read_alerts_topic(kafka: KafkaConfig, *, timeout_seconds: float = 60.0) -> tuple[list[AlertRecord], int]:
    """Every alert on the alerts topic, from the beginning to the end offsets read at the start
    (and what the next few polls bring). No consumer group: nothing is committed, no other
    consumer is disturbed. A topic that does not exist is waited for 10 s at most."""
    from kafka import KafkaConsumer, TopicPartition

    from monitor.kafka.settings import consumer_settings

    topic = kafka.topics.alerts
    # A person waits at a terminal: a broker that does not answer is said so in seconds, not 30.
    settings = consumer_settings(kafka, group_id=None, enable_auto_commit=False)
    if "bootstrap_timeout_ms" in KafkaConsumer.DEFAULT_CONFIG:  # kafka-python >= 2.1
        settings["bootstrap_timeout_ms"] = BOOTSTRAP_SECONDS * 1000
    consumer = KafkaConsumer(**settings)
    try:
        partitions = None
        started = time.monotonic()
        deadline = started + timeout_seconds
        while partitions is None and time.monotonic() < min(deadline, started + 10):
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        if not partitions:
            raise ExplainError(f"topic {topic!r} not found on {kafka.bootstrap_servers}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        raw: list[tuple[bytes, str]] = []
        # Past the end offsets, poll until nothing comes (at most a few times): the embedded
        # broker under-reports the end when the last batch holds several records (BROKER.md).
        extra_polls = 0
        while extra_polls < MAX_POLLS_PAST_END:
            if time.monotonic() > deadline:
                raise ExplainError(f"timed out after {timeout_seconds:.0f} s reading topic {topic!r}")
            batch = consumer.poll(timeout_ms=500)
            for tp, messages in batch.items():
                raw += [(m.value or b"", f"{topic}[{tp.partition}]@{m.offset}") for m in messages]
            if all(consumer.position(tp) >= end[tp] for tp in assigned):
                if not batch:
                    break
                extra_polls += 1
    finally:
        consumer.close()
    return parse_alert_records(raw)


def select_history(records: Sequence[AlertRecord], alert_id: str) -> tuple[AlertRecord, list[AlertRecord]]:
    """The record to explain and every record sharing its fingerprint (oldest first).

    `alert_id` is an alert's `alert_id`, or a prefix of it or of its fingerprint. The record
    explained is the last one of that firing period (its latest state: a repeat, or the resolve).
    """
    if not alert_id:
        raise ExplainError("empty alert id")
    exact = [r for r in records if r.alert.alert_id == alert_id]
    matches = exact or [
        r for r in records if r.alert.alert_id.startswith(alert_id) or r.alert.fingerprint.startswith(alert_id)
    ]
    if not matches:
        raise ExplainError(f"no alert {alert_id!r} among {len(records)} alert records")
    fingerprints = sorted({r.alert.fingerprint for r in matches})
    if len(fingerprints) > 1:
        listed = ", ".join(
            f"{f} ({next(r.alert.kind.value for r in matches if r.alert.fingerprint == f)})" for f in fingerprints[:10]
        )
        raise ExplainError(f"{alert_id!r} matches {len(fingerprints)} alerts: {listed}; give more of the id")
    chosen = matches[-1]
    history = [r for r in records if r.alert.fingerprint == chosen.alert.fingerprint]
    return chosen, history


# -- formatting ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escaped text of anything from an alert."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e6:
        return f"{value:,.0f}"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _parse_time(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _safe_link(url: str) -> str:
    """An anchor only for http(s) URLs (a `javascript:` URL escaped is still a script)."""
    if url.lower().startswith(("https://", "http://")):
        return f'<a class="runbook" href="{_e(url)}">{_e(url)}</a>'
    return f"<code>{_e(url)}</code> (not an http(s) link)"


# -- SVG charts ------------------------------------------------------------------------------------


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


@dataclass
class _Frame:
    """A plot area and its scales."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: float = CHART_WIDTH
    height: float = 280
    left: float = 70
    right: float = 20
    top: float = 42
    bottom: float = 44
    log: bool = False
    """y on a log10 scale (then `y0` and `y1` are powers of ten)."""

    def x(self, value: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return self.left + (value - self.x0) / span * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        if self.log:
            value = math.log10(max(value, 10**self.y0))
        span = self.y1 - self.y0 or 1.0
        return self.height - self.bottom - (value - self.y0) / span * (self.height - self.top - self.bottom)


def _svg_open(frame: _Frame, label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(label)}" width="{frame.width:.0f}" '
        f'height="{frame.height:.0f}" viewBox="0 0 {frame.width:.0f} {frame.height:.0f}">',
        f'<rect x="0" y="0" width="{frame.width:.0f}" height="{frame.height:.0f}" fill="#fff"/>',
    ]


def _tick_labels(ticks: Sequence[float], digits: int = 3) -> list[str]:
    """Labels of axis ticks with as many significant digits as it takes to tell them apart
    (25.12, 25.14, 25.16 read as 25.1 three times at 3 digits).

    >>> _tick_labels([25.12, 25.14, 25.16]), _tick_labels([0.0, 0.5, 1.0])
    (['25.12', '25.14', '25.16'], ['0', '0.5', '1'])
    """
    for places in range(digits, 16):
        labels = [_num(tick, places) for tick in ticks]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def _y_axis(frame: _Frame, ticks: Sequence[float], label: str) -> list[str]:
    parts = []
    for tick, text in zip(ticks, _tick_labels(ticks), strict=True):
        y = frame.y(tick)
        parts.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e9ecef"/>'
        )
        parts.append(f'<text x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{text}</text>')
    parts.append(
        f'<text x="14" y="{(frame.top + frame.height - frame.bottom) / 2:.0f}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 14 {(frame.top + frame.height - frame.bottom) / 2:.0f})">{_e(label)}</text>'
    )
    return parts


def _time_axis(frame: _Frame) -> list[str]:
    span = frame.x1 - frame.x0
    fmt = "%m-%d %H:%M" if span < 5 * 86400 else "%Y-%m-%d"
    base = frame.height - frame.bottom
    parts = [f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{base}" y2="{base}" stroke="#495057"/>']
    for i in range(6):
        value = frame.x0 + span * i / 5
        x = frame.x(value)
        text = datetime.fromtimestamp(value, UTC).strftime(fmt)
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#495057"/>')
        parts.append(f'<text x="{x:.1f}" y="{base + 18}" text-anchor="{anchor}" class="tick">{text}</text>')
    parts.append(
        f'<text x="{frame.width - frame.right}" y="{frame.height - 6}" text-anchor="end" class="axis">'
        "window end (event time, UTC)</text>"
    )
    return parts


def _legend(items: Sequence[tuple[str, str, str]], x: float, y: float) -> list[str]:
    """Items (label, colour, style: line, dash, box) left to right from (x, y)."""
    parts = []
    for label, colour, style in items:
        if style == "box":
            parts.append(f'<rect x="{x:.0f}" y="{y - 9:.0f}" width="14" height="10" fill="{colour}" opacity="0.75"/>')
        else:
            dash = ' stroke-dasharray="6 4"' if style == "dash" else ""
            parts.append(
                f'<line x1="{x:.0f}" x2="{x + 18:.0f}" y1="{y - 4:.0f}" y2="{y - 4:.0f}" stroke="{colour}" '
                f'stroke-width="2.5"{dash}/>'
            )
        parts.append(f'<text x="{x + 24:.0f}" y="{y:.0f}" class="legend">{_e(label)}</text>')
        x += 24 + 7.2 * len(label) + 22
    return parts


def time_series_chart(
    series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]],
    *,
    y_label: str,
    threshold: float | None = None,
    threshold_label: str = "threshold",
    higher_is_worse: bool = True,
    is_threshold: bool = True,
    title: str = "",
) -> str:
    """Lines over time: `series` are (name, epoch seconds, values; None leaves a gap). A
    threshold is a dashed red line, and points past it are red; with `is_threshold` False the
    line is a grey reference level and no point is marked."""
    line_colour = THRESHOLD_COLOUR if is_threshold else "#495057"
    xs = [t for _, times, _ in series for t in times]
    ys = [v for _, _, values in series for v in values if v is not None]
    if threshold is not None:
        ys.append(threshold)
    if not xs or not ys:
        return ""
    x0, x1 = min(xs), max(xs)
    if x1 - x0 < 60:
        x0, x1 = x0 - 1800, x1 + 1800
    pad = (x1 - x0) * 0.03
    low, high = min(ys), max(ys)
    if low > 0 and high / low > 100:  # scores far over a small threshold: a log scale shows both
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        ticks = [10.0**k for k in range(first, last + 1)]
        frame = _Frame(x0 - pad, x1 + pad, first, last, log=True)
        y_label += " (log scale)"
    else:
        low = min(low, 0.0) if low >= 0 and low < (high - low) * 2 else low
        ticks = _nice_ticks(low, high + (high - low) * 0.05)
        frame = _Frame(x0 - pad, x1 + pad, ticks[0], ticks[-1])
    parts = _svg_open(frame, title or y_label)
    parts += _y_axis(frame, ticks, y_label)
    parts += _time_axis(frame)
    legend: list[tuple[str, str, str]] = []
    if threshold is not None:
        y = frame.y(threshold)
        parts.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{line_colour}" stroke-width="2" stroke-dasharray="6 4"/>'
        )
        legend.append((f"{threshold_label} {_num(threshold)}", line_colour, "dash"))
    for index, (name, times, values) in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        legend.append((name, colour, "line"))
        segment: list[str] = []
        segments: list[list[str]] = []
        for t, v in zip(times, values, strict=True):
            if v is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{frame.x(t):.1f},{frame.y(v):.1f}")
        if segment:
            segments.append(segment)
        for points in segments:
            if len(points) > 1:
                parts.append(
                    f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="2.2"/>'
                )
        for t, v in zip(times, values, strict=True):
            if v is None:
                continue
            past = is_threshold and threshold is not None and (v >= threshold if higher_is_worse else v <= threshold)
            fill = THRESHOLD_COLOUR if past else colour
            when = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
            parts.append(
                f'<circle cx="{frame.x(t):.1f}" cy="{frame.y(v):.1f}" r="{5 if past else 3.5}" fill="{fill}">'
                f"<title>{_e(name)} {when} UTC: {_num(v)}</title></circle>"
            )
    parts += _legend(legend, frame.left, 18)
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(reference: dict[str, float], current: dict[str, float], *, label: str) -> str:
    """Reference against current window of a numeric column, each as an equal-mass histogram
    drawn from its quantiles (bars of equal area hold equal shares), with box strips below."""
    both = [q for q in (reference, current) if all(_finite(q.get(k)) is not None for k in QUANTILES)]
    if len(both) < 2:
        return ""
    low = min(q["min"] for q in both)
    high = max(q["max"] for q in both)
    core_low = min(q["p05"] for q in both)
    core_high = max(q["p95"] for q in both)
    core = (core_high - core_low) or abs(core_high) or 1.0
    # Far tails would squeeze the body of both distributions into a few pixels: clip them.
    x0, x1 = max(low, core_low - 0.6 * core), min(high, core_high + 0.6 * core)
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    densities = []
    for q in both:
        edges = [q[k] for k in QUANTILES]
        bars = []
        for (a, b), mass in zip(zip(edges, edges[1:], strict=False), QUANTILE_MASS, strict=True):
            width = max(b - a, (x1 - x0) * 1e-3)
            bars.append((a, b, mass / width))
        densities.append(bars)
    top = max(d for bars in densities for _, _, d in bars)
    frame = _Frame(x0, x1, 0.0, top * 1.08, height=360, bottom=120)
    parts = _svg_open(frame, f"distribution of {label}")
    parts.append(
        f'<text x="14" y="{(frame.top + 240) / 2:.0f}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 14 {(frame.top + 240) / 2:.0f})">share per unit</text>'
    )
    for (colour, opacity, name), bars in zip(
        ((REFERENCE_COLOUR, 0.45, "reference"), (CURRENT_COLOUR, 0.45, "current window")), densities, strict=True
    ):
        for a, b, density in bars:
            left, right = frame.x(max(a, x0)), frame.x(min(b, x1))
            if right <= left:
                continue
            y = frame.y(density)
            parts.append(
                f'<rect x="{left:.1f}" y="{y:.1f}" width="{right - left:.1f}" height="{frame.y(0) - y:.1f}" '
                f'fill="{colour}" fill-opacity="{opacity}" stroke="{colour}" stroke-width="1.5">'
                f"<title>{name}: {_num(a)} to {_num(b)}</title></rect>"
            )
    axis_y = frame.y(0)
    parts.append(
        f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{axis_y:.1f}" y2="{axis_y:.1f}" '
        'stroke="#495057"/>'
    )
    shown = [tick for tick in _nice_ticks(x0, x1, 8) if x0 <= tick <= x1]
    for tick, text in zip(shown, _tick_labels(shown, 4), strict=True):
        x = frame.x(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y:.1f}" y2="{axis_y + 4:.1f}" stroke="#495057"/>')
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 17:.1f}" text-anchor="middle" class="tick">{text}</text>')
    # Box strips: p05-p95 whiskers, p25-p75 box, median.
    for row, (q, colour, name) in enumerate(
        ((both[0], REFERENCE_COLOUR, "reference"), (both[1], CURRENT_COLOUR, "current"))
    ):
        y = axis_y + 42 + row * 30
        clip = lambda v: frame.x(min(max(v, x0), x1))  # noqa: E731
        parts.append(f'<text x="{frame.left - 6}" y="{y + 4:.0f}" text-anchor="end" class="tick">{name}</text>')
        parts.append(
            f'<line x1="{clip(q["p05"]):.1f}" x2="{clip(q["p95"]):.1f}" y1="{y}" y2="{y}" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        parts.append(
            f'<rect x="{clip(q["p25"]):.1f}" y="{y - 9}" width="{max(clip(q["p75"]) - clip(q["p25"]), 1):.1f}" '
            f'height="18" fill="{colour}" fill-opacity="0.35" stroke="{colour}" stroke-width="1.5">'
            f"<title>{name}: p25 {_num(q['p25'])}, median {_num(q['p50'])}, p75 {_num(q['p75'])}</title></rect>"
        )
        parts.append(
            f'<line x1="{clip(q["p50"]):.1f}" x2="{clip(q["p50"]):.1f}" y1="{y - 11}" y2="{y + 11}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
    clipped = []
    if low < x0:
        clipped.append(f"lowest value {_num(low)}")
    if high > x1:
        clipped.append(f"highest value {_num(high)}")
    note = f" (axis clipped; {', '.join(clipped)})" if clipped else ""
    parts.append(
        f'<text x="{frame.left}" y="{frame.height - 8}" class="axis">{_e(label)}: boxes p25–p75, line median, '
        f"whiskers p05–p95{note}</text>"
    )
    parts += _legend(
        [("reference", REFERENCE_COLOUR, "box"), ("current window", CURRENT_COLOUR, "box")], frame.left, 20
    )
    parts.append("</svg>")
    return "".join(parts)


def category_chart(rows: Sequence[tuple[str, float, float]], *, label: str) -> str:
    """Share of each category in the reference and in the current window, as paired bars."""
    if not rows:
        return ""
    bar, gap = 13, 12
    name_width = min(260, 30 + 7.5 * max(len(name) for name, _, _ in rows))
    height = 50 + len(rows) * (2 * bar + gap) + 40
    top_share = max(max(r, c) for _, r, c in rows) or 1.0
    ticks = _nice_ticks(0.0, top_share, 5)
    frame = _Frame(0.0, ticks[-1], 0, 1, height=height, left=name_width, right=56, top=44, bottom=40)
    parts = _svg_open(frame, f"categories of {label}")
    plot_bottom = height - frame.bottom
    for tick in ticks:
        x = frame.x(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top - 6}" y2="{plot_bottom}" stroke="#e9ecef"/>')
        parts.append(f'<text x="{x:.1f}" y="{plot_bottom + 16}" text-anchor="middle" class="tick">{tick:.0%}</text>')
    y = frame.top
    for name, reference, current in rows:
        parts.append(
            f'<text x="{name_width - 8}" y="{y + bar + 4}" text-anchor="end" class="cat">{_e(name[:40])}</text>'
        )
        for offset, share, colour, which in ((0, reference, REFERENCE_COLOUR, "reference"),
                                             (bar, current, CURRENT_COLOUR, "current")):  # fmt: skip
            width = max(frame.x(share) - frame.x(0), 0.5)
            parts.append(
                f'<rect x="{frame.x(0):.1f}" y="{y + offset}" width="{width:.1f}" height="{bar - 1}" fill="{colour}">'
                f"<title>{_e(name)} {which}: {share:.2%}</title></rect>"
            )
            parts.append(
                f'<text x="{frame.x(0) + width + 5:.1f}" y="{y + offset + 10}" class="tick">{share:.1%}</text>'
            )
        y += 2 * bar + gap
    parts.append(
        f'<text x="{frame.width - frame.right}" y="{height - 6}" text-anchor="end" class="axis">'
        f"share of values of {_e(label)}</text>"
    )
    parts += _legend([("reference", REFERENCE_COLOUR, "box"), ("current window", CURRENT_COLOUR, "box")], 20, 20)
    parts.append("</svg>")
    return "".join(parts)


# -- what the evidence says ------------------------------------------------------------------------


def _numeric_summaries(details: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]] | None:
    reference = {k: details.get(f"reference_{k}") for k in (*QUANTILES, "mean", "std", "count", "nulls")}
    current = {k: details.get(f"current_{k}") for k in (*QUANTILES, "mean", "std", "count", "nulls")}
    if all(_finite(reference[k]) is not None and _finite(current[k]) is not None for k in QUANTILES):
        return reference, current  # type: ignore[return-value]
    return None


def _category_rows(details: dict[str, Any]) -> list[tuple[str, float, float]] | None:
    """(category, reference share, current share) rows: the top categories of either, then
    `(null)` and `(other)` when they hold anything."""
    tops = details.get("reference_top"), details.get("current_top")
    if not all(isinstance(t, list) for t in tops):
        return None
    shares: list[dict[str, float]] = []
    extra: list[tuple[float, float]] = []
    for prefix, top in zip(("reference", "current"), tops, strict=True):
        count = _finite(details.get(f"{prefix}_count")) or 0.0
        nulls = _finite(details.get(f"{prefix}_nulls")) or 0.0
        total = count or 1.0
        share = {}
        for pair in top:  # type: ignore[union-attr]
            if isinstance(pair, list) and len(pair) == 2 and _finite(pair[1]) is not None:
                share[str(pair[0])] = float(pair[1]) / total
        shares.append(share)
        extra.append((nulls / total, max(0.0, 1.0 - sum(share.values()) - nulls / total)))
    names = sorted(set(shares[0]) | set(shares[1]), key=lambda n: -max(shares[0].get(n, 0), shares[1].get(n, 0)))
    rows = [(name, shares[0].get(name, 0.0), shares[1].get(name, 0.0)) for name in names[:15]]
    for index, name in enumerate(("(null)", "(other)")):
        reference, current = extra[0][index], extra[1][index]
        if reference > 1e-9 or current > 1e-9:
            rows.append((name, reference, current))
    return rows


def _series_from(record: Alert) -> tuple[list[float], list[float]]:
    details = record.evidence.details
    scores, ends = details.get("recent_scores"), details.get("recent_window_ends")
    if not isinstance(scores, list) or not isinstance(ends, list) or len(scores) != len(ends):
        return [], []
    points = [(_parse_time(t), _finite(s)) for t, s in zip(ends, scores, strict=True)]
    kept = [(t, s) for t, s in points if t is not None and s is not None]
    return [t for t, _ in kept], [s for _, s in kept]


def score_history(history: Sequence[Alert]) -> list[tuple[str, float, list[float], list[float]]]:
    """Per detector of the alert's records: (detector, its latest threshold, times, scores),
    merging each record's `recent_scores` with the records' own scores."""
    by_detector: dict[str, dict[float, float]] = {}
    thresholds: dict[str, float] = {}
    for record in history:
        evidence = record.evidence
        points = by_detector.setdefault(evidence.detector, {})
        thresholds[evidence.detector] = evidence.threshold
        times, scores = _series_from(record)
        points.update(zip(times, scores, strict=True))
        at = evidence.window_end or record.starts_at
        if _finite(evidence.score) is not None and record.status == AlertStatus.firing:
            points[at.timestamp()] = evidence.score
    out = []
    for detector, points in by_detector.items():
        times = sorted(points)
        out.append((detector, thresholds[detector], times, [points[t] for t in times]))
    return out


def _metric_series(details: dict[str, Any]) -> tuple[str, list[tuple[str, list[float], list[float | None]]]] | None:
    ends, versions, values = (details.get(k) for k in ("metric_window_ends", "metric_versions", "metric_by_version"))
    if not (isinstance(ends, list) and isinstance(versions, list) and isinstance(values, list)):
        return None
    times = [_parse_time(t) for t in ends]
    if any(t is None for t in times) or len(versions) != len(values):
        return None
    series = []
    for version, row in zip(versions, values, strict=True):
        if not isinstance(row, list) or len(row) != len(times):
            return None
        name = "all versions" if version == "all" else f"version {version}"
        series.append((name, times, [_finite(v) for v in row]))
    if len(series) == 2 and versions[0] == "all" and series[0][2] == series[1][2]:
        series = [(f"all versions (only {versions[1]})", times, series[0][2])]  # one line, not two on top
    return str(details.get("metric_name", "metric")), series  # type: ignore[return-value]


def _reference_metric(details: dict[str, Any], metric: str) -> tuple[float, str] | None:
    for key, label in ((f"{metric}_reference", "reference"), (f"{metric}_baseline", "baseline version"),
                       (f"{metric}_overall", "overall")):  # fmt: skip
        value = _finite(details.get(key))
        if value is not None:
            return value, label
    return None


# -- the page --------------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif;color:#212529;margin:0;
background:#f1f3f5}
main{max-width:1080px;margin:0 auto;padding:18px 20px 40px}
header{padding:16px 20px;border-radius:8px;color:#fff;margin-bottom:14px}
header.firing{background:#c92a2a}header.resolved{background:#2b8a3e}
header h1{font-size:21px;margin:6px 0 0;font-weight:600}
.pill{display:inline-block;padding:2px 9px;border-radius:10px;background:rgba(255,255,255,.22);margin-right:6px;
font-size:13px;font-weight:600;letter-spacing:.02em}
section{background:#fff;border-radius:8px;padding:14px 18px;margin-bottom:14px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
h2{font-size:17px;margin:0 0 10px}
.facts{display:grid;grid-template-columns:repeat(2,1fr);gap:2px 28px}
.facts div{display:flex;border-bottom:1px solid #f1f3f5;padding:3px 0}
.facts dt{width:165px;color:#6c757d;flex:none}.facts dd{margin:0;overflow-wrap:anywhere}
.verdict{font-size:16px;margin:10px 0 0}.over{color:#c92a2a;font-weight:700}.under{color:#2b8a3e;font-weight:700}
a.runbook{font-weight:600;color:#1864ab}
.note{color:#6c757d;font-size:13px;margin:6px 0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e9ecef;vertical-align:top}
th{color:#495057;background:#f8f9fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12.5px;overflow-wrap:anywhere}
#records td:nth-child(-n+5),#records td:last-child{white-space:nowrap}#records code{overflow-wrap:normal}
svg{display:block;max-width:100%;height:auto}
svg text{font-family:'DejaVu Sans',Arial,sans-serif}
svg .tick{font-size:11px;fill:#495057}svg .axis{font-size:12px;fill:#495057}svg .legend{font-size:12px;fill:#212529}
svg .cat{font-size:12px;fill:#212529}
footer{color:#868e96;font-size:12px;text-align:center}
"""


def _record_counts(alerts: Sequence[Alert]) -> str:
    """`3: fired, 2 repeats` or `4: fired, 2 repeats, resolved`: what the alert's records were."""
    resolved = sum(a.status is AlertStatus.resolved for a in alerts)
    repeats = len(alerts) - resolved - 1
    parts = ["fired"] + ([f"{repeats} repeat{'s' if repeats != 1 else ''}"] if repeats > 0 else [])
    return f"{len(alerts)}: " + ", ".join(parts + (["resolved"] if resolved else []))


def _facts(alert: Alert, source: str, records: str) -> str:
    evidence = alert.evidence
    rows = [
        ("kind", f"<code>{_e(alert.kind.value)}</code>"),
        ("severity", _e(alert.severity.value)),
        ("model", _e(alert.model_id)),
        ("model version", _e(alert.model_version)),
        ("feature", _e(alert.feature) if alert.feature else "— (model-level)"),
        ("slice", _e(alert.slice) if alert.slice else "— (all traffic)"),
        ("status", _e(alert.status.value)),
        ("started (event time)", _e(_when(alert.starts_at))),
        ("resolved", _e(_when(alert.ends_at)) if alert.ends_at else "— still firing"),
        ("detector", f"<code>{_e(evidence.detector)}</code>"),
        ("window", f"{_e(_when(evidence.window_start))} → {_e(_when(evidence.window_end))}"),
        ("sample sizes", f"reference {_num(evidence.reference_size)} · current {_num(evidence.current_size)}"),
        ("reference version", f"<code>{_e(evidence.reference_version or '—')}</code>"),
        ("settings hash", f"<code>{_e(evidence.settings_hash)}</code>"),
        ("alert id", f"<code>{_e(alert.alert_id)}</code>"),
        ("fingerprint", f"<code>{_e(alert.fingerprint)}</code>"),
        ("records", _e(records)),
        ("read from", f"<code>{_e(source)}</code>"),
    ]
    cells = "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in rows)
    return f'<dl class="facts">{cells}</dl>'


def _verdict(alert: Alert) -> str:
    evidence = alert.evidence
    lower_is_bad = alert.kind in (AlertKind.estimated_performance_drop, AlertKind.labels_missing)
    over = evidence.score <= evidence.threshold if lower_is_bad else evidence.score >= evidence.threshold
    relation = ("at or below" if over else "above") if lower_is_bad else ("at or over" if over else "under")
    css = "over" if over else "under"
    return (
        f'<p class="verdict">Score <span class="{css}">{_num(evidence.score)}</span> is {relation} the threshold '
        f"<b>{_num(evidence.threshold)}</b> applied by <code>{_e(evidence.detector)}</code>.</p>"
    )


def _score_section(alert: Alert, history: Sequence[Alert]) -> str:
    lower_is_bad = alert.kind in (AlertKind.estimated_performance_drop, AlertKind.labels_missing)
    charts = []
    detectors = score_history(history)
    for detector, threshold, times, scores in detectors:
        chart = time_series_chart(
            [(f"{detector} score", times, scores)],
            y_label="score",
            threshold=threshold,
            higher_is_worse=not lower_is_bad,
            title=f"{detector} score against threshold",
        )
        if chart:
            charts.append(f"<h3>{_e(detector)}</h3>{chart}" if len(detectors) > 1 else chart)
    if not charts:
        return ""
    note = (
        "Each point is the check's score when a window closed (for a sequential detector, the highest "
        "statistic in the window; an alarm between closes is its own point). Red points reached the threshold."
    )
    return f'<section id="scores"><h2>Score against threshold over recent windows</h2>{"".join(charts)}' + (
        f'<p class="note">{note}</p></section>'
    )


def _distribution_section(alert: Alert, history: Sequence[Alert]) -> str:
    label = alert.feature or ("the model's predictions" if alert.kind == AlertKind.prediction_drift else "the column")
    for record in reversed(history):
        details = record.evidence.details
        numeric = _numeric_summaries(details)
        window = f"{_when(record.evidence.window_start)} → {_when(record.evidence.window_end)}"
        if numeric is not None:
            reference, current = numeric
            chart = histogram_chart(reference, current, label=label)
            keys = ("count", "nulls", "mean", "std", *QUANTILES)
            head = "".join(f"<th>{k}</th>" for k in keys)
            body = "".join(
                f"<tr><th>{name}</th>" + "".join(f'<td class="n">{_num(q.get(k))}</td>' for k in keys) + "</tr>"
                for name, q in (("reference", reference), ("current", current))
            )
            return (
                f'<section id="distribution"><h2>Reference against current distribution of {_e(label)}</h2>{chart}'
                f'<p class="note">Window {_e(window)}, from the evidence of <code>{_e(record.evidence.detector)}'
                "</code>. Each histogram is drawn from the summary's quantiles: its six bars hold 5, 20, 25, 25, "
                "20 and 5 % of the values, so a bar's area is its share.</p>"
                f"<table><tr><th></th>{head}</tr>{body}</table></section>"
            )
        rows = _category_rows(details)
        if rows is not None:
            chart = category_chart(rows, label=label)
            return (
                f'<section id="distribution"><h2>Reference against current categories of {_e(label)}</h2>{chart}'
                f'<p class="note">Window {_e(window)}, from the evidence of <code>{_e(record.evidence.detector)}'
                "</code>: the ten most frequent categories of each, as shares of all values.</p></section>"
            )
    if alert.kind in (AlertKind.feature_drift, AlertKind.prediction_drift):
        return (
            '<section id="distribution"><h2>Reference against current distribution</h2><p class="note">None of this '
            "alert's records came from a window test, so none carries the reference's and the window's summaries "
            "(a sequential detector alarms at one event, between windows).</p></section>"
        )
    return ""


def _influence_section(alert: Alert, history: Sequence[Alert]) -> str:
    """For `attribution_drift`: each ranked feature's share of the attribution, reference against
    the window (bars), and the evidence's `changed` rows as a table."""
    if alert.kind is not AlertKind.attribution_drift:
        return ""
    for record in reversed(history):
        details = record.evidence.details
        changed, columns = details.get("changed"), details.get("changed_columns")
        if not isinstance(changed, list) or not isinstance(columns, list):
            continue
        rows = [row for row in changed if isinstance(row, list) and len(row) == len(columns)]
        bars = [(str(row[0]), _finite(row[4]) or 0.0, _finite(row[5]) or 0.0) for row in rows]
        head = "".join(f"<th>{_e(str(c).replace('_', ' '))}</th>" for c in columns)
        body = "".join(
            f"<tr><th>{_e(row[0])}</th>" + "".join(f'<td class="n">{_num(v)}</td>' for v in row[1:]) + "</tr>"
            for row in rows
        )
        window = f"{_when(record.evidence.window_start)} → {_when(record.evidence.window_end)}"
        return (
            '<section id="influence"><h2>What drives the predictions: reference against current</h2>'
            f"{category_chart(bars, label='the attribution')}"
            f'<p class="note">Window {_e(window)}: the features whose mean |attribution| changed most, each as a '
            "share of the model's total attribution.</p>"
            f"<table><tr>{head}</tr>{body}</table></section>"
        )
    return ""


def _performance_section(alert: Alert, history: Sequence[Alert]) -> str:
    if alert.kind not in PERFORMANCE_KINDS:
        return ""
    for record in reversed(history):
        details = record.evidence.details
        found = _metric_series(details)
        if found is None:
            continue
        metric, series = found
        reference = _reference_metric(details, metric)
        chart = time_series_chart(
            series,
            y_label=metric.replace("_", " "),
            threshold=reference[0] if reference else None,
            threshold_label=reference[1] if reference else "",
            is_threshold=False,  # a level to compare with, not what decided the alert
            title=f"{metric} by version",
        )
        counts = details.get("metric_counts_by_version")
        table = ""
        if isinstance(counts, list):
            ends = details.get("metric_window_ends") or []
            head = "".join(f"<th>{_e(str(t)[5:16].replace('T', ' '))}</th>" for t in ends)  # type: ignore[union-attr]
            body = "".join(
                f"<tr><th>{_e(name)}</th>" + "".join(f'<td class="n">{_num(c)}</td>' for c in row) + "</tr>"
                for (name, _, _), row in zip(series, counts, strict=False)
                if isinstance(row, list)
            )
            table = (
                '<p class="note">Outcomes per window (a window\'s labels may still be arriving):</p>'
                f'<div style="overflow-x:auto"><table><tr><th>window end</th>{head}</tr>{body}</table></div>'
            )
        return (
            f'<section id="performance"><h2>{_e(metric.replace("_", " "))} over time by model version</h2>{chart}'
            f'<p class="note">Per window of prediction event time, from the outcomes joined so far.</p>{table}'
            "</section>"
        )
    return (
        '<section id="performance"><h2>Metric over time by model version</h2><p class="note">This alert\'s '
        "evidence carries no metric history.</p></section>"
    )


CHARTED = {"recent_scores", "recent_window_ends", "metric_window_ends", "metric_versions", "metric_by_version",
           "metric_counts_by_version", "changed", "changed_columns"}  # fmt: skip


def _details_section(alert: Alert) -> str:
    rows = []
    for key, value in sorted(alert.evidence.details.items()):
        if key in CHARTED:
            continue
        if isinstance(value, list):
            text = _e(orjson.dumps(value).decode()[:400])
        else:
            text = _num(value)
        rows.append(f"<tr><th><code>{_e(key)}</code></th><td>{text}</td></tr>")
    if not rows:
        return ""
    return f'<section id="details"><h2>Evidence details</h2><table>{"".join(rows)}</table></section>'


def _records_section(history: Sequence[AlertRecord]) -> str:
    rows = []
    for record in history:
        alert, evidence = record.alert, record.alert.evidence
        rows.append(
            f"<tr><td>{_e(alert.status.value)}</td><td>{_e(_when(evidence.window_end or alert.starts_at))}</td>"
            f"<td><code>{_e(evidence.detector)}</code></td><td class='n'>{_num(evidence.score)}</td>"
            f"<td class='n'>{_num(evidence.threshold)}</td><td>{_e(alert.summary)}</td>"
            f"<td><code>{_e(record.source)}</code></td></tr>"
        )
    return (
        f'<section id="records"><h2>Records of this alert ({len(history)})</h2><table><tr><th>status</th>'
        "<th>window end</th><th>detector</th><th>score</th><th>threshold</th><th>summary</th><th>source</th></tr>"
        f"{''.join(rows)}</table></section>"
    )


def render_page(
    history: Sequence[Alert | AlertRecord], *, explained: int = -1, generated_at: datetime | None = None
) -> str:
    """The HTML page for `history[explained]` (default: the last record), with every record of
    the alert in `history` (oldest first) for the charts. No script, no external resource."""
    records = [r if isinstance(r, AlertRecord) else AlertRecord(r, "-") for r in history]
    if not records:
        raise ExplainError("no alert records to explain")
    chosen = records[explained]
    alert = chosen.alert
    alerts = [r.alert for r in records]
    status = alert.status.value
    title = f"{alert.kind.value} · {alert.model_id}" + (f" · {alert.feature}" if alert.feature else "")
    generated = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = [
        f'<header class="{_e(status)}"><span class="pill">{_e(status.upper())}</span>'
        f'<span class="pill">{_e(alert.severity.value)}</span><span class="pill">{_e(alert.kind.value)}</span>'
        f"<h1>{_e(alert.summary)}</h1></header>",
        f'<section id="what"><h2>What fired</h2>{_facts(alert, chosen.source, _record_counts(alerts))}{_verdict(alert)}'
        f"<p>Runbook: {_safe_link(alert.runbook_url)}</p></section>",
        _score_section(alert, alerts),
        _distribution_section(alert, alerts),
        _influence_section(alert, alerts),
        _performance_section(alert, alerts),
        _records_section(records),
        _details_section(alert),
        f"<footer>driftline explain · generated {generated} · one file, no script, no network</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def explain(
    alert_id: str,
    out: Path,
    *,
    alerts_path: Path | None = None,
    kafka: KafkaConfig | None = None,
) -> tuple[AlertRecord, int, int]:
    """Read alerts (a JSONL file, or the alerts topic), pick `alert_id` and its records, write
    the page to `out`. Returns the record explained, how many records it has and how many
    records read were skipped as not alerts."""
    if (alerts_path is None) == (kafka is None):
        raise ExplainError("give exactly one source: an alerts JSONL file or the Kafka settings")
    if alerts_path is not None:
        records, skipped = read_alerts_jsonl(alerts_path)
    else:
        assert kafka is not None
        records, skipped = read_alerts_topic(kafka)
    chosen, history = select_history(records, alert_id)
    explained = max(i for i, r in enumerate(history) if r is chosen)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(history, explained=explained), encoding="utf-8")
    return chosen, len(history), skipped
