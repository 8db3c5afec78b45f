"""kvlab/PrefixEviction-v0: the cache semantics, the baselines and Belady's bound."""

from __future__ import annotations

import pytest

pytest.importorskip("gymnasium")

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.errors import ConfigError
from kvlab.rl.baselines import POLICY_NAMES, policy_hits, reference_hits
from kvlab.rl.prefix_cache import PrefixCache, belady_hits, lru_hits
from kvlab.rl.prefix_eviction import PrefixEvictionEnv, heuristic_action
from kvlab.rl.prefix_trace import PrefixTrace
from kvlab.sim.cache_curve import reference_cache_curve
from kvlab.workload.generators import generate
from kvlab.workload.records import Request, Segment, Workload


def req(rid: str, *segs: tuple[str, int], t: float = 0.0) -> Request:
    return Request(rid, tuple(Segment("x", n, c) for c, n in segs), 1, arrival_s=t)


def wl(reqs: list[Request]) -> Workload:
    return Workload(tuple(reqs), name="t")


@pytest.fixture(scope="module")
def agentic() -> Workload:
    return generate("agentic", seed=0, sessions=6)


def test_narrative_two_prompts_share_a_system_prompt() -> None:
    # blocks of 4: "sys" 8 tokens = 2 blocks shared, then each its own 4-token block
    reqs = [req("a", ("sys", 8), ("u1", 5)), req("b", ("sys", 8), ("u2", 5), t=1.0)]
    t = PrefixTrace(wl(reqs), 4)
    assert t.num_requests == 2 and t.num_keys == 4
    assert list(t.hittable) == [3, 3]
    # capacity 3: b hits the two system blocks (its own u2 block is new)
    assert lru_hits(t, 3) == 2
    # capacity 2: inserting a's tail first leaves its first two blocks (sys) cached
    assert lru_hits(t, 2) == 2
    # capacity 1: only a's first block survives; b hits it
    assert lru_hits(t, 1) == 1


@pytest.mark.parametrize("block_size", [16, 64])
def test_env_with_lru_agent_reproduces_cache_curve(agentic: Workload, block_size: int) -> None:
    t = PrefixTrace(agentic, block_size)
    caps = [5, 60, 400]
    ref = reference_cache_curve(agentic.requests, block_size, caps)
    for point in ref.points:
        env = PrefixEvictionEnv(t, point.capacity_blocks, k=4)
        _, info = env.reset(seed=0)
        done = info["decisions"] == 0
        while not done:
            assert info["action_mask"][0]
            _, _, done, _, info = env.step(0)
        assert info["hit_blocks"] == point.hit_blocks
        assert policy_hits(t, point.capacity_blocks, "lru") == point.hit_blocks


def test_rewards_sum_to_episode_hit_tokens(agentic: Workload) -> None:
    t = PrefixTrace(agentic, 16)
    env = PrefixEvictionEnv(t, 200, k=8, episode_requests=20)
    _, info = env.reset(seed=3)
    total = info["hit_tokens"]
    rng = np.random.default_rng(0)
    done = False
    while not done:
        mask = info["action_mask"]
        _, r, done, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        total += r
    assert total == info["hit_tokens"]


def test_a_capacity_fraction_sizes_each_episode_by_its_own_blocks(agentic: Workload) -> None:
    """With capacity_fraction (what training uses) each episode's cache is that share of
    its own window's distinct blocks, as the evaluation sizes it, not of the whole trace
    (on a long trace that would never fill, and no eviction would happen)."""
    from kvlab.errors import ConfigError
    from kvlab.rl.prefix_eviction import episode_capacity

    t = PrefixTrace(agentic, 16)
    env = PrefixEvictionEnv(t, None, k=8, episode_requests=20, capacity_fraction=0.1)
    caps = set()
    for seed in range(4):
        env.reset(seed=seed)
        assert env.cache is not None
        lo, hi = env.cache.first, env.cache.last
        assert hi - lo == 20
        distinct = len(set(t.keys[t.start[lo] : t.start[hi]]))
        assert env.cache.capacity == max(1, int(distinct * 0.1))
        assert env.cache.capacity == episode_capacity(t, lo, hi, 0.1)
        caps.add(env.cache.capacity)
    assert max(caps) < int(t.num_keys * 0.1)  # smaller than a share of the whole trace
    with pytest.raises(ConfigError, match="one of"):
        PrefixEvictionEnv(t, 100, capacity_fraction=0.1)
    with pytest.raises(ConfigError, match="one of"):
        PrefixEvictionEnv(t, None)
    with pytest.raises(ConfigError, match="capacity_fraction"):
        PrefixEvictionEnv(t, None, capacity_fraction=1.5)


