"""What the ``kvlab serve`` tests share: the command run to its end, the command started
and read until it says it is ready, and the check that no process of a server outlived
Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), **(extra or {})}


def kvlab(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m kvlab ARGS`` run to its end (60 s at most), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "kvlab", *args],
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=60,
        check=False,
        cwd=cwd,
    )


def start_until_ready(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60.0
) -> tuple[subprocess.Popen[str], list[str]]:
    """``python -m kvlab ARGS`` started, and its stderr lines read up to the first that
    starts with "ready" (or its end, or ``timeout_s``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvlab", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=_env(env),
    )
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if line.startswith("ready") or not line:
            break
    return proc, lines


def assert_gone(pid: int) -> None:
    """Fail unless process ``pid`` ends within 5 s."""
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail("a process of the server outlived Ctrl-C")
