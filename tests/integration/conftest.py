"""Fixtures the launcher's integration tests share: a workspace with an ``output/`` write
root and an empty fake HOME (the launcher's audit log goes under it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import empty_home


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    return ws


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return empty_home(tmp_path)
