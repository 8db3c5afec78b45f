"""The ``kvlab`` entry point: one parameter table per quick command, read by Typer and
by the plain parser (kvlab.cli.options), and the lazily assembled Typer app."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kvlab.cli.app import COMMAND_MODULES, build_app
from kvlab.cli.entry import PLAIN_COMMANDS
from kvlab.cli.options import REQUIRED, Param, parse_plain

SRC = Path(__file__).resolve().parents[1] / "src"
TRACE = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
    f"2023-11-16 18:15:{i:02d}.0000000,{100 + 37 * i},{5 + i}\n" for i in range(30)
)


def command_module(command: str) -> ModuleType:
    return importlib.import_module(f"kvlab.cli.{PLAIN_COMMANDS[command]}")


def click_params(command: str) -> list[Any]:
    """The parameters of the command Typer builds (click's, as Typer carries them)."""
    group: Any = typer.main.get_command(build_app((PLAIN_COMMANDS[command],)))
    return list(group.commands[command].params)


@pytest.mark.parametrize("command", sorted(PLAIN_COMMANDS))
def test_the_table_is_the_typer_command(command: str) -> None:
    params: tuple[Param, ...] = command_module(command).PARAMS
    built = click_params(command)
    assert [p.name for p in built] == [p.name for p in params]
    for p, c in zip(params, built, strict=True):
        names = [*c.opts, *c.secondary_opts]
        want = [n for decl in p.decls for n in decl.split("/")] if p.decls else [p.name]
        assert sorted(names) == sorted(want), p.name
        assert isinstance(c, typer.core.TyperOption) == bool(p.decls)
        assert c.required == (p.default is REQUIRED), p.name
        if p.default is not REQUIRED:
            default = list(p.default) if p.kind == "strs" else p.default
            assert c.default == default, p.name
        assert getattr(c, "help", None) in (p.help, None), p.name  # arguments: rich help


def typer_kwargs(command: str, args: list[str]) -> dict[str, Any] | None:
    """What Typer passes to ``run_command`` for ``kvlab COMMAND ARGS`` (None: it refused)."""
    module = command_module(command)
    seen: list[dict[str, Any]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "run_command", lambda **kw: seen.append(kw))
        res = CliRunner().invoke(build_app((PLAIN_COMMANDS[command],)), [command, *args])
    if res.exit_code != 0 or not seen:
        return None
    kw = seen[0]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}


USUAL = [
    ("simulate", ["t.csv", "--out", "r"]),
    ("simulate", ["t.csv"]),  # no --out: the default run directory
    ("simulate", ["t.csv", "-o", "r", "-m", "llama-3.1-8b", "-g", "h100", "-q"]),
    ("simulate", ["--json", "t.csv", "--out=r", "--set", "max_num_seqs=8", "--set=a=b"]),
    ("simulate", ["t.csv", "--out", "r", "--block-size", "32", "--num-gpu-blocks", "1000",
                  "--mode", "offload", "--offload-gb", "2.5", "--kv-dtype", "fp8", "--format",
                  "azure", "--policy", "s3fifo", "--no-prefix-caching", "--exact-steps",
                  "--model", "a", "--model", "b", "--seed", "3", "--plot"]),
    ("cache-curve", ["mooncake-conversation"]),
    ("cache-curve", ["t.jsonl", "-b", "512", "-c", "1k,2k", "--json", "--policy", "lru"]),
    ("cache-curve", ["t.jsonl", "--format", "mooncake", "-m", "llama-3.1-8b", "--kv-dtype",
                     "fp8", "--plot", "c.png", "--capacities=80GB"]),
    ("plan", []),
    ("plan", ["--json", "-m", "openai/gpt-oss-20b", "-g", "h200", "--context", "65536",
              "--concurrency", "32", "--tp", "2", "--no-async-scheduling"]),
    ("plan", ["--no-prefix-caching", "--prefix-caching", "--gpu-memory-utilization", "0.8",
              "--offload-gb=100", "--gpu-memory-gb", "48", "--gpu-bw-gbps", "1000",
              "--gpu-tflops", "300", "--kv-cache-memory-bytes", "1000000000",
              "--max-num-seqs", "64", "--max-num-batched-tokens", "4096", "--block-size",
              "32", "--weight-dtype", "fp8", "--kv-dtype", "fp8", "--list-gpus"]),
]  # fmt: skip


