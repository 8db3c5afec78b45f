"""The dashboard as a person sees it: ``kvlab monitor`` runs in a tmux pane against a
stub server (its counters moving) and a server that is down; the pane's text is checked."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvlab.backends.vllm_server import free_port
from monitor.stubs import MetricsStub, bump, fixture, set_value

REPO = Path(__file__).resolve().parents[2]


def tmux() -> str:
    exe = shutil.which("tmux")
    if exe is None:
        msg = "tmux not found: apt-get install tmux (Debian/Ubuntu) to run this test"
        if os.environ.get("CI") or os.environ.get("KVLAB_REQUIRE_LIVE") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return exe


def capture(exe: str, session: str) -> str:
    out = subprocess.run(
        [exe, "capture-pane", "-p", "-t", session], capture_output=True, text=True, timeout=10
    )
    return out.stdout


def test_dashboard_in_tmux(tmp_path: Path) -> None:
    exe = tmux()
    base = set_value(fixture("vllm_metrics.txt"), "vllm:kv_cache_usage_perc", 0.75)
    base = set_value(base, "vllm:num_requests_running", 6)
    base = set_value(base, "vllm:num_requests_waiting", 3)
    stub = MetricsStub(base)
    down = f"127.0.0.1:{free_port()}"
    session = f"kvlab-monitor-{os.getpid()}"
    cmd = (
        f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES PYTHONPATH=src "
        f"{shlex.quote(sys.executable)} "
        f"-m kvlab monitor {stub.url} {down} --interval 0.3 2> {tmp_path / 'err.txt'}"
    )
    subprocess.run(
        [exe, "new-session", "-d", "-s", session, "-x", "130", "-y", "40", cmd],
        check=True,
        timeout=10,
    )
    try:
        screen = ""
        deadline = time.monotonic() + 30
        k = 0
        while time.monotonic() < deadline:
            k += 1  # the server keeps working: queries, hits and preemptions move
            text = bump(base, "vllm:prefix_cache_queries_total", 1000 * k)
            text = bump(text, "vllm:prefix_cache_hits_total", 400 * k)
            stub.body = bump(text, "vllm:num_preemptions_total", 2 * k)
            time.sleep(0.3)
            screen = capture(exe, session)
            if "FIRING Preempting" in screen and "40.0 % of" in screen:
                break
        (tmp_path / "screen.txt").write_text(screen)
        assert "kvlab monitor" in screen and "every 0.3 s" in screen, screen
        assert f"http://{stub.url}/metrics" in screen and f"http://{down}/metrics" in screen
        assert "up, vllm" in screen
        assert "75.0 %" in screen  # the gauge, as a percentage of the 0.75 fraction
        assert "40.0 % of 1,000 tok" in screen  # hits/queries of the last interval
        assert "6 / 3" in screen  # running / waiting
        assert "128-token blocks, 8,192 blocks, dtype auto" in screen
        # the two servers side by side: both panels' top borders on one line
        assert any(line.count("╭─ http://") == 2 for line in screen.splitlines()), screen
        assert "FIRING Preempting" in screen
        assert "UNREACHABLE since" in screen and "cannot reach" in screen
        assert "Traceback" not in screen
    finally:
        subprocess.run([exe, "kill-session", "-t", session], timeout=10, check=False)
        stub.stop()
    assert "Traceback" not in (tmp_path / "err.txt").read_text()
