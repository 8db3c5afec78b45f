"""kvlab agents: the CLI's emit answer offline, its errors, and compare on run directories."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("langgraph")
pytest.importorskip("langchain.agents.middleware")

from kvlab.cli.app import build_app

runner = CliRunner()
APP = build_app(("agents",))


def test_emit_answers_offline_and_writes_a_workload(tmp_path: Path) -> None:
    out = tmp_path / "agents.jsonl"
    res = runner.invoke(
        APP,
        ["agents", "emit", "--companies", "2", "--pages", "3", "--strategy", "naive",
         "--strategy", "cache_aware", "--model", "llama-3.1-8b", "--gpu", "h100",
         "--out", str(out), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{") :])
    assert {r["strategy"] for r in data["rows"]} == {"naive", "cache_aware"}
    assert any("hybrid" in n for n in data["notes"])
    from kvlab.workload.io import read_workload

    wl = read_workload(out)
    assert len(wl) == 2 * (2 * 4 + 2)


def test_emit_table_says_what_is_approximate() -> None:
    res = runner.invoke(
        APP, ["agents", "emit", "--companies", "1", "--pages", "1", "--strategy", "clip",
              "--model", "llama-3.1-8b", "--gpu", "h100"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "| Llama-3.1-8B | h100-sxm | clip |" in res.stdout
    assert "note: hybrid models" in res.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["agents", "emit", "--strategy", "bogus"],
        ["agents", "emit", "--model", "no-such-model"],
        ["agents", "emit", "--companies", "0"],
        ["agents", "emit", "--companies", "13"],
        ["agents", "run", "--strategy", "naive", "--endpoint", "http://x", "--model", "m",
         "--out", "o", "--agents", "0"],
        ["agents", "run", "--strategy", "bogus", "--endpoint", "http://x", "--model", "m",
         "--out", "o"],
        ["agents", "run", "--strategy", "naive", "--endpoint", "ftp://x", "--model", "m",
         "--out", "o"],
    ],
)  # fmt: skip
def test_bad_input_is_one_line(args: list[str]) -> None:
    from kvlab.cli.app import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code in (1, 2)


def test_compare_refuses_a_directory_without_agents_json(tmp_path: Path) -> None:
    from kvlab.cli.app import main

    with pytest.raises(SystemExit) as e:
        main(["agents", "compare", str(tmp_path)])
    assert e.value.code == 2


def test_compare_table_from_written_runs(tmp_path: Path) -> None:
    from kvlab.agents.live import RunConfig, StepRow, summarize_run, write_run_dir

    for strategy, ok in (("naive", False), ("cache_aware", True)):
        cfg = RunConfig(strategy=strategy, endpoint="http://h", model="m")
        rows = [
            StepRow(0, strategy, 0, "agent", "A", 0.0, 0.1, 2, 100, 100, 0, 8, None, None, None),
            StepRow(0, strategy, 1, "agent", "A", 0.2, 0.1, 4, 900, 400, 256, 8, None, None, None,
                    status="ok" if ok else "overflow",
                    overflow_kind=None if ok else "context_length"),
        ]  # fmt: skip
        rep = summarize_run(cfg, rows, [], 1.0)
        rep["agents"] = [
            {"agent": 0, "completed": ok, "overflow": None if ok else
             {"step": 1, "company": "A", "kind": "context_length", "error": "400"}}
        ]  # fmt: skip
        rep["completed"] = int(ok)
        rep["num_agents"] = 1
        write_run_dir(tmp_path / strategy, cfg, rows, rep, 1.0)
        (tmp_path / strategy / "steps.jsonl").write_text(
            "".join(json.dumps(asdict(r)) + "\n" for r in rows)
        )
    res = runner.invoke(
        APP, ["agents", "compare", str(tmp_path / "naive"), str(tmp_path / "cache_aware")]
    )
    assert res.exit_code == 0, res.output
    assert "| naive | 0/1 | 100 | 100 | 0% |" in res.stdout
    assert "call 2 (A, context_length)" in res.stdout
    assert "| cache_aware | 1/1 | 500 | 244 | 51% |" in res.stdout
    pytest.importorskip("matplotlib")
    base = tmp_path / "fig" / "prompts"
    res = runner.invoke(
        APP,
        ["agents", "compare", str(tmp_path / "naive"), str(tmp_path / "cache_aware"),
         "--plot", str(base)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert base.with_suffix(".png").stat().st_size > 1000
    assert base.with_suffix(".svg").is_file()
