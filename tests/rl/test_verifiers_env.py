"""The verifiers taskset (kvlab.rl.verifiers_env, the rl-verifiers extra) with a scripted
client and no API key: the plugin loads by id through ``load_environment``, the toolset
advertises the four tools over MCP, a fixed tool-call sequence plays through an in-memory
MCP client, and verifiers' own scoring reports the seven terms whose weighted sum is the
environment's reward for that trajectory."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("verifiers.v1")

import verifiers.v1 as vf
from mcp.client import Client
from mcp.server.mcpserver import MCPServer

from kvlab.rl import pressure_tools
from kvlab.rl.pressure_rewards import DEFAULT_WEIGHTS, TERMS
from kvlab.rl.verifiers_env import (
    KVPressureState,
    KVPressureTask,
    KVPressureToolset,
    KVPressureToolsetConfig,
)

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "environments" / "kvlab_kvpressure"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The plugin module importable as verifiers imports it (as if installed)."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import kvlab_kvpressure

    return kvlab_kvpressure


def _real_env() -> None:
    pytest.importorskip("kvlab.rl.kv_pressure")


def test_load_environment_builds_the_seeded_taskset(plugin: Any) -> None:
    _real_env()
    env = plugin.load_environment(difficulty="all", num_examples=4, seed=42)
    assert isinstance(env, vf.SingleAgentEnv)
    tasks = list(env.taskset)
    assert [(t.data.difficulty, t.data.seed) for t in tasks] == [
        ("easy", 42), ("medium", 42), ("hard", 42), ("easy", 43)
    ]
    first = json.loads(tasks[0].data.prompt)
    assert "candidates" in first and "memory" in first
    assert tasks[0].data.system_prompt == pressure_tools.SYSTEM_PROMPT
    again = list(plugin.load_environment(difficulty="all", num_examples=4, seed=42).taskset)
    assert [t.data.prompt for t in again] == [t.data.prompt for t in tasks]  # seeded


def test_load_environment_bad_arguments_are_one_config_error(plugin: Any) -> None:
    from kvlab.errors import ConfigError

    with pytest.raises(ConfigError, match="difficulty"):
        plugin.load_environment(difficulty="insane")


def test_rewards_are_the_seven_terms_with_their_weights() -> None:
    names = [fn.__name__ for fn in KVPressureTask(_data("easy", 0)).hooks("reward")]
    assert sorted(names) == sorted(TERMS)
    for fn in KVPressureTask(_data("easy", 0)).hooks("reward"):
        assert fn._vf_weight == DEFAULT_WEIGHTS[fn.__name__]


def _data(difficulty: str, seed: int) -> Any:
    from kvlab.rl.verifiers_env import KVPressureData

    return KVPressureData(name="t", prompt="{}", difficulty=difficulty, seed=seed)


async def _play(toolset: KVPressureToolset, plan: list[tuple[str, dict[str, Any]]]) -> Any:
    """The scripted client: list the tools, then make each call of ``plan`` in turn."""
    state = KVPressureState()

    async def pull() -> KVPressureState:  # the rollout's state, as the channel would hold it
        return state

    toolset._pull_state = pull  # type: ignore[method-assign]
    server = MCPServer("kvlab-kvpressure")
    toolset.register(server)
    async with Client(server) as client:
        listed = sorted(t.name for t in (await client.list_tools()).tools)
        answers = []
        for name, args in plan:
            res = await client.call_tool(name, args)
            answers.append(res.content[0].text)
    return listed, answers, state


def _score(difficulty: str, seed: int, state: KVPressureState) -> Any:
    task = KVPressureTask(_data(difficulty, seed))
    trace = vf.Trace(
        task=vf.TraceTask(type="KVPressureTask", data=task.data),
        agent=vf.AgentInfo(config=vf.AgentConfig()),
        state=state,
    )
    asyncio.run(task.score(trace))
    return trace


def test_scripted_client_on_a_double_pins_the_plumbing(monkeypatch: pytest.MonkeyPatch) -> None:
    from pressure_double import TallyEnv

    monkeypatch.setattr(pressure_tools, "make_env", lambda difficulty, **kw: TallyEnv())
    toolset = KVPressureToolset(KVPressureToolsetConfig())
    toolset.start(pressure_tools.PressureExample("easy", 0))
    plan = [
        ("evict", {"seq_id": "11"}),
        ("compress", {"seq_id": "12"}),
        ("swap_to_cpu", {"seq_id": "10"}),
        ("keep", {}),
    ]
    listed, answers, state = asyncio.run(_play(toolset, plan))
    assert listed == ["compress", "evict", "keep", "swap_to_cpu"]
    assert answers[1] == "error: compress is not allowed for seq 12 now"
    assert json.loads(answers[-1])["episode_over"]
    assert toolset.session is not None and toolset.session.env.actions == [
        [0, 1, 0], [3, 0, 0], [0, 0, 0]
    ]
    assert state.done and state.steps == 3 and state.reward == 4.0
    assert state.calls == ["evict(11)", "swap_to_cpu(10)", "keep"]
    assert state.metrics["tokens"] == 7.0
    trace = _score("easy", 0, state)
    assert {k: r.weight for k, r in trace.rewards.items()} == dict(DEFAULT_WEIGHTS)
    assert trace.rewards["failure_penalty"].score == pytest.approx(0.1)
    assert trace.metrics["steps"] == 3 and trace.metrics["tokens"] == 7.0


@pytest.mark.parametrize("difficulty", ["medium", "hard"])
def test_scripted_client_reward_is_the_environments(difficulty: str) -> None:
    _real_env()
    import numpy as np

    from kvlab.rl.pressure_tools import TOOL_ACTIONS, PressureToolSession

    # the fixed sequence: the env's own first legal candidate for each tool in turn
    probe = PressureToolSession.start(pressure_tools.PressureExample(difficulty, 5))
    plan: list[tuple[str, dict[str, Any]]] = []
    for tool in ["evict", "compress", "swap_to_cpu", "keep"] * 8:
        if probe.done:
            break
        if tool == "keep":
            probe.keep()
            plan.append(("keep", {}))
            continue
        mask = np.asarray(probe.last_info["action_mask"])
        ids = probe.candidate_ids()
        ok = [i for i in range(len(ids)) if mask[i][TOOL_ACTIONS.index(tool)]]
        if ok:
            probe.call(tool, {"seq_id": ids[ok[0]]})
            plan.append((tool, {"seq_id": ids[ok[0]]}))
    while not probe.done:
        probe.keep()
        plan.append(("keep", {}))

    toolset = KVPressureToolset(KVPressureToolsetConfig())
    toolset.start(pressure_tools.PressureExample(difficulty, 5))
    _listed, answers, state = asyncio.run(_play(toolset, plan))
    assert json.loads(answers[-1])["episode_over"] and state.done
    assert state.reward == pytest.approx(probe.total_reward)
    trace = _score(difficulty, 5, state)
    assert set(trace.rewards) == set(TERMS)
    assert math.isclose(trace.reward, probe.total_reward, abs_tol=1e-9)
