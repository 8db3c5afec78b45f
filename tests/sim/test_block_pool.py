"""Narrative tests of the block pool on tiny configs (exact block ids and queue order)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlab.sim.block_pool import BlockPool
from kvlab.sim.kv_manager import AdmissionRules, KVManager


class Seq:
    def __init__(self, keys: list[str], num_tokens: int) -> None:
        self.keys: list = list(keys)
        self.num_tokens = num_tokens
        self.blocks: list[int] = []
        self.num_cached_blocks = 0
        self.num_computed = 0

    def ensure_keys(self, n: int) -> None:
        assert len(self.keys) >= n


def test_initial_queue_skips_null_block() -> None:
    pool = BlockPool(6)
    assert pool.free_order() == [1, 2, 3, 4, 5]
    assert pool.num_free == 5
    assert pool.usage() == 0.0


def test_allocate_pops_head_and_free_orders_hashed_to_tail() -> None:
    pool = BlockPool(8)
    a = pool.allocate(3)
    assert a == [1, 2, 3]
    pool.cache(1, "k1")
    pool.cache(2, "k2")  # block 3 stays partial (unkeyed)
    pool.free(reversed(a))
    # unkeyed 3 is prepended (reused first); keyed blocks appended tail first
    assert pool.free_order() == [3, 4, 5, 6, 7, 2, 1]
    assert pool.usage() == 0.0
    assert pool.num_cached_free() == 2


def test_hit_removes_from_middle_and_eviction_drops_key() -> None:
    pool = BlockPool(5)
    a = pool.allocate(4)
    for b, k in zip(a, "abcd", strict=True):
        pool.cache(b, k)
    pool.free(reversed(a))
    assert pool.free_order() == [4, 3, 2, 1]
    assert pool.longest_hit(["a", "b", "x"], 3) == [1, 2]
    pool.touch([1, 2])
    assert pool.ref[1] == 1 and pool.free_order() == [4, 3]
    assert pool.usage() == 0.5
    got = pool.allocate(1)
    assert got == [4] and pool.get("d") is None and pool.num_evicted == 1


def test_duplicate_content_keeps_first_block_for_hits() -> None:
    pool = BlockPool(4)
    x, y = pool.allocate(2)
    pool.cache(x, "same")
    pool.cache(y, "same")
    assert pool.get("same") == x
    pool.free([x, y])
    pool.allocate(1)  # clean block 3 first
    pool.allocate(1)  # evicts x, the head of the cached free blocks
    assert pool.get("same") == y


def test_lookup_capped_by_last_token_rule() -> None:
    pool = BlockPool(10)
    mgr = KVManager(pool, block_size=4, max_model_len=100)
    s = Seq(["a", "b"], 8)
    assert mgr.admit(s, 8, []) == []
    assert s.blocks == [1, 2] and s.num_cached_blocks == 2
    mgr.free(s)
    # the same 8-token prompt can hit only 7 tokens -> 1 block
    assert len(mgr.lookup(["a", "b"], 8)) == 1
    # a 9-token prompt with the same first 8 hits 2 blocks
    assert len(mgr.lookup(["a", "b"], 9)) == 2


def test_admission_reserves_full_prompt() -> None:
    pool = BlockPool(5)  # 4 usable blocks
    mgr = KVManager(pool, block_size=4, max_model_len=100)
    s = Seq(["a", "b", "c", "d", "e"], 20)  # needs 5 blocks in all
    assert mgr.admit(s, 4, []) is None  # only the first chunk would fit
    lax = KVManager(pool, block_size=4, max_model_len=100, reserve_full_prompt=False)
    assert lax.admit(s, 4, []) == [] and s.blocks == [1]


def test_evictable_hits_count_against_free_blocks() -> None:
    pool = BlockPool(4)  # 3 usable
    mgr = KVManager(pool, block_size=2, max_model_len=100)
    a = Seq(["a", "b"], 4)
    mgr.admit(a, 4, [])
    mgr.free(a)
    b = Seq(["a", "b", "c", "d"], 8)
    hit = mgr.lookup(b.keys, b.num_tokens)
    assert hit == [1, 2]
    # 2 hit blocks (evictable) + 2 new blocks > 3 free
    assert mgr.admit(b, 4, hit) is None
    assert pool.free_order() == [3, 2, 1]


def test_pool_rejects_over_allocation() -> None:
    pool = BlockPool(3)
    with pytest.raises(ValueError):
        pool.allocate(3)


def test_residency_histograms_count_every_eviction_and_hit() -> None:
    pool = BlockPool(3)
    a, b = pool.allocate(2, now=0)
    pool.cache(a, "ka", 0)
    pool.cache(b, "kb", 0)
    pool.free([b, a], now=10)
    pool.touch([a], now=100)  # reuse gap 100 -> bin 7
    pool.free([a], now=200)
    pool.allocate(2, now=1000)  # evicts b then a
    h = pool.histograms(ticks_per_s=1)
    assert h["block_reuse_gap_s"]["counts"][(100).bit_length()] == 1
    assert h["block_lifetime_s"]["counts"][(1000).bit_length()] == 2
    idle = h["block_idle_before_evict_s"]["counts"]
    # idle: b since its allocation (1000 ticks), a since its hit (900): both in [512, 1024)
    assert idle[(1000).bit_length()] == 2 and sum(idle) == 2
    edges = h["block_lifetime_s"]["edges"]
    assert edges[10] <= 1000 < edges[11]


def test_random_ops_keep_duplicate_count_and_hits_exact() -> None:
    """Random allocate/cache/hit/free: ``num_multi`` counts list entries, and
    ``longest_hit`` equals a one-key-at-a-time scan (long runs cross its chunks)."""
    import random

    rng = random.Random(7)
    pool = BlockPool(60)
    held: list[list[int]] = []
    for _ in range(3000):
        op = rng.random()
        if op < 0.4 and pool.num_free >= 4:
            blocks = pool.allocate(rng.randint(1, 4), now=rng.randint(0, 9))
            held.append(blocks)
            for b in blocks:
                if rng.random() < 0.8:
                    pool.cache(b, rng.randint(0, 40), now=1)
        elif op < 0.6:
            keys = [rng.randint(0, 40) for _ in range(rng.randint(0, 40))]
            want: list[int] = []
            for k in keys:
                b = pool.get(k)
                if b is None:
                    break
                want.append(b)
            hit = pool.longest_hit(keys, len(keys))
            assert hit == want
            if len(set(hit)) == len(hit):
                pool.touch(hit, now=5)
                held.append(list(hit))
        elif held:
            blocks = held.pop(rng.randrange(len(held)))
            pool.free(blocks[::-1], now=3)
        lists = sum(isinstance(e, list) for e in pool.cached.values())
        assert pool.num_multi == lists
        assert pool.num_free == sum(1 for b in range(1, 60) if pool.ref[b] == 0)


@given(
    st.integers(1, 5000),  # num_tokens
    st.integers(1, 64),  # block size
    st.integers(1, 8000),  # max_model_len
    st.integers(0, 400),  # free blocks
    st.integers(0, 10),  # watermark blocks
    st.booleans(),  # reserve_full_prompt
    st.booleans(),  # has_running
    st.data(),
)
def test_surely_fits_implies_fits_whatever_the_hit(
    num_tokens: int,
    bs: int,
    mml: int,
    free: int,
    watermark: int,
    reserve: bool,
    has_running: bool,
    data: st.DataObject,
) -> None:
    """The admission probe's shortcut: when the free blocks cover the whole request,
    every hit (its free blocks counted as evictable) and chunk size fits too."""
    num_tokens = min(num_tokens, mml)  # longer prompts are rejected before admission
    pool = SimpleNamespace(num_free=free)
    kv = AdmissionRules(pool, bs, mml, reserve_full_prompt=reserve, watermark_blocks=watermark)
    if not kv.surely_fits(num_tokens, has_running):
        return
    n_hit = data.draw(st.integers(0, (num_tokens - 1) // bs))
    evictable = data.draw(st.integers(0, n_hit))
    new_tokens = data.draw(st.integers(1, num_tokens - n_hit * bs))
    assert kv.fits_counts(num_tokens, new_tokens, n_hit, evictable, 0, has_running)
