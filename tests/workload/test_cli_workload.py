from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvlab.cli.app import app
from kvlab.workload.generators import generate
from kvlab.workload.io import read_workload

runner = CliRunner()


def test_gen_stats_show(tmp_path: Path) -> None:
    out = tmp_path / "chat.jsonl"
    res = runner.invoke(
        app,
        [
            "workload",
            "gen",
            "chat",
            "--sessions",
            "30",
            "--seed",
            "5",
            "--set",
            "system_tokens=512",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "30 requests" in res.output
    w = read_workload(out)
    assert w.requests == generate("chat", seed=5, sessions=30, system_tokens=512).requests
    res = runner.invoke(app, ["workload", "stats", str(out), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["num_requests"] == 30
    assert s["prefix_reuse"]["hit_tokens"] == 29 * 512
    res = runner.invoke(app, ["workload", "stats", str(out)])
    assert res.exit_code == 0 and "upper bound" in res.output
    res = runner.invoke(app, ["workload", "show", str(out), "--session", "u3", "--words", "3"])
    assert res.exit_code == 0, res.output
    assert "u3-t0" in res.output and "chat/system" in res.output


def test_show_session_by_index_and_marks_resent(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    assert (
        runner.invoke(
            app, ["workload", "gen", "sessions", "--sessions", "2", "-o", str(out)]
        ).exit_code
        == 0
    )
    res = runner.invoke(app, ["workload", "show", str(out), "--session", "1", "--json"])
    lines = [json.loads(x) for x in res.output.splitlines()]
    assert {x["session"] for x in lines} == {"s1"} and len(lines) == 6
    res = runner.invoke(app, ["workload", "show", str(out), "--session", "s0"])
    assert "=" in res.output and "+" in res.output


def test_gen_options_override(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    res = runner.invoke(
        app,
        [
            "workload",
            "gen",
            "agentic",
            "--sessions",
            "1",
            "--arrival",
            "closed",
            "--think-time",
            "0",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    w = read_workload(out)
    assert w.meta["params"]["arrival"] == "closed"
    assert all(r.think_time_s in (None, 0.0) for r in w.requests)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["workload", "gen", "nope", "-o", "x.jsonl"], "choose one of chat, planner"),
        (["workload", "gen", "chat", "--set", "bogus=1", "-o", "x.jsonl"], "unknown parameter"),
        (["workload", "show", "missing.jsonl"], "no such file"),
    ],
)
def test_errors_are_one_line(argv: list[str], needle: str, tmp_path: Path) -> None:
    from kvlab.errors import KvlabError

    res = runner.invoke(app, argv, catch_exceptions=True)
    assert isinstance(res.exception, KvlabError)
    assert needle in str(res.exception)


def test_main_prints_schema_error_with_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kvlab.cli.app import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "arrival_s": 0, "segments": [{"tokens": 4, "content": "x"}], '
        '"output_tokens": 0}\n'
    )
    with pytest.raises(SystemExit) as ei:
        main(["workload", "stats", str(bad)])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: field 'output_tokens': must be >= 1" in err


def test_shapes_lists_params() -> None:
    res = runner.invoke(app, ["workload", "shapes", "--json"])
    d = json.loads(res.output)
    assert d["agentic"]["companies"] == 8 and "rag" in d
