"""Every command that writes checks its output path first: an existing file where a
directory goes, a directory where a file goes, a path under a regular file (unwritable
even for root), a missing parent where one is not created, an unwritable directory
(skipped as root, who may write anywhere): one line naming the option, exit 2."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_run import run_cli
from kvlab.workload.generators import generate
from kvlab.workload.io import write_workload

#: A port nothing listens on: a live command must fail on the path before connecting.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def wl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_workload(
        generate("chat", seed=1, sessions=5), tmp_path_factory.mktemp("wl") / "wl.jsonl"
    )


@pytest.fixture(scope="module")
def run_dir(wl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("run") / "r"
    assert run_cli(["simulate", str(wl), "-q", "--out", str(d)]).code == 0
    return d


#: command -> (argv for an output path, option named in the error, "dir" or "file")
Argv = Callable[[Path, Path, Path], list[str]]
COMMANDS: dict[str, tuple[Argv, str, str]] = {
    "simulate": (lambda w, r, p: ["simulate", str(w), "-q", "--out", str(p)], "--out", "dir"),
    "replay": (
        lambda w, r, p: ["replay", str(w), "--endpoint", NOWHERE, "--model", "m", "-o", str(p)],
        "--out",
        "dir",
    ),
    "bench": (
        lambda w, r, p: [
            "bench",
            "-e",
            "concurrency",
            "--backend",
            "openai",
            "--endpoint",
            NOWHERE,
            "--model",
            "m",
            "-o",
            str(p),
        ],
        "--out",
        "dir",
    ),
    "sweep": (
        lambda w, r, p: ["sweep", str(w), "--axis", "mode=baseline", "-o", str(p)],
        "--out",
        "dir",
    ),
    "compare -o": (
        lambda w, r, p: ["compare", str(r), str(r), "--names", "a,b", "-o", str(p)],
        "--output",
        "file",
    ),
    "compare --plot": (
        # --plot PLOT writes PLOT.png and PLOT.svg
        lambda w, r, p: [
            "compare",
            str(r),
            str(r),
            "--names",
            "a,b",
            "--plot",
            str(p.with_suffix("")),
        ],
        "--plot",
        "file",
    ),
    "workload gen": (lambda w, r, p: ["workload", "gen", "chat", "-o", str(p)], "--output", "file"),
    "cache-curve --plot": (
        lambda w, r, p: ["cache-curve", str(w), "--plot", str(p)],
        "--plot",
        "file",
    ),
    "calibrate": (lambda w, r, p: ["calibrate", str(r), "-o", str(p)], "--output", "file"),
    "report": (lambda w, r, p: ["report", str(r), "-o", str(p)], "--out", "file"),
    "stress": (lambda w, r, p: ["stress", "--out", str(p)], "--out", "dir"),
    "monitor --record": (
        lambda w, r, p: ["monitor", NOWHERE, "--once", "--record", str(p)],
        "--record",
        "file",
    ),
    "monitor --export-rules": (
        lambda w, r, p: ["monitor", "--export-rules", str(p)],
        "--export-rules",
        "file",
    ),
    "monitor --save-rules": (
        lambda w, r, p: ["monitor", "--save-rules", str(p)],
        "--save-rules",
        "file",
    ),
    "rl train": (
        lambda w, r, p: ["rl", "train", str(w), "--steps", "1", "-o", str(p)],
        "--out",
        "file",
    ),
    "agents run": (
        lambda w, r, p: [
            "agents",
            "run",
            "--strategy",
            "naive",
            "--endpoint",
            NOWHERE,
            "--model",
            "m",
            "--out",
            str(p),
        ],
        "--out",
        "dir",
    ),
    "agents compare -o": (
        lambda w, r, p: ["agents", "compare", str(r), "-o", str(p)],
        "--output",
        "file",
    ),
}

#: Commands whose file output creates its missing parent directories (figures and
#: workloads are often written into a new folder).
MAKES_PARENTS = {"compare --plot", "workload gen", "rl train", "report"}


def _check(argv: list[str], option: str, what: str) -> None:
    res = run_cli(argv, limit_s=30)
    assert res.code == 2, (res.code, res.err)
    line = res.one_line_error()
    assert option in line and what in line, line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_wrong_kind_of_path(command: str, wl: Path, run_dir: Path, tmp_path: Path) -> None:
    argv, option, kind = COMMANDS[command]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    if kind == "dir":
        _check(argv(wl, run_dir, a_file), option, "exists and is not a directory")
    else:
        a_dir = tmp_path / "a_dir.png"
        a_dir.mkdir()
        _check(argv(wl, run_dir, a_dir), option, "is a directory, expected a file")
    _check(argv(wl, run_dir, a_file / "below" / "x.png"), option, "is a file, not a directory")
    assert a_file.read_text() == "x"


@pytest.mark.parametrize(
    "command",
    sorted(c for c, v in COMMANDS.items() if v[2] == "file" and c not in MAKES_PARENTS),
)
def test_missing_parent(command: str, wl: Path, run_dir: Path, tmp_path: Path) -> None:
    argv, option, _ = COMMANDS[command]
    _check(argv(wl, run_dir, tmp_path / "missing" / "x.png"), option, "does not exist")


@pytest.mark.parametrize("command", sorted(MAKES_PARENTS))
def test_missing_parent_created(command: str, wl: Path, run_dir: Path, tmp_path: Path) -> None:
    argv, _, _ = COMMANDS[command]
    path = tmp_path / "new" / "dir" / "x.jsonl"
    res = run_cli(argv(wl, run_dir, path), limit_s=60)
    assert res.code == 0, res.err
    assert (tmp_path / "new" / "dir").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a 0500 directory")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unwritable_directory(command: str, wl: Path, run_dir: Path, tmp_path: Path) -> None:
    argv, option, kind = COMMANDS[command]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = run_cli(argv(wl, run_dir, locked / ("out" if kind == "dir" else "x.png")))
        assert res.code == 2 and option in res.one_line_error()
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("command", ["simulate", "replay"])
def test_a_failed_command_leaves_no_empty_directory(
    command: str, wl: Path, run_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "r0"}\n')
    out = tmp_path / "new"
    argv, _, _ = COMMANDS[command]
    res = run_cli(argv(bad, run_dir, out), limit_s=30)
    assert res.code == 2 and "bad.jsonl" in res.one_line_error()
    assert not out.exists()
    out.mkdir()  # a directory that was there before stays
    assert run_cli(argv(bad, run_dir, out), limit_s=30).code == 2
    assert out.is_dir()
