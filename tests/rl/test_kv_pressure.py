"""kvlab/KVPressure-v0: the engine effects of the actions, the mask, the episode, the
reward terms, determinism and Gymnasium's checker."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gymnasium")

import numpy as np

from kvlab.errors import ConfigError
from kvlab.rl.kv_pressure import ACTIONS, KVPressureEnv, heuristic_action
from kvlab.rl.pressure_rewards import DEFAULT_WEIGHTS, TERMS, EpisodeTally, episode_reward
from kvlab.rl.pressure_scenario import BUDGETS, make_scenario
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.workload.records import Request, Segment, Workload

EVICT = ACTIONS.index("evict")


def masked_random(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    return np.array([int(rng.choice(np.flatnonzero(row))) for row in mask])


def play(env: KVPressureEnv, seed: int, agent: str = "random") -> list:
    """Every observation, reward and info number of one episode."""
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out: list = [obs.tolist(), json.dumps(info["compact"], sort_keys=True)]
    done = False
    while not done:
        a = masked_random(rng, info["action_mask"]) if agent == "random" else heuristic_action(env)
        obs, r, done, _, info = env.step(a)
        out += [obs.tolist(), r, info["reward_terms"], info["applied"], info["usage"]]
    return out


def test_same_seed_same_trajectory() -> None:
    a = play(KVPressureEnv("hard"), 7)
    b = play(KVPressureEnv("hard"), 7)
    assert a == b
    assert a != play(KVPressureEnv("hard"), 8)


def test_a_cached_scenario_plays_as_a_fresh_one() -> None:
    from kvlab.rl import pressure_scenario as ps

    runs = [(seed, agent) for seed in (3, 11) for agent in ("random", "heuristic")]
    fresh = []
    for seed, agent in runs:  # each made with the cache empty
        ps.clear_cache()
        fresh.append(play(KVPressureEnv("hard"), seed, agent))
        assert ps.cache_info() == 1
    # resets on cached scenarios, after other episodes on the same env, play the same
    env = KVPressureEnv("hard")
    for seed, _ in runs:
        env.reset(seed=seed)
    play(env, 5)
    made = ps.cache_info()
    assert [play(env, seed, agent) for seed, agent in runs] == fresh
    assert ps.cache_info() == made  # all of them cache hits


def test_the_reset_seed_draws_from_the_scenario_set() -> None:
    env = KVPressureEnv("medium", num_scenarios=3)
    seen = set()
    budgets = set()
    for seed in range(12):
        _, info = env.reset(seed=seed)
        seen.add(info["scenario"]["seed"])
        budgets.add(info["budget"])
        lo, hi = BUDGETS["medium"]
        assert lo <= info["budget"] <= hi
    assert seen <= {0, 1, 2} and len(seen) > 1
    assert len(budgets) == 12  # the budget is drawn by each reset
    from kvlab.rl import pressure_scenario as ps

    ps.clear_cache()
    assert env.prepare_scenarios() == 3 and ps.cache_info() == 3
    fresh = KVPressureEnv("medium", num_scenarios=None)
    assert fresh.prepare_scenarios() == 0
    _, info = fresh.reset(seed=0)
    assert (
        info["scenario"]["seed"] >= 3
        and info["budget"] == make_scenario("medium", "mixed", info["scenario"]["seed"], 512).budget
    )


def test_check_env() -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(KVPressureEnv("medium", seed=0), skip_render_check=True)


def test_registered_and_made_by_id() -> None:
    import gymnasium as gym

    import kvlab.rl  # noqa: F401

    env = gym.make("kvlab/KVPressure-v0", difficulty="easy", kind="chat")
    obs, info = env.reset(seed=1)
    assert obs.shape == env.observation_space.shape
    _, _, _, _, info = env.step(np.zeros(8, dtype=np.int64))
    assert info["step"] == 1


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_episode_is_fifteen_decisions_and_rewards_sum_to_the_score(difficulty: str) -> None:
    env = KVPressureEnv(difficulty)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        lo, hi = BUDGETS[difficulty]
        assert lo <= info["budget"] <= hi and obs[1] == np.float32(info["budget"])
        total, n, done = 0.0, 0, False
        rng = np.random.default_rng(seed)
        while not done:
            obs, r, done, trunc, info = env.step(masked_random(rng, info["action_mask"]))
            assert not trunc and env.observation_space.contains(obs)
            n += 1
            # the step's reward split by term sums to the reward
            assert sum(info["reward_terms"].values()) == pytest.approx(r, abs=1e-12)
            total += r
        assert n == 15 and info["step"] == 15
        assert total == pytest.approx(info["episode_reward"], abs=1e-12)
        # the episode's score is the reward module's score of the episode's tallies
        t = env._tally
        assert len(t.usage) == 15
        score, terms = episode_reward(t)
        assert score == pytest.approx(info["episode_reward"], abs=1e-12)
        assert set(TERMS) <= set(info["episode_terms"]) and terms == info["episode_terms"]
        assert info["episode_terms"]["tokens"] > 0


def test_steps_and_weights_are_configurable() -> None:
    env = KVPressureEnv("hard", steps=4, weights={"failure_penalty": 0.0})
    _, info = env.reset(seed=2)
    done, n = False, 0
    while not done:
        _, _, done, _, info = env.step(np.zeros(8, dtype=np.int64))
        n += 1
        assert info["reward_terms"]["failure_penalty"] == 0.0
    assert n == 4
    with pytest.raises(RuntimeError, match="over"):
        env.step(np.zeros(8, dtype=np.int64))


def test_the_mask_never_allows_an_action_on_an_empty_slot() -> None:
    env = KVPressureEnv("easy", k=8)
    seen_empty = seen_full = False
    for seed in range(6):
        _, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            mask = info["action_mask"]
            n = len(env._cands)
            assert mask.shape == (8, len(ACTIONS))
            assert (env.action_masks() == mask.reshape(-1)).all()
            assert mask[:, 0].all()  # keep is always allowed
            assert not mask[n:, 1:].any()  # an empty slot allows keep only
            assert mask[:n, EVICT].all()  # a running candidate may be evicted
            loop = env.loop
            assert loop is not None
            for i, seq in enumerate(env._cands):  # compress / swap: the engine's own answer
                assert mask[i, 2] == loop.can_compress(seq)
                assert mask[i, 3] == loop.can_swap(seq)
            seen_empty |= n < 8
            seen_full |= n > 0
            _, _, done, _, info = env.step(masked_random(rng, mask))
    assert seen_empty and seen_full


def test_candidates_are_the_largest_running_requests() -> None:
    env = KVPressureEnv("hard", k=3)
    env.reset(seed=4)
    for _ in range(6):
        loop = env.loop
        assert loop is not None
        held = sorted((s.nblocks for s in loop.sched.running), reverse=True)[:3]
        assert [s.nblocks for s in env._cands] == held
        obs = env._obs
        for i, s in enumerate(env._cands):
            row = obs[11 + i * 10 : 21 + i * 10]
            assert row[0] == 1.0 and row[1] == np.float32(s.nblocks / env._usable)
        env.step(np.zeros(3, dtype=np.int64))


def one_request_workload() -> Workload:
    # two requests of their own content: nothing shared, so an evicted one frees all it holds
    segs = (Segment("system", 40, "sys-a", "system"), Segment("user", 24, "u-a", "context"))
    segs_b = (Segment("user", 30, "u-b", "ephemeral"),)
    return Workload(
        (
            Request("a", segs, 40, arrival_s=0.0),
            Request("b", segs_b, 40, arrival_s=0.0),
        ),
        name="two",
    )


def tiny_env(**kw: object) -> KVPressureEnv:
    base: dict = dict(
        workload=one_request_workload(),
        budget=1.0,
        pool_blocks=64,
        block_size=4,
        warmup_events=0,
        every_events=1,
        k=2,
        compact_info=False,
    )
    base.update(kw)
    return KVPressureEnv("easy", **base)


def test_an_evict_frees_exactly_the_blocks_the_request_held() -> None:
    # blocks of 4 tokens, a 64-block pool at budget 1.0 (64 usable blocks)
    env = tiny_env()
    env.reset(seed=0)
    loop = env.loop
    assert loop is not None
    names = [s.req.request_id for s in env._cands]
    assert sorted(names) == ["a", "b"]
    a = env._cands[names.index("a")]
    held, free0 = a.nblocks, loop.kv.num_free
    computed = a.num_computed
    # after one engine event both prompts are computed: a holds 64 / 4 = 16 blocks, b
    # ceil(30 / 4) = 8 (the first output tokens' KV comes with the next step)
    assert (held, a.num_computed, a.num_out) == (16, 64, 1) and free0 == 64 - 16 - 8
    act = np.zeros(2, dtype=np.int64)
    act[names.index("a")] = EVICT
    applied = env._apply(act)
    assert applied["evict"] == 1
    assert loop.kv.num_free - free0 == held
    assert a not in loop.sched.running and loop.sched.peek_waiting() is a
    # the tally: its computed tokens, the protected ones (system 40 + context 24), progress
    t = env._tally
    assert t.evicted_tokens == computed
    assert t.evicted_protected_tokens == min(computed, 64)
    assert t.evicted_progress == [a.num_out / 40]
    assert loop.num_forced_preemptions == 1


def test_drop_mode_fails_the_request() -> None:
    env = tiny_env(evict_mode="drop")
    env.reset(seed=0)
    loop = env.loop
    assert loop is not None
    names = [s.req.request_id for s in env._cands]
    act = np.zeros(2, dtype=np.int64)
    act[names.index("b")] = EVICT
    _, _, _, _, info = env.step(act)
    assert info["episode_terms"]["failures"] == 1.0
    assert info["reward_terms"]["failure_penalty"] == pytest.approx(-0.15 * 0.40)
    rec = loop.records[1]
    assert rec.status == "failed" and rec.error == "dropped under KV pressure"
    assert all(s.req.request_id != "b" for s in loop.sched.running)
    assert loop.sched.num_waiting() == 0


def test_scheduler_preemptions_are_failures_and_overflow() -> None:
    # keep everything on the hard tier: the scheduler preempts on its own somewhere
    env = KVPressureEnv("hard", compact_info=False)
    found = False
    for seed in range(6):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, done, _, info = env.step(np.zeros(8, dtype=np.int64))
        loop = env.loop
        assert loop is not None
        f = info["episode_terms"]["failures"]
        assert f == loop.num_preemptions_seen - env._sched_preempt0
        assert (info["episode_terms"]["memory_efficiency"] == -0.2) == (f > 0)
        found |= f > 0
    assert found


def test_heuristic_acts_only_under_pressure_and_within_the_mask() -> None:
    env = KVPressureEnv("hard", compact_info=False)
    acted = False
    for seed in range(3):
        _, info = env.reset(seed=seed)
        done = False
        while not done:
            a = heuristic_action(env)
            if env._usage < 0.9:
                assert not a.any()
            mask = info["action_mask"]
            assert all(mask[i, x] for i, x in enumerate(a))
            acted |= bool(a.any())
            _, _, done, _, info = env.step(a)
    assert acted


def test_compact_observation_is_json_and_lists_the_candidates() -> None:
    env = KVPressureEnv("medium")
    _, info = env.reset(seed=5)
    c = json.loads(json.dumps(info["compact"]))
    assert c == env.compact_observation()
    assert {
        "memory",
        "episode",
        "pressure",
        "cache_overview",
        "top_memory",
        "candidates",
        "eviction_order",
        "pending",
        "visible_seq_ids",
    } <= set(c)
    assert c["visible_seq_ids"] == [x["seq_id"] for x in c["candidates"]]
    assert sorted(c["eviction_order"]) == list(range(len(c["candidates"])))
    assert c["episode"]["remaining"] == 15


def test_scenarios_are_seeded_and_in_the_tier() -> None:
    a = make_scenario("hard", "mixed", 3, 512)
    b = make_scenario("hard", "mixed", 3, 512)
    assert a.workload.requests == b.workload.requests and a.budget == b.budget
    assert 0.65 <= a.budget <= 0.80 and a.regime in ("high", "bursty")
    kinds = {make_scenario("easy", "mixed", s, 512).kind for s in range(12)}
    assert kinds == {"chat", "agentic"}
    assert DEFAULT_WEIGHTS["failure_penalty"] == 0.40


def test_trace_scenarios_are_slices_of_the_azure_trace_at_the_regimes_rate() -> None:
    """kind trace: 64 consecutive requests of the shipped Azure trace, real lengths
    (capped), real gaps scaled to the regime's mean rate; seeded; a whole episode runs."""
    from kvlab.rl.pressure_scenario import (
        TRACE_MAX_OUTPUT,
        TRACE_MAX_PROMPT,
        TRACE_REQUESTS,
        _trace_requests,
    )

    a, b = make_scenario("hard", "trace", 5, 512), make_scenario("hard", "trace", 5, 512)
    assert a.workload.requests == b.workload.requests and a.kind == "trace"
    reqs, start = a.workload.requests, a.workload.meta["first_request"]
    src = _trace_requests()[start : start + TRACE_REQUESTS]
    assert len(reqs) == TRACE_REQUESTS
    for q, r in zip(reqs, src, strict=True):
        assert q.prompt_tokens == min(r.prompt_tokens, TRACE_MAX_PROMPT)
        assert q.output_tokens == min(r.output_tokens, TRACE_MAX_OUTPUT)
    # the slice's mean rate is the scenario's, its gaps the trace's, scaled alike
    times = [q.arrival_s for q in reqs]
    assert times[0] == 0.0 and (len(reqs) - 1) / times[-1] == pytest.approx(a.rate_per_s)
    scale = a.workload.meta["time_scale"]
    assert times[7] == pytest.approx((src[7].arrival_s - src[0].arrival_s) * scale)
    env = KVPressureEnv("hard", kind="trace")
    _, info = env.reset(seed=2)
    done = False
    while not done:
        _, _, done, _, info = env.step(heuristic_action(env))
    assert info["scenario"]["kind"] == "trace"


