"""Every eviction policy passes one conformance matrix, plus per-policy narratives."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import Gpu, llama8b, random_workload

from kvlab.errors import ConfigError
from kvlab.results import RunResult
from kvlab.sim.block_pool import BlockPool
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import Engine, simulate
from kvlab.sim.extents import ExtentPool
from kvlab.sim.policies import POLICIES, make_policy
from kvlab.sim.policies.keyed import BlockStats, KeyPolicy
from kvlab.sim.policies.lfu import LFU
from kvlab.sim.policies.retention import Retention
from kvlab.sim.policies.s3fifo import S3FIFO
from kvlab.sim.policies.ttl import TTL

PARAMS: dict[str, dict[str, float]] = {"ttl": {"ttl_s": 1.0}}


def churn(pool: BlockPool, seed: int, steps: int = 3000) -> None:
    """Random allocate / cache / hit / free traffic; checks invariants throughout."""
    rng = np.random.default_rng(seed)
    held: list[list[int]] = []
    usable = pool.num_blocks - 1
    for t in range(steps):
        if held and (rng.random() < 0.45 or pool.num_free == 0):
            blocks = held.pop(int(rng.integers(0, len(held))))
            pool.free(reversed(blocks), t)
        else:
            keys = [int(x) for x in rng.integers(0, 60, int(rng.integers(1, 5)))]
            hit = [b for k in keys if (b := pool.get(k)) is not None][:1]
            need = len(keys) - len(hit)
            if need + pool.num_evictable(hit) > pool.num_free:
                continue
            referenced = {b for h in held for b in h}
            pool.touch(hit, t)
            new = pool.allocate(need, t)
            assert not referenced & set(new), "a referenced block was handed out"
            for b, k in zip(new, keys[len(hit) :], strict=True):
                pool.cache(b, ("k", k), t, rank=int(rng.integers(0, 5)))
            held.append(hit + new)
        refs = sum(len(h) for h in held)
        assert pool.num_free + len({b for h in held for b in h}) == usable
        assert refs >= usable - pool.num_free
        assert len(pool.policy.order()) == len(pool.policy)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_never_exceeds_capacity_nor_evicts_referenced(name: str) -> None:
    pool = BlockPool(33, policy=make_policy(name, 1, **PARAMS.get(name, {})))
    churn(pool, seed=7)
    assert pool.num_evicted > 0


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_is_deterministic_in_the_engine(name: str) -> None:
    w = random_workload(3, 80)
    c = SimConfig(
        model=llama8b(), gpu=Gpu(), num_blocks=150, policy=name, policy_params=PARAMS.get(name, {})
    )
    a, b = simulate(w, c), simulate(w, c)
    assert [r.to_dict() for r in a.records] == [r.to_dict() for r in b.records]
    assert a.summary["num_evicted_blocks"] == b.summary["num_evicted_blocks"] > 0
    assert 0 <= a.summary["kv_cache_usage_perc_max"] <= 1


def comparable(r: RunResult) -> dict[str, object]:
    return {
        "records": [x.to_dict() for x in r.records],
        "summary": {k: v for k, v in r.summary.items() if k != "wall_s"},
        "timeseries": r.timeseries,
        "histograms": r.histograms,
    }


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_runs_on_extents_with_the_block_pools_results_or_says_why(name: str) -> None:
    w = random_workload(5, 80)
    c = SimConfig(
        model=llama8b(), gpu=Gpu(), num_blocks=150, policy=name, policy_params=PARAMS.get(name, {})
    )
    policy = make_policy(name, 1, **PARAMS.get(name, {}))
    if not policy.supports_extents:
        assert policy.no_extents_reason
        assert isinstance(Engine(w, c).pool, BlockPool)
        return
    assert isinstance(Engine(w, c).pool, ExtentPool)
    fast, ref = simulate(w, c), simulate(w, c.replace(extents=False))
    assert comparable(fast) == comparable(ref)
    assert ref.summary["num_evicted_blocks"] > 0


def test_unknown_policy_and_parameter() -> None:
    with pytest.raises(ConfigError):
        make_policy("nope")
    with pytest.raises(ConfigError):
        make_policy("lru", 1, bogus=1)
    with pytest.raises(ConfigError, match="ttl must be"):
        make_policy("ttl", 1, ttl_s=-1)


class FewHitsLongLived(KeyPolicy):
    """A policy as docs/policies.md adds one: fewest hits first, the shortest-lived
    retention class first among equal hits."""

    name = "fewhits"
    uses_retention = True

    def key(self, s: BlockStats) -> tuple[int, int]:
        return (s.hits, -s.rank)


def test_a_new_key_policy_runs_on_both_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(POLICIES, "fewhits", lambda ticks_per_s, **kw: FewHitsLongLived(**kw))
    w = random_workload(6, 80)
    c = SimConfig(model=llama8b(), gpu=Gpu(), num_blocks=150, policy="fewhits")
    assert isinstance(Engine(w, c).pool, ExtentPool)
    fast, ref = simulate(w, c), simulate(w, c.replace(extents=False))
    assert comparable(fast) == comparable(ref)
    assert comparable(fast) != comparable(simulate(w, c.replace(policy="lru")))


def test_lfu_evicts_fewest_hits_then_least_recently_freed() -> None:
    pol = LFU()
    pool = BlockPool(7, policy=pol)
    a = pool.allocate(3)  # blocks 1, 2, 3
    for b in a:
        pool.cache(b, f"k{b}")
    pool.free(reversed(a))
    assert pol.order() == [3, 2, 1]  # no hits: in free order, a request's tail first
    pool.touch([1, 2])  # a second request hits the first two
    pool.free([2, 1])
    assert pol.order() == [3, 2, 1]  # 3 (no hits), then 2 and 1 (one hit each)
    pool.touch([2])
    pool.free([2])
    assert pol.order() == [3, 1, 2]
    assert pool.allocate(5) == [4, 5, 6, 3, 1]  # clean blocks first


def test_retention_evicts_shortest_lived_class_first() -> None:
    pol = Retention()
    pool = BlockPool(5, policy=pol)
    blocks = pool.allocate(4)
    for b, rank in zip(blocks, [0, 3, 1, 3], strict=True):
        pool.cache(b, f"k{b}", 0, rank=rank)
    pool.free(reversed(blocks))
    # reasoning-class blocks (rank 3) go first, LRU among them (tail freed first)
    assert pol.order() == [4, 2, 3, 1]
    assert pool.allocate(1) == [4]


def test_ttl_pins_system_blocks_until_expiry() -> None:
    pol = TTL(ttl=100, pin_rank=0)
    pool = BlockPool(4, policy=pol)
    a, b, c = pool.allocate(3, now=0)
    pool.cache(a, "sys", 0, rank=0)
    pool.cache(b, "u1", 0, rank=1)
    pool.cache(c, "u2", 0, rank=1)
    pool.free([c, b, a], now=0)
    assert pool.allocate(1, now=50) == [c]  # LRU among unpinned
    assert pool.allocate(1, now=50) == [b]
    assert pool.allocate(1, now=50) == [a]  # only pinned left: soft pin yields
    pool2 = BlockPool(3, policy=TTL(ttl=100))
    x, y = pool2.allocate(2, now=0)
    pool2.cache(x, "sys", 0, rank=0)
    pool2.cache(y, "u", 0, rank=1)
    pool2.free([y, x], now=0)
    assert pool2.allocate(1, now=150) == [x]  # expired pin goes first


def test_s3fifo_one_hit_blocks_leave_before_reused_ones() -> None:
    pol = S3FIFO(small_fraction=0.5)
    pool = BlockPool(5, policy=pol)
    blocks = pool.allocate(4)
    for b in blocks:
        pool.cache(b, f"k{b}")
    pool.free(reversed(blocks))
    pool.touch([pool.get("k1")])  # block 1 reused
    pool.free([1])
    victims = pool.allocate(3)
    assert 1 not in victims
