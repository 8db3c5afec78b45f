"""``kvlab rl train`` / ``kvlab rl eval``: a slim smoke run (a few hundred steps), bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("sb3_contrib")

from cli_run import run_cli


def test_train_then_eval_with_the_learned_policy(tmp_path: Path) -> None:
    out = tmp_path / "p.zip"
    r = run_cli(
        [
            "rl",
            "train",
            "shape:agentic:0",
            "-o",
            str(out),
            "--steps",
            "200",
            "-b",
            "16",
            "--requests",
            "20",
            "--json",
        ]
    )
    assert r.code == 0, r.err
    assert json.loads(r.out)["policy"] == str(out) and out.is_file()
    r = run_cli(
        [
            "rl",
            "eval",
            "shape:agentic:3",
            "--policy",
            str(out),
            "--episodes",
            "2",
            "--requests",
            "12",
            "-b",
            "16",
            "--json",
        ]
    )
    assert r.code == 0, r.err
    scores = {s["policy"]: s for s in json.loads(r.out)["scores"]}
    assert {"lru", "s3fifo", "belady", "random", "heuristic", "learned"} <= set(scores)
    for s in scores.values():
        assert len(s["values"]) == 2
        assert s["mean"] <= scores["belady"]["mean"] + 1e-12
    assert "episode 2/2" in r.err


@pytest.mark.parametrize(
    "argv",
    [
        ["rl", "eval", "no-such-trace.jsonl"],
        ["rl", "eval", "shape:agentic", "--episodes", "0"],
        ["rl", "eval", "shape:agentic", "--capacity-fraction", "2"],
        ["rl", "eval", "shape:agentic", "--policy", "missing.zip"],
        ["rl", "eval", "shape:agentic:x"],
        ["rl", "train", "shape:agentic", "-o", "x.zip", "--steps", "0"],
    ],
)
def test_bad_input_is_one_line(argv: list[str], tmp_path: Path) -> None:
    r = run_cli(argv)
    assert r.code in (1, 2)
    assert not r.traceback
    assert r.one_line_error()