@pytest.mark.parametrize(
    "kw",
    [
        {"difficulty": "extreme"},
        {"kind": "rag"},
        {"k": 0},
        {"steps": 0},
        {"evict_mode": "swap"},
        {"usage_threshold": 1.5},
        {"budget": 0.0},
        {"weights": {"nope": 1.0}},
        {"num_scenarios": 0},
        {"num_scenarios": True},
    ],
)
def test_bad_arguments_are_config_errors(kw: dict) -> None:
    with pytest.raises(ConfigError):
        KVPressureEnv(**kw)


def test_tally_starts_empty() -> None:
    assert EpisodeTally().usage == []


def test_compress_frees_the_engines_exact_gain_and_shows_the_tier() -> None:
    env = tiny_env()
    _, info = env.reset(seed=0)
    loop = env.loop
    assert loop is not None
    names = [s.req.request_id for s in env._cands]
    i = names.index("a")
    a = env._cands[i]
    assert info["action_mask"][i].tolist() == [True, True, True, True]
    # a holds 16 blocks of 4 tokens (64 computed): at tier 1 a block holds 8 tokens, so
    # it needs 8 blocks: 8 freed (its blocks are its own)
    assert loop.compress_gain(a) == 8
    free0 = loop.kv.num_free
    act = np.zeros(2, dtype=np.int64)
    act[i] = ACTIONS.index("compress")
    assert env._apply(act)["compress"] == 1
    assert loop.kv.num_free - free0 == 8 and a.nblocks == 8 and loop.tier(a) == 1
    env._observe()
    j = [s.req.request_id for s in env._cands].index("a")
    assert env._obs[11 + j * 10 + 5] == np.float32(0.5)  # tier 1 of 2


