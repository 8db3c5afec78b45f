"""KVPressure-v0 baselines: ``kvlab rl eval-pressure`` on a few episodes, the summaries,
bad input."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gymnasium")

from cli_run import run_cli
from kvlab.rl.kv_pressure import KVPressureEnv
from kvlab.rl.pressure_baselines import evaluate, play_episode
from kvlab.rl.pressure_rewards import DEFAULT_WEIGHTS, TERMS


def test_eval_pressure_json_has_every_tier_agent_and_term() -> None:
    r = run_cli(["rl", "eval-pressure", "--episodes", "2", "--agents", "keep,heuristic", "--json"])
    assert r.code == 0, r.err
    out = json.loads(r.out)
    got = {(x["difficulty"], x["agent"]) for x in out["results"]}
    assert got == {(d, a) for d in ("easy", "medium", "hard") for a in ("keep", "heuristic")}
    for x in out["results"]:
        assert x["episodes"] == 2 and len(x["rewards"]) == 2
        terms = x["terms_mean"]
        assert set(TERMS) <= set(terms)
        # the mean reward is the weighted sum of the mean terms
        assert x["reward_mean"] == pytest.approx(
            sum(DEFAULT_WEIGHTS[t] * terms[t] for t in TERMS), abs=1e-9
        )
        if x["agent"] == "keep":
            assert x["actions_mean"] == {"evict": 0.0, "compress": 0.0, "swap_to_cpu": 0.0}
    assert "episode 12/12" in r.err


def test_eval_pressure_table() -> None:
    r = run_cli(["rl", "eval-pressure", "-d", "easy", "--episodes", "1", "--agents", "random"])
    assert r.code == 0, r.err
    assert "easy    random   1" in r.out and "reward" in r.out


def test_same_seeds_same_scores() -> None:
    a = evaluate(["hard"], ["random"], episodes=2, seed=5)
    b = evaluate(["hard"], ["random"], episodes=2, seed=5)
    assert a[0].rewards == b[0].rewards
    row = play_episode(KVPressureEnv("hard", compact_info=False, num_scenarios=None), "random", 5)
    assert row.reward == a[0].rewards[0] and row.steps == 15


@pytest.mark.parametrize(
    "argv",
    [
        ["rl", "eval-pressure", "-d", "extreme"],
        ["rl", "eval-pressure", "--agents", "ppo"],
        ["rl", "eval-pressure", "--agents", ","],
        ["rl", "eval-pressure", "--episodes", "0"],
        ["rl", "eval-pressure", "--kind", "rag"],
        ["rl", "eval-pressure", "--evict-mode", "later"],
    ],
)
def test_bad_input_is_one_line(argv: list[str]) -> None:
    r = run_cli(argv)
    assert r.code in (1, 2)
    assert not r.traceback
    assert r.one_line_error()
