"""Shared fixtures. Live fixtures (real vLLM servers) live in tests/live/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "kvlab" / "data"


@pytest.fixture
def repo_root() -> Path:
    return REPO
