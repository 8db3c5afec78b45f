"""The plain-argument path of ``kvlab simulate`` (kvlab.cli.entry) agrees with Typer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kvlab.cli import simulate as sim_cli
from kvlab.cli.app import app

SRC = Path(__file__).resolve().parents[1] / "src"
TRACE = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
    f"2023-11-16 18:15:{i:02d}.0000000,{100 + 37 * i},{5 + i}\n" for i in range(30)
)


def typer_kwargs(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any] | None:
    """What Typer passes to run_command for ``kvlab simulate ARGS`` (None: it refused)."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(sim_cli, "run_command", lambda **kw: seen.append(kw))
    res = CliRunner().invoke(app, ["simulate", *args])
    monkeypatch.undo()
    if res.exit_code != 0 or not seen:
        return None
    kw = seen[0]
    kw["sets"] = list(kw["sets"])
    return kw


VALUE_OPTS = [
    "--model", "-m", "--gpu", "-g", "--out", "-o", "--format", "--policy", "--block-size",
    "--num-blocks", "--num-gpu-blocks", "--kv-dtype", "--offload-gb", "--mode", "--set", "--seed",
]  # fmt: skip
FLAGS = ["--no-prefix-caching", "--exact-steps", "--json", "--quiet", "-q", "--plot"]
PLAIN = {
    "int": ["16", "0", "32", "1000"],
    "float": ["2.5", "0.25", "3", "0"],
    "str": ["x", "runs/a", "llama-3.1-8b", "h100", "16", "max_num_seqs=8", "a=b"],
}
ODD = ["007", "1_0", "+3", "1e3", " 5", "-1", "", "--json", "-", "12.", "99999999999999999999"]
KIND = {"--block-size": "int", "--num-blocks": "int", "--num-gpu-blocks": "int", "--seed": "int"}
KIND["--offload-gb"] = "float"


def values(option: str) -> st.SearchStrategy[str]:
    return odd_or(st.sampled_from(PLAIN[KIND.get(option, "str")]), ODD)


def odd_or(plain: st.SearchStrategy[str], odd: list[str]) -> st.SearchStrategy[str]:
    """Mostly ``plain``, sometimes a token from ``odd``."""
    return st.one_of(*[plain] * 8, st.sampled_from(odd))


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    units = [[draw(odd_or(st.just("trace.csv"), ["azure-conv", "-", "--", "a b"]))]]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 2))
        if kind == 0:
            units.append([draw(odd_or(st.sampled_from(FLAGS), ["--json=1", "--help", "-x", "y"]))])
        elif kind == 1:
            opt = draw(st.sampled_from(VALUE_OPTS))
            units.append([opt, draw(values(opt))])
        else:
            opt = draw(st.sampled_from([o for o in VALUE_OPTS if o.startswith("--")]))
            units.append([f"{opt}={draw(values(opt))}"])
    if draw(st.integers(0, 4)):
        units.append(["--out", "runs/x"])
    units = draw(st.permutations(units))
    args = [tok for unit in units for tok in unit]
    return draw(st.permutations(args)) if not draw(st.integers(0, 9)) else args


@settings(max_examples=300, deadline=None)
@given(command_lines())
def test_plain_parse_equals_typer(args: list[str]) -> None:
    fast = sim_cli.parse_plain_args(args)
    if fast is None:
        return  # Typer handles it, whatever it is
    with pytest.MonkeyPatch.context() as mp:
        assert typer_kwargs(args, mp) == fast, args


