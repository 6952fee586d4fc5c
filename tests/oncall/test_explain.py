"""`driftline explain`: pages built from alerts of a real replay over simulated traffic (planted
drift, a degrading model, a regressing canary, and a categorical column whose mix changes), with
their content checked, rendered by headless Chromium, and read from the alerts topic."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from monitor.contracts.alert import Alert
from monitor.contracts.config import MonitorConfig
from monitor.observability.explain import (
    AlertRecord,
    ExplainError,
    read_alerts_jsonl,
    render_page,
    select_history,
)
from monitor.replay import replay
from monitor.simulation import simulate

CONFIG = MonitorConfig.model_validate(
    {
        "reference": {"warmup_events": 1000},
        "window": {"size_events": 500, "min_events": 200},
        "alerting": {"repeat_interval_seconds": 900},
        "models": [
            {
                "model_id": "shop",
                "detectors": {"numeric": [], "categorical": ["chi_square"], "prediction": [], "multivariate": []},
            },
        ],  # fmt: skip
    }
)
"""Small windows and frequent repeats, so a short run has window tests and several records per
alert; `shop`'s categorical column is judged by a window test alone (its evidence carries the
category counts; a sequential detector would alarm first, between windows, without them)."""

HOSTILE = "<script>alert(1)</script>"


def shop_events(n: int = 4000) -> list[dict]:
    """A categorical feature whose mix changes after 60% of the run, with a hostile category."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    events = []
    for i in range(n):
        late = i >= 0.6 * n
        colours = ["green", "green", "red", HOSTILE] if late else ["red", "blue", "blue", "green", "red", HOSTILE]
        events.append(
            {
                "model_id": "shop",
                "prediction_id": f"shop-{i}",
                "timestamp": (start + timedelta(seconds=3 * i + 1)).isoformat().replace("+00:00", "Z"),
                "features": {"colour": colours[i % len(colours)], "size": float(i % 11)},
                "prediction": 0.5,
            }
        )
    return events


@pytest.fixture(scope="module")
def alerts_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("explain")
    simulated = folder / "simulated.jsonl"
    simulated.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in simulate(15_000, seed=7, label_delay_hours=1)))
    shop = folder / "shop.jsonl"
    shop.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in shop_events()))
    alerts = folder / "alerts.jsonl"
    replay(CONFIG, [simulated, shop], alerts, folder / "dead.jsonl")
    return alerts


@pytest.fixture(scope="module")
def records(alerts_file) -> list[AlertRecord]:
    found, skipped = read_alerts_jsonl(alerts_file)
    assert skipped == 0
    return found


def history_of(records, kind: str, feature: str | None = None, detector: str | None = None):
    """The history of the first alert of `kind` (on `feature`, with a record from `detector`)."""
    for record in records:
        alert = record.alert
        if alert.kind == kind and (feature is None or alert.feature == feature):
            if detector is None or alert.evidence.detector == detector:
                chosen, history = select_history(records, alert.alert_id)
                return chosen, history
    raise AssertionError(f"no {kind} alert on {feature} by {detector}: {sorted({r.alert.kind for r in records})}")


def page_for(records, kind, feature=None, detector=None) -> tuple[Alert, str]:
    chosen, history = history_of(records, kind, feature, detector)
    return chosen.alert, render_page(history, explained=history.index(chosen))


def assert_self_contained(page: str) -> None:
    lowered = page.lower()
    assert "<script" not in lowered and "javascript:" not in lowered
    assert " src=" not in lowered and "<link" not in lowered and "url(" not in lowered and "@import" not in lowered
    assert "default-src 'none'" in page