@pytest.mark.parametrize(("command", "args"), USUAL)
def test_usual_command_lines_parse_as_typer_parses_them(command: str, args: list[str]) -> None:
    fast = parse_plain(command_module(command).PARAMS, args)
    assert fast is not None
    assert typer_kwargs(command, args) == fast


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("simulate", []),  # no workload: Typer reports it
        ("simulate", ["t.csv", "--out", "r", "--help"]),
        ("simulate", ["t.csv", "t2.csv", "--out", "r"]),
        ("simulate", ["t.csv", "--out", "r", "--seed", "-1"]),
        ("simulate", ["t.csv", "--out", "r", "--json=yes"]),
        ("simulate", ["t.csv", "--out"]),
        ("simulate", ["--", "t.csv", "--out", "r"]),
        ("simulate", ["t.csv", "--out", "r", "--block-size", "1e3"]),
        ("simulate", ["t.csv", "-o=r"]),
        ("cache-curve", []),
        ("cache-curve", ["t.jsonl", "-b", "007"]),
        ("cache-curve", ["t.jsonl", "-qb", "16"]),
        ("plan", ["extra"]),
        ("plan", ["--context", " 5"]),
        ("plan", ["--no-async-scheduling=1"]),
        ("plan", ["--list-gpu"]),
    ],
)
def test_unusual_command_lines_go_to_typer(command: str, args: list[str]) -> None:
    assert parse_plain(command_module(command).PARAMS, args) is None


PLAIN = {"int": ["16", "0", "1000"], "float": ["2.5", "0.25", "3"], "path": ["r", "runs/a"]}
PLAIN["str"] = ["x", "llama-3.1-8b", "16", "max_num_seqs=8", "a=b"]
PLAIN["strs"] = PLAIN["str"]
ODD = ["007", "1_0", "+3", "1e3", " 5", "-1", "", "--json", "-", "12.", "99999999999999999999"]


