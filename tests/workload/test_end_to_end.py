"""Each shape end to end: gen -> stats -> simulate baseline and prefix -> compare.

Needs the simulator (``kvlab.sim.engine``); the worked example of docs/workloads.md is rerun
from its own commands and must print the table the docs show.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kvlab.sim.engine  # noqa: F401  (a broken engine must fail, not skip)
from kvlab.cli.app import app

runner = CliRunner()
DOC = Path(__file__).resolve().parents[2] / "docs" / "workloads.md"

SMALL = {
    "chat": ["--sessions", "60"],
    "planner": ["--sessions", "6"],
    "subagents": ["--sessions", "3"],
    "sessions": ["--sessions", "6"],
    "agentic": ["--sessions", "2", "--set", "report_tokens=1500"],
    "mixed": ["--sessions", "40"],
    "rag": ["--sessions", "40"],
}


def _ok(argv: list[str]) -> str:
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, f"{argv}: {res.output} {res.exception!r}"
    return res.output


@pytest.mark.parametrize("shape", list(SMALL))
def test_shape_end_to_end(shape: str, tmp_path: Path) -> None:
    wl = tmp_path / f"{shape}.jsonl"
    _ok(["workload", "gen", shape, "--seed", "1", *SMALL[shape], "-o", str(wl)])
    stats = json.loads(_ok(["workload", "stats", str(wl), "--json"]))
    bound = stats["prefix_reuse"]["hit_rate"]
    runs = {}
    for mode in ("baseline", "prefix"):
        out = tmp_path / mode
        _ok(["simulate", str(wl), "--mode", mode, "-o", str(out), "-q"])
        runs[mode] = json.loads((out / "summary.json").read_text())
    cmp = json.loads(
        _ok(["compare", str(tmp_path / "baseline"), str(tmp_path / "prefix"), "--json"])
    )
    assert cmp["runs"] == ["baseline", "prefix"]
    n = stats["num_requests"]
    assert runs["baseline"]["num_completed"] == runs["prefix"]["num_completed"] == n
    assert runs["baseline"]["prefix_cache_hit_rate"] == 0.0
    hit = runs["prefix"]["prefix_cache_hit_rate"]
    assert hit <= bound + 1e-9
    if shape == "chat":
        # Shared system prompt: prefix caching reaches the analytic bound.
        assert hit >= 0.98 * bound
        assert bound > 0.8


def _doc_commands() -> list[list[str]]:
    text = DOC.read_text()
    section = text[text.index("## Worked example") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```\n", 10)]
    return [shlex.split(line)[1:] for line in block.strip().splitlines()]


def test_worked_example_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = _doc_commands()
    assert commands[0][:3] == ["workload", "gen", "agentic"] and commands[-1][0] == "compare"
    outputs = [_ok(c) for c in commands]
    printed = [ln for ln in outputs[-1].splitlines() if ln.startswith("|")]
    text = DOC.read_text()
    shown = text[
        text.index("<!-- worked-example:begin -->") : text.index("<!-- worked-example:end -->")
    ]
    expected = [ln for ln in shown.splitlines() if ln.startswith("|")]
    assert printed == expected
    # The numbers quoted in the prose come from stats.
    stats = outputs[1]
    assert re.search(r"upper\s+bound 907,840 hit tokens = 83\.7%", stats)


def test_sweep_cli_runs_the_simulator(tmp_path: Path) -> None:
    wl = tmp_path / "chat.jsonl"
    _ok(["workload", "gen", "chat", "--sessions", "30", "-o", str(wl)])
    out = tmp_path / "sweep"
    _ok(
        [
            "sweep",
            str(wl),
            "--modes",
            "baseline,prefix",
            "-o",
            str(out),
            "--no-plots",
            "-j",
            "2",
            "--metric",
            "prefix_cache_hit_rate",
            "--json",
        ]
    )
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    bound = json.loads(_ok(["workload", "stats", str(wl), "--json"]))["prefix_reuse"]["hit_rate"]
    assert [r["mode"] for r in rows] == ["baseline", "prefix"]
    assert rows[0]["prefix_cache_hit_rate"] == 0.0
    assert rows[1]["prefix_cache_hit_rate"] == pytest.approx(bound, rel=0.02)
    assert (out / "runs" / "mode=prefix" / "summary.json").is_file()