def test_numeric_feature_drift_page(records):
    alert, page = page_for(records, "feature_drift", "amount", "ks")
    assert_self_contained(page)
    assert f'href="{alert.runbook_url}"' in page and alert.runbook_url.endswith("/feature_drift.md")
    assert "Reference against current distribution of amount" in page
    assert page.count("<svg") >= 3  # cusum and ks score charts, the histogram
    assert "Score against threshold over recent windows" in page
    assert "stroke-dasharray" in page  # the threshold line
    assert alert.fingerprint in page and "fraud-scorer" in page
    # the histogram's quantile table: the window's median is well above the reference's
    ks_record = next(r.alert for r in records if r.alert.evidence.detector == "ks" and r.alert.feature == "amount")
    details = ks_record.evidence.details
    assert details["current_p50"] > 1.5 * details["reference_p50"]
    assert len(details["recent_scores"]) == len(details["recent_window_ends"]) >= 2
    assert details["recent_scores"][-1] == pytest.approx(ks_record.evidence.score, rel=1e-5)


def test_a_cusum_raised_drift_page_draws_the_distributions_and_says_what_moved(records):
    """Sequential detectors alarm between window closes; their alerts carry the window's and the
    reference's summaries too, so the page draws them (it drew nothing before)."""
    alert, page = page_for(records, "feature_drift", "amount", "cusum")
    assert alert.evidence.detector == "cusum"
    assert "Reference against current distribution of amount" in page
    assert alert.evidence.details["direction"] == "up" and "'amount' moved up" in alert.summary


def test_categorical_drift_page_shows_category_bars(records):
    alert, page = page_for(records, "feature_drift", "colour")
    assert_self_contained(page)
    assert "Reference against current categories of colour" in page
    for category in ("green", "blue", "red"):
        assert f">{category}</text>" in page
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_performance_page_draws_the_metric_by_version(records):
    alert, page = page_for(records, "canary_regression")
    assert_self_contained(page)
    assert "error rate over time by model version" in page
    assert "version v1" in page and "version v2" in page and "baseline version" in page
    assert page.count("<polyline") >= 3  # z-score history, v1, v2 (and all versions)
    details = alert.evidence.details
    v1, v2 = (details["metric_by_version"][details["metric_versions"].index(v)] for v in ("v1", "v2"))
    assert sum(x for x in v2 if x is not None) > sum(x for x in v1 if x is not None)  # the planted regression
    _, page = page_for(records, "performance_degradation")
    assert "error rate over time by model version" in page and "reference 0.1" in page


def test_untrusted_strings_are_escaped_and_a_script_url_is_not_a_link(records):
    chosen, history = history_of(records, "feature_drift", "amount", "ks")
    evidence = chosen.alert.evidence.model_copy(
        update={"detector": HOSTILE, "details": {**chosen.alert.evidence.details, HOSTILE: HOSTILE}}
    )
    hostile = chosen.alert.model_copy(
        update={
            "summary": HOSTILE,
            "feature": '"><img src=x onerror=alert(1)>',
            "model_id": HOSTILE,
            "runbook_url": "javascript:alert(1)",
            "evidence": evidence,
        }
    )
    page = render_page([*[r.alert for r in history], hostile])
    assert "<script>" not in page and "<img" not in page
    assert 'href="javascript' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "not an http(s) link" in page


def test_select_history_by_id_prefix_and_fingerprint(records):
    canary = next(r for r in records if r.alert.kind == "canary_regression")
    by_id, history = select_history(records, canary.alert.alert_id)
    assert by_id.alert.alert_id == canary.alert.alert_id
    assert len(history) >= 2 and all(r.alert.fingerprint == canary.alert.fingerprint for r in history)
    assert history[-1] is by_id  # the latest state of that firing period
    by_fingerprint, _ = select_history(records, canary.alert.fingerprint[:8])
    assert by_fingerprint is by_id
    with pytest.raises(ExplainError, match="no alert"):
        select_history(records, "zzzz")
    with pytest.raises(ExplainError, match="empty"):
        select_history(records, "")  # empty never matches everything
    prefixes = {r.alert.fingerprint[0] for r in records}
    shared = next(p for p in prefixes if len({r.alert.fingerprint for r in records if r.alert.fingerprint[0] == p}) > 1)
    with pytest.raises(ExplainError, match="give more of the id"):
        select_history(records, shared)


def driftline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True)