@st.composite
def command_lines(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Mostly plain lines of a quick command, sometimes with an odd token."""
    command = draw(st.sampled_from(sorted(PLAIN_COMMANDS)))
    params: tuple[Param, ...] = command_module(command).PARAMS
    units = [[draw(st.sampled_from(["t.csv", "t.csv", "-", "a b"]))] for p in params if not p.decls]
    options = [p for p in params if p.decls]
    for _ in range(draw(st.integers(0, 6))):
        p = draw(st.sampled_from(options))
        name = draw(st.sampled_from([n for d in p.decls for n in d.split("/")]))
        if p.kind == "flag":
            units.append([draw(st.sampled_from([name, name, f"{name}=1", "--help"]))])
            continue
        value = draw(st.one_of(*[st.sampled_from(PLAIN[p.kind])] * 8, st.sampled_from(ODD)))
        eq = name.startswith("--") and draw(st.booleans())
        units.append([f"{name}={value}"] if eq else [name, value])
    units += [[n, "runs/x"] for n in (p.decls[0] for p in options if p.default is REQUIRED)]
    args = [tok for unit in draw(st.permutations(units)) for tok in unit]
    return command, args


@settings(max_examples=200, deadline=None)
@given(command_lines())
def test_generated_plain_lines_parse_as_typer_parses_them(line: tuple[str, list[str]]) -> None:
    command, args = line
    fast = parse_plain(command_module(command).PARAMS, args)
    if fast is not None:  # otherwise Typer handles it, whatever it is
        assert typer_kwargs(command, args) == fast, args


def test_command_modules_name_the_commands_they_register() -> None:
    for module, commands in COMMAND_MODULES.items():
        app = typer.Typer()
        importlib.import_module(f"kvlab.cli.{module}").register(app)
        names = [c.name for c in app.registered_commands]
        names += [g.name or g.typer_instance.info.name for g in app.registered_groups]  # type: ignore[union-attr]
        assert tuple(names) == commands, module
    for command, module in PLAIN_COMMANDS.items():
        assert command in COMMAND_MODULES[module]


# --------------------------------------------------------------------------- as a program


def _kvlab(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(
        [sys.executable, "-m", "kvlab", *args], capture_output=True, text=True, env=env, cwd=tmp
    )


def _files(d: Path) -> dict[str, str]:
    out = {p.name: p.read_text() for p in sorted(d.iterdir())}
    run = json.loads(out["run.json"])  # the wall time differs from run to run; nothing else
    assert run["provenance"].pop("wall_s") > 0
    out["run.json"] = json.dumps(run, indent=2) + "\n"
    return out


def test_plain_path_writes_what_typer_writes(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    fast = _kvlab(tmp_path, "simulate", "t.csv", "--out", "fast", "--json")
    assert fast.returncode == 0, fast.stderr
    res = CliRunner().invoke(
        build_app(),
        ["simulate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "slow"), "--json"],
    )
    assert res.exit_code == 0, res.output
    a, b = json.loads(fast.stdout), json.loads(res.output)
    assert "wall_s" not in a and "wall_s" not in b
    assert a == b
    fa, fb = _files(tmp_path / "fast"), _files(tmp_path / "slow")
    fa["run.json"] = fa["run.json"].replace('"t.csv"', "W")
    fb["run.json"] = fb["run.json"].replace(json.dumps(str(tmp_path / "t.csv")), "W")
    assert fa == fb


@pytest.mark.parametrize(
    ("args", "odd", "message"),
    [
        (["simulate", "missing.csv", "--out", "r"], ["--seed=-1"], "missing.csv: no such file"),
        (["cache-curve", "missing.jsonl"], ["-b", "016"], "missing.jsonl: no such file"),
        (["plan", "--gpu", "nosuch"], ["--tp", "01"], "unknown GPU"),
    ],
)
def test_plain_path_reports_errors_like_typer(
    tmp_path: Path, args: list[str], odd: list[str], message: str
) -> None:
    fast = _kvlab(tmp_path, *args)
    slow = _kvlab(tmp_path, *args, *odd)  # not plain: parsed by Typer
    assert fast.returncode == slow.returncode == 2
    assert fast.stderr == slow.stderr
    assert fast.stderr.startswith("error: ") and message in fast.stderr
    assert fast.stdout == slow.stdout == ""


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["simulate", "t.csv", "--out", "r", "--json"], set()),
        (["cache-curve", "t.csv", "-c", "1,10", "--json"], set()),
        (["cache-curve", "t.csv", "-c", "1,10"], {"rich"}),
        (["plan", "--json"], set()),
    ],
)
def test_quick_commands_import_no_cli_framework(
    tmp_path: Path, args: list[str], allowed: set[str]
) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    code = (
        f"import runpy, sys; sys.argv = ['kvlab', *{args!r}];"
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
    assert res.stderr == ",".join(sorted(allowed))
    assert res.stdout


def test_loading_a_builtin_trace_by_name_imports_no_numpy() -> None:
    code = (
        "import sys; from kvlab.workload.detect import load_workload;"
        "n = len(load_workload('azure-code').requests);"
        "print(n, 'numpy' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.stdout.split() == ["8819", "False"], res.stderr


def test_main_with_argv_leaves_the_collector_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gc

    from kvlab.cli.entry import main

    (tmp_path / "t.csv").write_text(TRACE)
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    main(["simulate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "r"), "--json"])
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    assert json.loads(capsys.readouterr().out)["num_requests"] == 30
