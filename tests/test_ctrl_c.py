"""Ctrl-C as a terminal sends it (SIGINT to the process group), at start-up and mid-run,
for ``sweep``, ``simulate`` and ``bench``: exit 130, one line, and what finished on disk,
the rest marked (``replay``: tests/live/test_ctrl_c_replay.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvlab.backends.stub import StubConfig, StubServer
from kvlab.cli.entry import main
from kvlab.errors import RunDirError
from kvlab.results import RunResult
from kvlab.workload.generators import generate
from kvlab.workload.io import write_workload
from sigint import SilentServer, exists, has_open, interrupt, open_paths, start
from stub_thread import serve_stub

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc to see the phase of a run"
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workload one point of a sweep simulates in about a second."""
    return write_workload(
        generate("chat", seed=1, sessions=300), tmp_path_factory.mktemp("wl") / "small.jsonl"
    )


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workload that takes a noticeable time to load and (exact steps) to simulate."""
    return write_workload(
        generate("chat", seed=2, sessions=12_000), tmp_path_factory.mktemp("wl") / "big.jsonl"
    )


def _loaded(proc: object, path: Path, after_s: float = 1.5) -> Callable[[], bool]:
    """A condition: ``after_s`` seconds since ``proc`` closed ``path`` it had opened
    (the records are checked and indexed after the file is read)."""
    target = str(path.resolve())
    seen = [False]
    closed_at: list[float] = []

    def check() -> bool:
        is_open = target in open_paths(proc.pid)  # type: ignore[attr-defined]
        seen[0] = seen[0] or is_open
        if seen[0] and not is_open and not closed_at:
            closed_at.append(time.monotonic())
        return bool(closed_at) and time.monotonic() - closed_at[0] > after_s

    return check


def _interrupted_run(d: Path) -> RunResult:
    run = RunResult.load(d)
    assert run.status == "interrupted"
    assert json.loads((d / "run.json").read_text())["status"] == "interrupted"
    assert run.summary["stopped"] == "interrupted"
    return run


def _compare_refuses(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """compare never takes an interrupted run for a complete one."""
    with pytest.raises(SystemExit) as e:
        main(["compare", str(d), str(d)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "interrupted run" in err and "--partial" in err, err


# ---- sweep ---------------------------------------------------------------------------


def _sweep(small: Path, out: Path) -> list[str]:
    return [
        "sweep",
        str(small),
        "--axis",
        "mode=baseline,prefix,offload",
        "-j",
        "1",
        "-o",
        str(out),
    ]


def _table(out: Path) -> dict[str, str]:
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["status"] == "interrupted"
    assert (out / "sweep.csv").is_file() and (out / "sweep.md").is_file()
    assert not (out / "plots").exists()
    return {r["mode"]: r["error"] for r in doc["rows"]}


@pytest.mark.parametrize("group", [True, False], ids=["group", "parent"])
def test_sweep_mid_run_keeps_the_finished_points(small: Path, tmp_path: Path, group: bool) -> None:
    out = tmp_path / "sw"
    ended = interrupt(
        start(_sweep(small, out)),
        exists(out / "runs" / "mode=baseline" / "summary.md"),
        group=group,
    )
    line = ended.check_one_line()
    errors = _table(out)
    assert errors["baseline"] is None  # finished before the signal: kept
    assert RunResult.load(out / "runs" / "mode=baseline").complete
    # on a loaded machine the next point may also end before the signal lands
    finished = [m for m in ("baseline", "prefix", "offload") if errors[m] is None]
    assert finished in (["baseline"], ["baseline", "prefix"])
    assert f"{len(finished)} of 3 points finished" in line
    rest = [m for m in ("prefix", "offload") if m not in finished]
    assert all(errors[m] in ("interrupted", "not run (sweep interrupted)") for m in rest)
    if len(finished) == 1:
        assert errors["offload"] == "not run (sweep interrupted)"  # -j 1: never launched
        assert not (out / "runs" / "mode=offload").exists()


def test_sweep_at_start_up(small: Path, tmp_path: Path) -> None:
    """Signalled as soon as the runs folder appears. A point takes a fraction of a second,
    so one may finish before the signal lands: whatever the count, the line, the table and
    the run folders must agree, and the sweep must not have run to its end."""
    out = tmp_path / "sw"
    ended = interrupt(start(_sweep(small, out)), exists(out / "runs"))
    line = ended.check_one_line()
    errors = _table(out)
    finished = sorted(m for m, e in errors.items() if e is None)
    assert len(finished) < 3
    assert f"{len(finished)} of 3 points finished" in line
    cut = {e for e in errors.values() if e is not None}
    assert cut and cut <= {"interrupted", "not run (sweep interrupted)"}
    for d in (out / "runs").iterdir():  # a point cut short is marked, never complete
        mode = d.name.removeprefix("mode=")
        if mode in finished:
            assert RunResult.load(d).complete
        else:
            with pytest.raises(RunDirError):
                if not RunResult.load(d).complete:
                    raise RunDirError("interrupted")


# ---- simulate ------------------------------------------------------------------------


def test_simulate_while_loading(
    big: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    proc = start(["simulate", str(big), "--exact-steps", "-q", "-o", str(out)])
    line = interrupt(proc, has_open(proc, big)).check_one_line()
    assert "while loading" in line or "before the simulation finished" in line
    run = _interrupted_run(out)
    assert run.summary["num_completed"] == 0
    _compare_refuses(out, capsys)


def test_simulate_mid_run(big: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    proc = start(["simulate", str(big), "--exact-steps", "-q", "-o", str(out)])
    line = interrupt(proc, _loaded(proc, big)).check_one_line()
    assert "before the simulation finished" in line
    run = _interrupted_run(out)
    n = sum(1 for _ in big.open()) - 1  # the header line
    assert len(run.records) == run.summary["num_requests"] == n
    assert {r.status for r in run.records} == {"unfinished"}
    assert (out / "requests.jsonl").stat().st_size > 0
    _compare_refuses(out, capsys)


# ---- bench ---------------------------------------------------------------------------


@pytest.fixture
def slow_stub() -> Iterator[StubServer]:
    """A stub server in a thread answering each request after 50 ms."""
    yield from serve_stub(StubConfig(ttft_s=0.05))


def _bench(url: str, out: Path) -> list[str]:
    return [
        "bench", "-e", "concurrency", "--backend", "openai", "--endpoint", url, "--model", "stub",
        "--levels", "1,2", "--requests", "200", "--prompt-tokens", "8", "--output-tokens", "2",
        "--no-check-oom", "-o", str(out),
    ]  # fmt: skip


def test_bench_mid_run(slow_stub: StubServer, tmp_path: Path) -> None:
    out = tmp_path / "b"
    ended = interrupt(start(_bench(slow_stub.url, out)), lambda: slow_stub.num_requests >= 6)
    line = ended.check_one_line()
    assert "0 runs finished, 1 cut short" in line
    exp = json.loads((out / "concurrency" / "experiment.json").read_text())
    assert exp["status"] == "interrupted"
    assert exp["runs"] == [] and exp["interrupted_runs"] == ["runs/c1"]
    run = _interrupted_run(out / "concurrency" / "runs" / "c1")
    assert 5 <= run.summary["num_completed"] < 200
    assert not (out / "concurrency" / "runs" / "c2").exists()


def test_bench_while_probing_the_server(tmp_path: Path) -> None:
    out = tmp_path / "b"
    with SilentServer() as srv:
        ended = interrupt(start(_bench(srv.url, out)), lambda: srv.accepted >= 1)
    line = ended.check_one_line()
    assert ended.stop_s < 8  # not the probe's 10 s timeout
    assert "0 runs finished" in line
    exp = json.loads((out / "concurrency" / "experiment.json").read_text())
    assert exp["status"] == "interrupted" and exp["runs"] == []
    run = _interrupted_run(out / "concurrency" / "runs" / "c1")
    assert run.summary["num_completed"] == 0


@pytest.mark.hf
@pytest.mark.slow
def test_bench_in_process_while_loading_the_model(tmp_path: Path) -> None:
    """Ctrl-C while transformers and the model load (in process): one line, exit 130,
    experiment.json says interrupted, no run. (A KeyboardInterrupt raised in code that
    torch's import runs through PyRun_String used to make CPython kill the process by
    SIGINT at exit, exit -2: see kvlab.cli.options.leave.)"""
    pytest.importorskip("transformers")
    model = tmp_path / "m"
    assert main_code(["tiny-model", str(model)]) == 0
    out = tmp_path / "b"
    argv = ["bench", "-e", "seqlen", "--backend", "hf", "--model-dir", str(model)]
    argv += ["--no-check-oom", "-o", str(out)]
    proc = start(argv)
    made = exists(out / "seqlen")  # the output is checked first, then the model loads
    t_made: list[float] = []

    def loading() -> bool:
        if not t_made and made():
            t_made.append(time.monotonic())
        return bool(t_made) and time.monotonic() - t_made[0] > 0.3

    interrupt(proc, loading).check_one_line()
    exp = json.loads((out / "seqlen" / "experiment.json").read_text())
    assert exp["status"] == "interrupted" and exp["runs"] == []


def main_code(argv: list[str]) -> int:
    from cli_run import run_cli

    return run_cli(argv).code
