"""Every eviction policy passes one conformance matrix, plus per-policy narratives."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import Gpu, llama8b, random_workload

from kvlab.errors import ConfigError
from kvlab.sim.block_pool import BlockPool
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import simulate
from kvlab.sim.policies import POLICIES, make_policy
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


def test_unknown_policy_and_parameter() -> None:
    with pytest.raises(ConfigError):
        make_policy("nope")
    with pytest.raises(ConfigError):
        make_policy("lru", 1, bogus=1)


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