@pytest.mark.parametrize(
    "args",
    [
        ["t.csv", "--out", "r"],
        ["t.csv", "-o", "r", "-m", "llama-3.1-8b", "-g", "h100", "-q"],
        ["--json", "t.csv", "--out=r", "--set", "max_num_seqs=8", "--set=a=b", "--seed", "3"],
        ["t.csv", "--out", "r", "--block-size", "32", "--num-gpu-blocks", "1000", "--mode",
         "offload", "--offload-gb", "2.5", "--kv-dtype", "fp8", "--format", "azure",
         "--policy", "s3fifo", "--no-prefix-caching", "--exact-steps", "--model", "a",
         "--model", "b"],
    ],
)  # fmt: skip
def test_usual_command_lines_take_the_plain_path(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = sim_cli.parse_plain_args(args)
    assert fast is not None
    assert typer_kwargs(args, monkeypatch) == fast


@pytest.mark.parametrize(
    "args",
    [
        ["t.csv"],  # no --out: Typer reports it
        ["t.csv", "--out", "r", "--help"],
        ["t.csv", "t2.csv", "--out", "r"],
        ["t.csv", "--out", "r", "--seed", "-1"],
        ["t.csv", "--out", "r", "--json=yes"],
        ["t.csv", "--out"],
        ["--", "t.csv", "--out", "r"],
        ["t.csv", "--out", "r", "--block-size", "1e3"],
    ],
)
def test_unusual_command_lines_go_to_typer(args: list[str]) -> None:
    assert sim_cli.parse_plain_args(args) is None


def _kvlab(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(
        [sys.executable, "-m", "kvlab", *args], capture_output=True, text=True, env=env, cwd=tmp
    )


def _files(d: Path) -> dict[str, str]:
    out = {p.name: p.read_text() for p in sorted(d.iterdir())}
    for name in ("summary.json", "summary.md"):  # wall time differs from run to run
        out[name] = "\n".join(x for x in out[name].splitlines() if "wall" not in x)
    return out


def test_plain_path_writes_what_typer_writes(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    fast = _kvlab(tmp_path, "simulate", "t.csv", "--out", "fast", "--json")
    assert fast.returncode == 0, fast.stderr
    res = CliRunner().invoke(
        app, ["simulate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "slow"), "--json"]
    )
    assert res.exit_code == 0, res.output
    a, b = json.loads(fast.stdout), json.loads(res.output)
    a.pop("wall_s"), b.pop("wall_s")
    assert a == b
    fa, fb = _files(tmp_path / "fast"), _files(tmp_path / "slow")
    fa["run.json"] = fa["run.json"].replace('"t.csv"', "W")
    fb["run.json"] = fb["run.json"].replace(json.dumps(str(tmp_path / "t.csv")), "W")
    assert fa == fb


def test_plain_path_reports_errors_like_typer(tmp_path: Path) -> None:
    fast = _kvlab(tmp_path, "simulate", "missing.csv", "--out", "r")
    slow = _kvlab(tmp_path, "simulate", "missing.csv", "--out", "r", "--seed=-1")
    assert fast.returncode == slow.returncode == 2
    assert fast.stderr == slow.stderr == "error: missing.csv: no such file\n"
    assert fast.stdout == slow.stdout == ""


def test_plain_path_imports_no_cli_framework_and_no_numpy(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    code = (
        "import runpy, sys; sys.argv = ['kvlab', 'simulate', 't.csv', '--out', 'r', '--json'];"
        "runpy.run_module('kvlab', run_name='__main__');"
        "loaded = {m.split('.')[0] for m in sys.modules};"
        "heavy = {'typer', 'click', 'pydantic', 'rich', 'numpy'};"
        "sys.stderr.write(','.join(sorted(loaded & heavy)))"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert json.loads(res.stdout)["num_requests"] == 30


def test_program_exit_runs_atexit_handlers_and_flushes(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    code = (
        "import atexit, sys; atexit.register(lambda: print('atexit ran'));"
        "sys.argv = ['kvlab', 'simulate', 't.csv', '--out', 'r', '--json'];"
        "from kvlab.cli.entry import main; main(); print('not reached')"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    summary, tail = res.stdout.split("\n", 1)
    assert json.loads(summary)["num_requests"] == 30
    assert tail == "atexit ran\n"


def test_main_with_argv_returns_and_restores_the_collector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gc

    from kvlab.cli.entry import main

    (tmp_path / "t.csv").write_text(TRACE)
    assert gc.isenabled()
    main(["simulate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "r"), "--json"])
    assert gc.isenabled()
    assert json.loads(capsys.readouterr().out)["num_requests"] == 30