def test_same_seed_same_trajectory(agentic: Workload) -> None:
    t = PrefixTrace(agentic, 16)

    def play(seed: int) -> list[float]:
        env = PrefixEvictionEnv(t, 150, k=8, episode_requests=15)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        out = [float(obs.sum())]
        for _ in range(200):
            obs, r, done, _, _ = env.step(int(rng.integers(8)))
            out += [float(obs.sum()), r]
            if done:
                break
        return out

    assert play(5) == play(5)


def test_check_env(agentic: Workload) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(PrefixEvictionEnv(PrefixTrace(agentic, 16), 200, k=8, episode_requests=20))


def test_registered_and_made_by_id(agentic: Workload) -> None:
    import gymnasium as gym

    import kvlab.rl  # noqa: F401

    assert "kvlab/PrefixEviction-v0" in gym.registry
    t = PrefixTrace(agentic, 16)
    env = gym.make("kvlab/PrefixEviction-v0", trace=t, capacity_blocks=60, k=4)
    _, info = env.reset(seed=0)
    done = False
    while not done:
        _, _, done, _, info = env.step(0)
    assert info["hit_blocks"] == policy_hits(t, 60, "lru")


def test_heuristic_picks_a_real_candidate(agentic: Workload) -> None:
    env = PrefixEvictionEnv(PrefixTrace(agentic, 16), 100, k=8, episode_requests=20)
    obs, info = env.reset(seed=1)
    for _ in range(50):
        a = heuristic_action(obs, 8)
        assert info["action_mask"][a]
        obs, _, done, _, info = env.step(a)
        if done:
            break


def test_bad_capacity_is_a_config_error(agentic: Workload) -> None:
    with pytest.raises(ConfigError):
        PrefixCache(PrefixTrace(agentic, 16), 0)


def brute_force_best(t: PrefixTrace, cap: int) -> int:
    """The most hit blocks over every sequence of victims (any cached key)."""
    best = 0

    def play(choices: list[int]) -> None:
        nonlocal best
        c = PrefixCache(t, cap)
        i = 0
        more = c.advance()
        while more and i < len(choices):
            c.evict(sorted(c.order)[choices[i]])
            i += 1
            more = c.advance()
        if not more:
            best = max(best, c.hit_blocks)
            return
        for x in range(len(c.order)):
            play([*choices, x])

    play([])
    return best


tiny_trace = st.lists(
    st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 2)), min_size=1, max_size=2),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(tiny_trace, st.integers(1, 2))
def test_nothing_beats_the_brute_force_optimum_on_tiny_traces(prompts: list, cap: int) -> None:
    reqs = [req(f"r{i}", *segs, t=float(i)) for i, segs in enumerate(prompts)]
    t = PrefixTrace(wl(reqs), 1)
    best = brute_force_best(t, cap)
    hits = reference_hits(t, cap)
    assert all(v <= best for v in hits.values())


def test_belady_rule_is_not_always_the_optimum() -> None:
    # r1 must insert blocks 4 and 3 into a full cache holding r2's prefix 0, 1, 2: the
    # optimum evicts r1's own block 0 (re-inserted by r1's touch) twice over; a tie
    # among blocks next hit by r2 costs Belady's rule one of r2's three hits here
    prompts = [
        [("a", 2), ("b", 2)],
        [("b", 1), ("a", 1)],
        [("b", 2), ("a", 2)],
        [("a", 1)],
        [("a", 2), ("b", 2)],
    ]
    t = PrefixTrace(wl([req(f"r{i}", *s, t=float(i)) for i, s in enumerate(prompts)]), 1)
    assert belady_hits(t, 2) == 2
    assert brute_force_best(t, 2) == 3


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from("abcde"), st.integers(1, 6)), min_size=1, max_size=4),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 8),
    st.integers(1, 3),
)
def test_belady_bounds_every_policy(prompts: list, cap: int, bs: int) -> None:
    reqs = [req(f"r{i}", *segs, t=float(i)) for i, segs in enumerate(prompts)]
    t = PrefixTrace(wl(reqs), bs)
    hits = reference_hits(t, cap)
    assert set(hits) == {*POLICY_NAMES, "belady"}
    assert all(hits["belady"] >= v for v in hits.values())
    env = PrefixEvictionEnv(t, cap, k=3)
    _, info = env.reset(seed=0)
    rng = np.random.default_rng(cap)
    done = info["decisions"] == 0
    while not done:
        _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
    assert info["hit_blocks"] <= hits["belady"]
