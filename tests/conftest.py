"""Shared fixtures. Live fixtures (real vLLM servers) live in tests/live/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "kvlab" / "data"


@pytest.fixture
def repo_root() -> Path:
    return REPO


def _require_live(reason: str) -> None:
    if os.environ.get("KVLAB_REQUIRE_LIVE") == "1":
        pytest.fail(f"{reason} (KVLAB_REQUIRE_LIVE=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require_live() -> Callable[[str], None]:
    """``require_live(reason)``: skip a test that needs vLLM or the hf extra, or fail
    it when KVLAB_REQUIRE_LIVE=1 (CI must run everything)."""
    return _require_live


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The interpreter with vLLM installed, from KVLAB_VLLM_PYTHON (scripts/setup_vllm.sh)."""
    py = os.environ.get("KVLAB_VLLM_PYTHON", "")
    if not py:
        _require_live("KVLAB_VLLM_PYTHON is not set (run scripts/setup_vllm.sh)")
    if not Path(py).exists():
        _require_live(f"KVLAB_VLLM_PYTHON={py} does not exist")
    return py


@pytest.fixture(scope="session")
def cli() -> Callable[[list[str]], object]:
    """``cli(argv)``: run ``kvlab ARGV`` in-process (see tests/cli_run.py)."""
    from cli_run import run_cli

    return run_cli


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the fuzz tests' counts (tests/test_fuzz_cli.py records them as the user
    property ``kvlab_fuzz``; with pytest-xdist the property travels in the report)."""
    totals: dict[str, int] = {}
    for key in ("passed", "failed"):
        for report in terminalreporter.stats.get(key, []):
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", []):
                if name == "kvlab_fuzz":
                    for k, v in value.items():
                        totals[k] = totals.get(k, 0) + v
    if totals:
        terminalreporter.write_sep("-", "kvlab fuzz")
        terminalreporter.write_line(
            ", ".join(f"{k} {v}" for k, v in totals.items()) + " (over every fuzz test run)"
        )
