"""Shared fixtures. Broker selection lives in its own plugin module."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["conftest_broker"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return ROOT
