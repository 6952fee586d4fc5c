"""Runbooks: one page per alert kind and per Prometheus rule, no orphan pages, the sections an
on-call engineer needs, and only metric names and commands that exist."""

from __future__ import annotations

import re

import pytest
import yaml
from oncall_support import RULES, RUNBOOKS, driftline_series

from monitor.alerts.lifecycle import MUTED_BY
from monitor.cli import main as cli
from monitor.contracts.alert import AlertKind

SECTIONS = ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Automatic actions"]
NOT_PAGES = {"README.md"}


def rule_names() -> set[str]:
    return {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}


def kind_rule_names() -> set[str]:
    return {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "driftline_alert_active" in rule["expr"]
    }


def pages() -> dict[str, str]:
    return {path.stem: path.read_text() for path in RUNBOOKS.glob("*.md") if path.name not in NOT_PAGES}


def expected_pages() -> set[str]:
    """Kinds, and the Prometheus rules that are not about a kind."""
    return {kind.value for kind in AlertKind} | (rule_names() - kind_rule_names())


def test_every_kind_and_rule_has_a_page():
    assert expected_pages() - set(pages()) == set()


def test_no_orphan_pages():
    assert set(pages()) - expected_pages() == set()


@pytest.mark.parametrize("page", sorted(expected_pages()))
def test_page_has_the_sections_in_order(page):
    text = pages()[page]
    assert text.startswith(f"# {page}\n")
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions, f"{page}: missing {[s for s, p in zip(SECTIONS, positions, strict=True) if p < 0]}"
    assert positions == sorted(positions), f"{page}: sections out of order"


@pytest.mark.parametrize("kind", list(AlertKind), ids=str)
def test_kind_page_explains_evidence_and_muting(kind):
    text = pages()[kind.value]
    for field in ("score", "threshold", "current_size", "window_start"):
        assert field in text, f"{kind}: evidence field {field} not explained"
    assert "Muted by:" in text
    if kind in MUTED_BY:
        cause, _ = MUTED_BY[kind]
        muted_by_line = text[text.index("Muted by:") :].split("\n\n")[0]
        assert f"`{cause.value}`" in muted_by_line, f"{kind}: the page does not name its cause {cause}"
    section = text[text.index("## Automatic actions") :]
    assert "dry_run" in section and "kill switch" in section and "driftline-audit" in section


@pytest.mark.parametrize("page", sorted(expected_pages()))
def test_page_names_only_metrics_that_exist(page):
    known = set(driftline_series())
    # series names of Driftline's own metrics (counters end in _total; label names like
    # `driftline_worker` do not occur)
    named = set(re.findall(r"\bdriftline_[a-z_]+\b", pages()[page]))
    assert named - known == set(), f"{page}: unknown metrics {sorted(named - known)}"


@pytest.mark.parametrize("page", sorted(expected_pages()) + ["README"])
def test_page_names_only_driftline_commands_that_exist_or_are_planned(page):
    text = (RUNBOOKS / f"{page}.md").read_text()
    used = set(re.findall(r"`driftline ([a-z]+)", text)) | set(re.findall(r"^\s*driftline ([a-z]+)", text, re.M))
    assert used - set(cli.commands) == set(), page
