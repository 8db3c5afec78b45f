"""The verifiers taskset (kvlab.rl.verifiers_env, the rl-verifiers extra) with a scripted
client and no API key: the plugin loads by id through ``load_environment``, the toolset
advertises the four tools over MCP, a fixed tool-call sequence plays through an in-memory
MCP client, and verifiers' own scoring reports the seven terms whose weighted sum is the
environment's reward for that trajectory. The slow test runs whole rollouts with
verifiers' own ``vf-eval`` (its ``null`` chat harness, which ``uv`` installs from the
package index on first use, in the local subprocess runtime) against a scripted
OpenAI-compatible endpoint (``scripted_chat.py``)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
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
        ("easy", 42),
        ("medium", 42),
        ("hard", 42),
        ("easy", 43),
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
        [0, 1, 0],
        [3, 0, 0],
        [0, 0, 0],
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


def _play_direct(difficulty: str, seed: int, margin: float) -> Any:
    """The scripted endpoint's rule played on ``KVPressureEnv`` itself (no tools, no
    verifiers): the calls it makes, the sum of the step rewards, the last step's terms."""
    import numpy as np
    from scripted_chat import choose

    from kvlab.rl.kv_pressure import KVPressureEnv
    from kvlab.rl.pressure_tools import TOOL_ACTIONS

    env = KVPressureEnv(difficulty=difficulty)
    env.reset(seed=seed)
    calls: list[tuple[str, dict[str, str]]] = []
    total, done, info = 0.0, False, {}
    while not done:
        obs = env.compact_observation()
        tool, args = choose(obs, margin)
        action = np.zeros(len(env.action_space.nvec), dtype=np.int64)
        if args:  # the candidate's slot is its action index
            slot = [int(c["slot"]) for c in obs["candidates"] if c["seq_id"] == args["seq_id"]]
            action[slot[0]] = TOOL_ACTIONS.index(tool)
        _obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        calls.append((tool, args))
        done = bool(terminated or truncated)
    return calls, total, info["episode_terms"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(getattr(p, "text", "") for p in content or [])


@pytest.mark.slow
def test_vf_eval_rollouts_against_a_scripted_endpoint_score_the_environments_reward(
    tmp_path: Path,
) -> None:
    """Two whole rollouts (hard seeds 42, 43, concurrently) through ``vf-eval``: the
    harness program talks to the scripted endpoint through verifiers' interception server
    and to a per-rollout tool server over MCP; each conversation opens with a call the
    environment refuses, then follows the rule. verifiers' reward for each trace equals
    the reward of the same rule played on ``KVPressureEnv`` directly with the same seed."""
    _real_env()
    from scripted_chat import MODEL, NO_SUCH_SEQ, ScriptedChat, serve

    import kvlab

    src = str(Path(kvlab.__file__).resolve().parents[1])
    bindir = str(Path(sys.executable).parent)  # vf-eval, and uv for the harness program
    env = {
        **os.environ,
        # the tool server runs as ``python -m kvlab.rl.verifiers_env`` in another cwd
        "PYTHONPATH": os.pathsep.join([src, str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]),
        "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")]),
    }
    chat = ScriptedChat(bad_first_call=True)
    with serve(chat) as (url, _):
        cmd = [
            str(Path(bindir) / "vf-eval"), "kvlab-kvpressure",
            "--env.taskset.difficulty", "hard", "--env.taskset.num-examples", "2",
            "--env.taskset.seed", "42",
            "--env.agent.harness.id", "null", "--env.agent.runtime.type", "subprocess",
            "--env.agent.timeout.setup", "300", "--env.agent.timeout.rollout", "120",
            "--client.base-url", url, "--model", MODEL,
            "--no-push", "--no-rich", "-o", str(tmp_path), "--run.name", "scripted",
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = (tmp_path / "scripted" / "traces.jsonl").read_text().splitlines()
    traces = [vf.Trace.model_validate(t) for line in lines for t in json.loads(line)["traces"]]
    assert sorted(t.task.data.name for t in traces) == ["kvpressure-hard-42", "kvpressure-hard-43"]
    n_turns = 0
    for trace in traces:
        assert trace.errors == [] and trace.stop_condition == "agent_completed"
        messages = trace.messages
        calls = [
            (c.name, json.loads(c.arguments))
            for m in messages
            if m.role == "assistant"
            for c in m.tool_calls or []
        ]
        answers = [_text(m.content) for m in messages if m.role == "tool"]
        n_turns += len(calls) + 1  # the last turn answers in text
        assert len(answers) == len(calls)
        assert calls[0] == ("evict", {"seq_id": NO_SUCH_SEQ})
        assert answers[0].startswith(f"error: seq {NO_SUCH_SEQ} is not an eviction candidate")
        assert json.loads(answers[-1])["episode_over"]
        seed = int(trace.task.data.name.rsplit("-", 1)[1])
        direct_calls, direct_reward, terms = _play_direct("hard", seed, chat.margin)
        assert calls[1:] == direct_calls  # the refused call spent no step
        assert "compress" in {c[0] for c in direct_calls}  # the rule acts, not only keeps
        assert math.isclose(trace.reward, direct_reward, abs_tol=1e-9)
        assert {k: r.weight for k, r in trace.rewards.items()} == dict(DEFAULT_WEIGHTS)
        for k, r in trace.rewards.items():
            assert r.score == pytest.approx(terms[k], abs=1e-12)
        assert trace.metrics["steps"] == len(direct_calls)
    assert len(chat.turns) == n_turns
    assert {tuple(t.tools_offered) for t in chat.turns} == {
        ("compress", "evict", "keep", "swap_to_cpu")
    }
