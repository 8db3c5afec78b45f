"""The LLM tools over KVPressure (kvlab.rl.pressure_tools): examples, the seq-id to
action-slot mapping, masked and bad calls, and the score being the environment's own.

A small gym-style double (``TallyEnv``) pins the mapping exactly; the tests on the real
``KVPressureEnv`` play fixed tool sequences and compare with the same actions played
on the environment directly."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from pressure_double import TallyEnv

from kvlab.errors import ConfigError
from kvlab.rl.pressure_rewards import DEFAULT_WEIGHTS, TERMS
from kvlab.rl.pressure_tools import (
    TOOL_ACTIONS,
    PressureExample,
    PressureToolSession,
    pressure_examples,
    term_scorer,
    term_scorers,
)


def test_examples_interleave_tiers_and_seeds() -> None:
    ex = pressure_examples("all", 5, seed=42)
    assert [(e.difficulty, e.seed) for e in ex] == [
        ("easy", 42),
        ("medium", 42),
        ("hard", 42),
        ("easy", 43),
        ("medium", 43),
    ]
    assert len(pressure_examples("hard", -1, seed=0, per_tier=7)) == 7
    assert len(pressure_examples("all", -1, seed=0, per_tier=4)) == 12
    assert pressure_examples("easy", 0) == []
    assert ex[0].name == "kvpressure-easy-42"


@pytest.mark.parametrize(
    ("difficulty", "n"), [("extreme", 3), ("all", -2), ("easy", 1.5), ("easy", True)]
)
def test_bad_example_arguments_are_one_config_error(difficulty: str, n: Any) -> None:
    with pytest.raises(ConfigError):
        pressure_examples(difficulty, n)


def _session() -> PressureToolSession:
    env = TallyEnv()
    _obs, info = env.reset(seed=0)
    return PressureToolSession(env=env, seed=0, last_info=info)


def test_each_tool_call_is_one_step_on_its_candidate_slot() -> None:
    s = _session()
    obs = json.loads(s.evict("11"))
    assert obs["episode_remaining"] == 2
    s.call("swap_to_cpu", {"seq_id": 12})  # an integer id is taken as its string
    end = json.loads(s.keep())
    assert s.env.actions == [[0, 1, 0], [0, 0, 3], [0, 0, 0]]
    assert s.done and end["episode_over"] and end["steps"] == 3
    assert s.total_reward == 4.0 == end["reward"]
    assert s.calls == ["evict(11)", "swap_to_cpu(12)", "keep"] and s.actions == s.env.actions
    assert end["metrics"]["tokens"] == 7.0
    assert s.keep() == "error: the episode is over" and s.steps == 3


def test_bad_calls_answer_one_line_and_spend_no_step() -> None:
    s = _session()
    assert s.evict("99") == (
        "error: seq 99 is not an eviction candidate now; candidates: 10, 11, 12"
    )
    assert s.compress("12") == "error: compress is not allowed for seq 12 now"
    assert s.call("evict", {}) == "error: evict needs seq_id"
    assert s.call("evict", {"seq_id": 1.5}).startswith("error: seq_id must be a seq id")
    assert s.call("drop", {"seq_id": 10}).startswith("error: unknown tool 'drop'")
    assert s.steps == 0 and s.env.actions == []
    s.call("compress", {"seq_id": "10"})
    assert s.env.actions == [[2, 0, 0]]


def test_breakdown_and_term_scorers_read_the_last_info() -> None:
    s = _session()
    s.keep()
    b = s.breakdown()
    assert list(b) == list(TERMS) and b["failure_penalty"] == pytest.approx(0.1)
    fns = list(term_scorers())
    assert [f.__name__ for f, _ in fns] == list(TERMS)
    assert [w for _, w in fns] == [DEFAULT_WEIGHTS[t] for t in TERMS]
    assert term_scorer("headroom_bonus")(b) == pytest.approx(0.3)
    with pytest.raises(ConfigError):
        term_scorer("speed")


# -- on the real environment ---------------------------------------------------------


def _script(s: PressureToolSession, plan: list[str]) -> list[str]:
    """Play ``plan`` (tool names), each on the first candidate that allows it; keep()
    when none does. Returns the calls made."""
    for tool in plan:
        if s.done:
            break
        if tool == "keep":
            s.keep()
            continue
        mask = np.asarray(s.last_info["action_mask"])
        ids = s.candidate_ids()
        code = TOOL_ACTIONS.index(tool)
        ok = [i for i, _ in enumerate(ids) if mask[i][code]]
        if ok:
            s.call(tool, {"seq_id": ids[ok[0]]})
        else:
            s.keep()
    while not s.done:
        s.keep()
    return s.calls


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_tool_episode_scores_the_environments_own_reward(difficulty: str) -> None:
    pytest.importorskip("kvlab.rl.kv_pressure")
    plan = ["evict", "compress", "swap_to_cpu", "keep", "compress", "evict"]
    s = PressureToolSession.start(PressureExample(difficulty, 3))
    first = json.loads(s.observation_json())
    assert s.candidate_ids() == first["visible_seq_ids"]
    _script(s, plan)
    assert s.done and s.steps == len(s.actions) >= 1
    assert any(c != "keep" for c in s.calls)  # the script acted on some candidate
    # the same actions on a fresh environment, directly
    env = s.env.__class__(difficulty=difficulty)
    env.reset(seed=3)
    direct = 0.0
    for a in s.actions:
        _o, r, term, trunc, info = env.step(np.asarray(a))
        direct += float(r)
    assert term or trunc
    assert s.total_reward == pytest.approx(direct)
    assert s.breakdown() == {t: pytest.approx(info["episode_terms"][t]) for t in TERMS}
    weighted = sum(DEFAULT_WEIGHTS[t] * v for t, v in s.breakdown().items())
    assert math.isclose(weighted, s.total_reward, abs_tol=1e-9)
