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
    assert "step 200/200" in r.err  # progress after each rollout, on stderr
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


@pytest.mark.parametrize(
    "argv",
    [
        ["rl", "train", "no-such-trace.jsonl", "-o", "x.zip", "--capacity-fraction", "2"],
        ["rl", "train", "no-such-trace.jsonl", "-o", "x.zip", "--requests", "0"],
        ["rl", "eval", "no-such-trace.jsonl", "--k", "0"],
    ],
)
def test_bad_options_are_named_before_the_trace_loads(argv: list[str]) -> None:
    """A bad option is the error even when the trace does not exist either: the options
    are checked first (a large trace would otherwise load before the one-line error)."""
    r = run_cli(argv)
    assert r.code in (1, 2) and not r.traceback
    assert argv[-2] in r.one_line_error() and "no-such-trace" not in r.one_line_error()


def test_kvpressure_train_then_eval_per_term(tmp_path: Path) -> None:
    pytest.importorskip("kvlab.rl.kv_pressure")
    out = tmp_path / "kvp.zip"
    r = run_cli(
        ["rl", "train", "--env", "kvpressure", "--difficulty", "hard", "-o", str(out),
         "--steps", "32", "--seed", "1", "--json"]
    )  # fmt: skip
    assert r.code == 0, r.err
    got = json.loads(r.out)
    assert got["policy"] == str(out) and out.is_file() and got["difficulty"] == "hard"
    log = tmp_path / "kvp-log"
    assert (log / "progress.csv").is_file()
    assert json.loads((log / "train.json").read_text())["seed"] == 1
    assert "step 32/32" in r.err
    r = run_cli(
        ["rl", "eval-pressure", "-d", "easy", "--agents", "random,heuristic", "--policy",
         str(out), "--episodes", "2", "--seed", "500", "--json"]
    )  # fmt: skip
    assert r.code == 0, r.err
    results = json.loads(r.out)["results"]
    assert [s["agent"] for s in results] == ["random", "heuristic", "ppo"]
    from kvlab.rl.pressure_rewards import DEFAULT_WEIGHTS

    for s in results:
        assert s["episodes"] == 2 and s["difficulty"] == "easy"
        # the episode reward is the weighted sum of the term scores (means of sums)
        weighted = sum(DEFAULT_WEIGHTS[t] * s["terms_mean"][t] for t in DEFAULT_WEIGHTS)
        assert weighted == pytest.approx(s["reward_mean"], abs=1e-9)
    assert "episode 6/6: easy ppo seed 501" in r.err


@pytest.mark.parametrize(
    "argv",
    [
        ["rl", "train", "-o", "x.zip"],  # --env prefix needs TRACE
        ["rl", "train", "shape:agentic", "--env", "kvpressure", "-o", "x.zip"],
        ["rl", "train", "--env", "gridworld", "-o", "x.zip"],
        ["rl", "train", "--env", "kvpressure", "--difficulty", "extreme", "-o", "x.zip"],
        ["rl", "eval-pressure", "--policy", "missing.zip"],
    ],
)
def test_kvpressure_bad_input_is_one_line(argv: list[str]) -> None:
    r = run_cli(argv)
    assert r.code in (1, 2)
    assert not r.traceback
    assert r.one_line_error()