def test_cli_writes_the_page(records, alerts_file, tmp_path):
    drift = next(r.alert for r in records if r.alert.kind == "feature_drift" and r.alert.feature == "amount")
    out = tmp_path / "page.html"
    result = driftline("explain", drift.fingerprint, "--alerts", str(alerts_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"feature_drift firing {drift.alert_id}" in result.stdout and str(out) in result.stdout
    assert "Reference against current distribution of amount" in out.read_text()
    missing = driftline("explain", "nope", "--alerts", str(alerts_file))
    assert missing.returncode == 1 and "no alert 'nope'" in missing.stderr
    neither = driftline("explain", drift.fingerprint)
    assert neither.returncode == 2 and "--alerts" in neither.stderr


# -- headless Chromium ------------------------------------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is missing: install it with `apt-get install -y chromium` (make system-packages, as root)")


@pytest.mark.parametrize(
    "kind,feature,detector",
    [
        ("feature_drift", "amount", "ks"),
        ("feature_drift", "amount", "cusum"),
        ("performance_degradation", None, None),
        ("feature_drift", "colour", None),
    ],
)
def test_page_renders_in_headless_chromium(records, tmp_path, kind, feature, detector):
    browser = chromium()
    _, page = page_for(records, kind, feature, detector)
    html_path = tmp_path / "page.html"
    html_path.write_text(page)
    screenshot = tmp_path / "page.png"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={screenshot}",
         "--window-size=1200,1600", html_path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert screenshot.exists(), result.stderr[-2000:]
    width, height, rows = png_pixels(screenshot.read_bytes())
    assert (width, height) == (1200, 1600)
    step = 3 if len(rows[0]) == width * 3 else 4
    colours = {row[x : x + 3] for row in rows[::8] for x in range(0, len(row), step * 8)}
    assert len(colours) > 20, f"blank screenshot: {len(colours)} colours"
    red_header = sum(1 for x in range(0, len(rows[40]), step) if rows[40][x] > 180 and rows[40][x + 1] < 80)
    assert red_header > 600  # the firing banner across the page


# -- the alerts topic -------------------------------------------------------------------------------


@pytest.mark.broker
def test_explain_reads_the_alerts_topic(records, kafka_config, tmp_path):
    from kafka import KafkaProducer

    from monitor.kafka.settings import producer_settings
    from monitor.kafka.topics import ensure_topics

    ensure_topics(kafka_config)
    canary = [r.alert for r in records if r.alert.kind == "canary_regression"]
    drift = [r.alert for r in records if r.alert.kind == "feature_drift" and r.alert.feature == "amount"]
    producer = KafkaProducer(**producer_settings(kafka_config))
    for alert in [*drift, *canary]:
        producer.send(kafka_config.topics.alerts, key=alert.model_id.encode(), value=alert.model_dump_json().encode())
    producer.send(kafka_config.topics.alerts, key=b"x", value=b"not an alert")
    producer.flush()
    producer.close()
    config = tmp_path / "driftline.yaml"
    config.write_text(yaml.safe_dump({"kafka": kafka_config.model_dump(mode="json", exclude_none=True)}))
    out = tmp_path / "canary.html"
    result = driftline("explain", canary[0].fingerprint, "--config", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"({len(canary)} records, 1 records skipped: not alerts)" in result.stdout
    page = out.read_text()
    assert "version v2" in page and f"Records of this alert ({len(canary)})" in page
    assert kafka_config.topics.alerts in page  # each record's source: topic[partition]@offset


def test_the_records_row_says_what_the_records_were(records):
    """`records` counts the firing, the repeats and a resolution only when there was one."""
    _, history = history_of(records, "feature_drift", "amount")
    firing = [r for r in history if r.alert.status.value == "firing"]
    assert len(firing) >= 2
    row = render_page(firing).split("<dt>records</dt>")[1].split("</dd>")[0]
    repeats = len(firing) - 1
    assert row == f"<dd>{len(firing)}: fired, {repeats} repeat{'s' if repeats > 1 else ''}"
