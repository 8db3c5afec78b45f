"""kvlab where POSIX extras are missing: no ``os.fork``, no ``resource`` module, no signal
handlers in the event loop (Windows), simulated here on any platform.

The core commands (plan, workload, simulate, cache-curve, compare) run in process
through Typer's CliRunner and ``kvlab.cli.entry.main``; a fresh interpreter imports
every backend under the same conditions; the live backend falls back to a plain
SIGINT handler when its loop has none.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvlab.cli.app import app
from kvlab.workload.records import Request, Segment, Workload

REPO = Path(__file__).resolve().parents[1]

#: Run first in a fresh interpreter: the platform without fork, resource and loop signals.
PRELUDE = """
import asyncio, os, sys
del os.fork
sys.modules["resource"] = None
sys.modules["uvloop"] = None
def _no_signals(self, *args, **kwargs):
    raise NotImplementedError
asyncio.SelectorEventLoop.add_signal_handler = _no_signals
asyncio.SelectorEventLoop.remove_signal_handler = _no_signals
"""


def _refuse(*_args: object, **_kwargs: object) -> None:
    raise NotImplementedError


@pytest.fixture
def no_posix(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``os.fork``, ``import resource`` fails, no uvloop, and the event loop has no
    signal handlers, as on Windows."""
    monkeypatch.delattr(os, "fork", raising=False)
    monkeypatch.setitem(sys.modules, "resource", None)
    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.setattr(asyncio.SelectorEventLoop, "add_signal_handler", _refuse)
    monkeypatch.setattr(asyncio.SelectorEventLoop, "remove_signal_handler", _refuse)


def invoke(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.usefixtures("no_posix")
def test_the_fixture_takes_the_posix_extras_away() -> None:
    assert not hasattr(os, "fork")
    with pytest.raises(ImportError):
        import resource  # noqa: F401
    with pytest.raises(NotImplementedError):
        asyncio.new_event_loop().add_signal_handler(signal.SIGINT, print)


@pytest.mark.usefixtures("no_posix")
def test_core_commands_run(tmp_path: Path) -> None:
    from kvlab.cli.entry import main

    plan = json.loads(invoke(["plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--json"]))
    assert plan
    wl = tmp_path / "chat.jsonl"
    invoke(["workload", "gen", "chat", "--sessions", "40", "--seed", "1", "-o", str(wl)])
    assert "requests" in invoke(["workload", "stats", str(wl)])
    base = ["--model", "llama-3.1-8b", "--gpu", "h100"]
    invoke(["simulate", str(wl), *base, "--mode", "baseline", "--out", str(tmp_path / "a"), "-q"])
    main(["simulate", str(wl), *base, "--out", str(tmp_path / "b"), "-q"])  # the plain path
    for d in ("a", "b"):
        assert (tmp_path / d / "requests.jsonl").read_text().count("\n") == 40
    curve = json.loads(invoke(["cache-curve", str(wl), "--capacities", "100,1000", "--json"]))
    assert curve
    out = invoke(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert "prefix_cache_hit_rate" in out


@pytest.mark.usefixtures("no_posix")
def test_a_large_simulation_runs_in_one_process(tmp_path: Path) -> None:
    """Large enough that an earlier kvlab used a second (forked) process for it."""
    wl = tmp_path / "mixed.jsonl"
    n = 5000
    invoke(["workload", "gen", "mixed", "--sessions", str(n), "--seed", "1", "-o", str(wl)])
    out = tmp_path / "run"
    invoke(["simulate", str(wl), "--model", "llama-3.1-8b", "--gpu", "h100", "--out", str(out)])
    assert (out / "requests.jsonl").read_text().count("\n") == n


@pytest.mark.usefixtures("no_posix")
def test_rss_without_resource_or_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvlab.backends import hf

    def no_proc(*_args: object, **_kwargs: object) -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(hf, "open", no_proc, raising=False)
    assert hf.current_rss_bytes() is None


def _workload(n: int) -> Workload:
    reqs = tuple(
        Request(f"r{i}", (Segment("system", 16, "sys"), Segment("user", 8, f"u{i}")), 2)
        for i in range(n)
    )
    return Workload(reqs, name="w")


@pytest.mark.usefixtures("no_posix")
def test_ctrl_c_stops_a_live_run_without_loop_signal_handlers() -> None:
    """Where the loop has no signal handlers, a plain SIGINT handler stops the run
    gracefully: finished records are kept, the rest are unfinished."""
    from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
    from kvlab.backends.stub import StubConfig, respond
    from kvlab.backends.transport import MockRequest, MockResponse, MockTransport

    before = signal.getsignal(signal.SIGINT)
    sent: list[str] = []

    def handle(req: MockRequest) -> MockResponse:
        reply = respond(StubConfig(), req.method, req.path, req.body)
        if reply.stream is None:
            return MockResponse(reply.status, reply.body)
        sent.append(req.path)
        if len(sent) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C during the second request
        piece, n, tail = reply.stream
        return MockResponse(chunks=[piece] * n + [tail])

    cfg = OpenAIConfig(endpoint="http://mock", model="stub", mode="closed", concurrency=1)
    res = OpenAIBackend(cfg, transport=MockTransport(handle)).run(_workload(5))
    assert res.summary["stopped"] == "interrupted"
    assert res.summary["num_completed"] >= 1 and res.summary["num_unfinished"] >= 1
    assert len(sent) < 5
    assert signal.getsignal(signal.SIGINT) is before


def test_a_fresh_interpreter_imports_and_simulates(tmp_path: Path) -> None:
    code = PRELUDE + (
        "import kvlab, kvlab.cli.app, kvlab.sim.engine, kvlab.report.compare\n"
        "import kvlab.backends.base, kvlab.backends.hf, kvlab.backends.openai\n"
        "import kvlab.backends.sim, kvlab.backends.stub, kvlab.backends.metrics\n"
        "from kvlab.backends.hf import current_rss_bytes\n"
        "assert current_rss_bytes() is None or current_rss_bytes() > 0\n"
        "from kvlab.cli.entry import main\n"
        f"main(['simulate', 'azure-code', '--out', {str(tmp_path / 'run')!r}, '-q'])\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
    assert (tmp_path / "run" / "summary.json").exists()
