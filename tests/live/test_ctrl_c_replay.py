"""Ctrl-C in ``kvlab replay`` as a terminal sends it (SIGINT to the process group): while
loading the workload, while probing a server, and mid-run against the local stub
server. Always a whole run directory marked interrupted, one line, exit 130."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvlab.backends.stub import StubConfig, StubServer
from kvlab.results import RunResult
from sigint import SilentServer, has_open, interrupt, start
from stub_thread import serve_stub

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc to see the phase of a run"
)

FILES = {"summary.json", "requests.jsonl", "run.json", "timeseries.csv", "histograms.json"}


@pytest.fixture
def slow_stub() -> Iterator[StubServer]:
    yield from serve_stub(StubConfig(ttft_s=0.05))


def _workload(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            segs = [{"kind": "user", "tokens": 8, "content": f"u{i}"}]
            rec = {"id": f"r{i}", "arrival_s": 0.02 * i, "segments": segs, "output_tokens": 2}
            f.write(json.dumps(rec) + "\n")
    return path


def _replay(wl: Path, url: str, out: Path) -> list[str]:
    return ["replay", str(wl), "--endpoint", url, "--model", "stub", "--out", str(out)]


def _check(out: Path, n: int) -> RunResult:
    assert {p.name for p in out.iterdir()} >= FILES
    run = RunResult.load(out)
    assert run.status == "interrupted"
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert run.summary["stopped"] == "interrupted"
    assert len(run.records) == run.summary["num_requests"] == n
    s = run.summary
    assert s["num_completed"] + s["num_unfinished"] + s["num_failed"] == n
    return run


@pytest.mark.parametrize("group", [True, False], ids=["group", "parent"])
def test_mid_run(slow_stub: StubServer, tmp_path: Path, group: bool) -> None:
    wl = _workload(tmp_path / "wl.jsonl", 200)
    out = tmp_path / "o"
    proc = start(_replay(wl, slow_stub.url, out))
    line = interrupt(proc, lambda: slow_stub.num_requests >= 6, group=group).check_one_line()
    run = _check(out, 200)
    assert 1 <= run.summary["num_completed"] < 200
    assert f"{run.summary['num_completed']} of 200 requests finished" in line


def test_while_probing_the_server(tmp_path: Path) -> None:
    wl = _workload(tmp_path / "wl.jsonl", 50)
    out = tmp_path / "o"
    with SilentServer() as srv:
        ended = interrupt(start(_replay(wl, srv.url, out)), lambda: srv.accepted >= 1)
    assert "0 of 50 requests finished" in ended.check_one_line()
    assert ended.stop_s < 8  # not the probe's 10 s timeout
    run = _check(out, 50)
    assert {r.status for r in run.records} == {"unfinished"}


def test_while_loading_the_workload(tmp_path: Path) -> None:
    wl = _workload(tmp_path / "wl.jsonl", 150_000)
    out = tmp_path / "o"
    with SilentServer() as srv:
        proc = start(_replay(wl, srv.url, out))
        ended = interrupt(proc, has_open(proc, wl))
    ended.check_one_line()
    assert srv.accepted == 0  # nothing was sent, not even a probe
    run = RunResult.load(out)  # whole: every file, no request (the workload was not loaded)
    assert FILES - {"requests.jsonl"} <= {p.name for p in out.iterdir()}
    assert run.status == "interrupted" and run.summary["num_requests"] == 0