def test_swap_charges_the_exact_transfer_as_latency() -> None:
    env = tiny_env()
    env.reset(seed=0)
    loop = env.loop
    assert loop is not None
    names = [s.req.request_id for s in env._cands]
    i = names.index("a")
    a = env._cands[i]
    held, free0, now0 = a.nblocks, loop.kv.num_free, loop.now
    act = np.zeros(2, dtype=np.int64)
    act[i] = ACTIONS.index("swap_to_cpu")
    assert env._apply(act)["swap_to_cpu"] == 1
    out_ticks = loop.swap_ticks_for(held)
    assert loop.now - now0 == out_ticks and loop.kv.num_free - free0 == held
    assert [s for s, _ in loop.swapped] == [a]
    _, _, _, _, info = env.step(np.zeros(2, dtype=np.int64))
    # the pool has room: a comes back in the next step, its 64 computed tokens in 16
    # blocks; the latency term reads both transfers on the clock
    assert loop.num_swaps_in == 1 and a in loop.sched.running
    expected = out_ticks + loop.swap_ticks_for(held)
    assert loop.swap_ticks == expected
    assert info["episode_terms"]["swap_latency_s"] == expected / TICKS_PER_S


def test_maskable_ppo_learns_a_few_steps_and_acts_within_the_mask() -> None:
    sb3 = pytest.importorskip("sb3_contrib")
    env = KVPressureEnv("hard", compact_info=False)
    model = sb3.MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=16, seed=0, verbose=0)
    model.learn(32)
    obs, info = env.reset(seed=1000)
    for _ in range(5):
        a, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
        assert info["action_mask"][np.arange(8), a].all()
        obs, _, done, _, info = env.step(a)
        if done:
            break
