"""Compression and swapping on the stepped engine (kvlab.rl.engine_steps, kvlab.rl.kv_tiers):
narratives on tiny configurations with exact block ids and clock ticks, and runs with
random actions that must finish every request and leak no block."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_helpers import Gpu, llama8b, random_workload, req

from kvlab.errors import ConfigError
from kvlab.rl.engine_steps import SWAPPED, SteppedLoop, stepped_engine
from kvlab.rl.kv_tiers import max_tier
from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.sequence import RUNNING
from kvlab.workload.records import Workload

#: llama-3.1-8b's KV per token in bf16: 32 layers x 8 KV heads x 128 x (K, V) x 2 bytes
BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2
#: a block of 4 tokens: 512 KiB; over the test GPU's 64 GB/s host link 8.192 us
BLOCK_TICKS = 8_192_000_000
#: the test GPU's host link latency, 10 us
LATENCY_TICKS = 10_000_000_000


def cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(
        model=llama8b(),
        gpu=Gpu(),
        block_size=4,
        num_blocks=16,
        extents=False,
        enable_prefix_caching=False,
    )
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def one_request(out: int = 30) -> Workload:
    return Workload(name="one", requests=(req("a", [("p", 10)], out),))


def first_running(loop: SteppedLoop, n: int = 1) -> list:  # type: ignore[type-arg]
    assert loop.advance_until(lambda s: len(s.sched.running) >= n)
    return list(loop.sched.running)


def test_tiers_of_a_dtype_go_down_to_four_bits() -> None:
    assert (max_tier("bfloat16"), max_tier("fp8"), max_tier("float32")) == (2, 1, 3)


def test_compressing_frees_exact_blocks_and_later_growth_follows_the_tier() -> None:
    engine, loop = stepped_engine(one_request(), cfg())
    (a,) = first_running(loop)
    # after its prefill step: 10 tokens of KV in blocks 1, 2, 3 (the pool hands out
    # blocks in id order), 12 of the 15 usable blocks free
    assert (a.blocks, a.num_computed, loop.kv.num_free) == ([1, 2, 3], 10, 12)
    assert loop.tier(a) == 0 and loop.can_compress(a) and loop.compress_gain(a) == 1
    t0 = loop.now
    # tier 1: 8 tokens a block -> ceil(10 / 8) = 2 blocks; the 3 released go to the head
    # of the free queue tail first, so the new table takes 3 then 2
    assert loop.compress(a) == 1
    assert (a.blocks, loop.tier(a), loop.kv.num_free) == ([3, 2], 1, 13)
    # the clock: 10 tokens read at 2 bytes/elem and written at 1, at 3.35 TB/s x mbu 0.8
    ticks = round(10 * BYTES_PER_TOKEN * 1.5 / (3.35e12 * 0.8) * TICKS_PER_S)
    assert loop.now - t0 == loop.compress_ticks == ticks == 733_611_940
    seen: dict[int, list[int]] = {}
    while loop.advance_until(lambda s: True) and a.num_computed < 17:
        seen[a.num_computed] = list(a.blocks)
    # one token a step (no decode windows while a compressed request runs); a third
    # block only when the 17th token needs a slot (2 blocks hold 16 tokens at tier 1)
    assert seen[11] == seen[16] == [3, 2] and list(seen) == list(range(11, 17))
    assert a.num_computed == 17 and a.blocks == [3, 2, 1]
    # tier 2: 16 tokens a block -> ceil(17 / 16) = 2 blocks
    assert loop.compress(a) == 1
    assert (a.blocks, loop.tier(a), loop.kv.num_free) == ([1, 2], 2, 13)
    assert not loop.can_compress(a)
    with pytest.raises(ValueError, match="lowest KV tier"):
        loop.compress(a)
    while loop.advance_until(lambda s: True) and a.num_computed < 33:
        pass
    assert a.num_computed == 33 and a.blocks == [1, 2, 3]  # the 33rd token's block
    assert not loop.advance_until(lambda s: False)
    rec = loop.result().records[0]
    engine.close()
    assert rec.status == "ok" and rec.output_tokens == 30 and rec.num_preemptions == 0
    assert loop.kv.num_free == 15 and not loop.tiers.tier  # type: ignore[union-attr]
    assert loop.num_compressions == 2


def test_compressing_releases_shared_blocks_to_the_cache_not_to_the_free_count() -> None:
    # a and b share an 8-token system prompt (2 full blocks); c comes later with it
    w = Workload(
        name="shared",
        requests=(
            req("a", [("sys", 8), ("a", 2)], 30),
            req("b", [("sys", 8), ("b", 2)], 30),
            req("c", [("sys", 8), ("c", 2)], 3, t=1.0),
        ),
    )
    engine, loop = stepped_engine(w, cfg(enable_prefix_caching=True))
    a, b = first_running(loop, 2)
    assert (a.blocks, b.blocks, loop.kv.num_free) == ([1, 2, 3], [1, 2, 4], 11)
    # a releases its blocks: 1 and 2 stay held by b, only 3 comes free; it takes
    # ceil(10 / 8) = 2 private blocks: compressing it costs one block
    assert loop.compress_gain(a) == -1
    assert loop.compress(a) == -1
    assert (a.blocks, loop.kv.num_free) == ([3, 5], 10)
    # b then releases 4 (clean) and 1, 2: no longer held, cached, evictable (tail first)
    assert loop.compress(b) == 1
    assert (b.blocks, loop.kv.num_free) == ([4, 6], 11)
    assert loop.kv.pool.free_order()[-2:] == [2, 1]
    assert not loop.advance_until(lambda s: False)
    recs = {r.request_id: r for r in loop.result().records}
    engine.close()
    # the full-precision system blocks were still cached: c hits them
    assert recs["c"].cached_tokens == 8
    assert all(r.status == "ok" for r in recs.values())


def test_swapping_costs_the_exact_transfer_both_ways_and_nothing_else() -> None:
    ref_engine, ref = stepped_engine(one_request(), cfg())
    assert not ref.advance_until(lambda s: False)
    ref_rec = ref.result().records[0]
    ref_engine.close()

    engine, loop = stepped_engine(one_request(), cfg())
    (a,) = first_running(loop)
    t0 = loop.now
    # 3 blocks of 512 KiB over 64 GB/s, plus one 10 us latency: 34.576 us
    ticks = LATENCY_TICKS + 3 * BLOCK_TICKS
    assert ticks == 34_576_000_000
    assert loop.can_swap(a)
    assert loop.swap_out(a) == ticks / TICKS_PER_S
    assert loop.now - t0 == ticks
    assert a.status == SWAPPED and not loop.sched.running and a.blocks == []
    assert loop.kv.num_free == 15 and loop.swapped_blocks == 3
    with pytest.raises(ValueError, match="not running"):
        loop.swap_out(a)
    # the next step brings it back (its 3 blocks, from the head of the free queue)
    # and computes its next token; the transfer is added to that step's time
    assert loop.advance_until(lambda s: True)
    assert a.status == RUNNING and a.blocks == [3, 2, 1] and a.num_computed == 11
    assert loop.swap_ticks == 2 * ticks and loop.swap_s == 2 * ticks / TICKS_PER_S
    assert (loop.num_swaps_out, loop.num_swaps_in) == (1, 1)
    assert not loop.advance_until(lambda s: False)
    rec = loop.result().records[0]
    engine.close()
    # the same run, later by exactly the two transfers
    assert loop.now - ref.now == 2 * ticks
    assert rec.status == "ok" and rec.num_preemptions == 0
    assert rec.first_token_s == ref_rec.first_token_s


def test_a_compressed_request_swaps_its_fewer_blocks_and_keeps_its_tier() -> None:
    engine, loop = stepped_engine(one_request(), cfg())
    (a,) = first_running(loop)
    loop.compress(a)
    assert loop.swap_out(a) == (LATENCY_TICKS + 2 * BLOCK_TICKS) / TICKS_PER_S
    assert loop.advance_until(lambda s: True)
    assert loop.tier(a) == 1 and a.blocks == [2, 3]
    assert not loop.advance_until(lambda s: False)
    engine.close()
    assert loop.result().records[0].status == "ok"


def test_a_compressed_request_preempted_is_recomputed_at_tier_0() -> None:
    engine, loop = stepped_engine(one_request(), cfg(enable_prefix_caching=True))
    (a,) = first_running(loop)
    loop.compress(a)
    assert loop.preempt(a) == 2 and loop.kv.num_free == 15
    assert loop.advance_until(lambda s: True)
    # readmitted at tier 0: its 2 full prompt blocks were still cached (blocks 1, 2 at
    # the tail of the free queue), the rest recomputed into 1 new block
    assert loop.tier(a) == 0 and a.blocks[:2] == [1, 2] and len(a.blocks) == 3
    assert not loop.advance_until(lambda s: False)
    rec = loop.result().records[0]
    engine.close()
    assert rec.status == "ok" and rec.num_preemptions == 1


def test_the_swap_space_holds_whole_blocks() -> None:
    # 1 MiB of host memory: two blocks of 512 KiB
    engine, loop = stepped_engine(one_request(), cfg(), swap_space_gb=2 / 2048)
    (a,) = first_running(loop)
    assert loop.swap_capacity_blocks == 2 and not loop.can_swap(a)
    with pytest.raises(ValueError, match=r"3 blocks do not fit in the swap space \(2 blocks"):
        loop.swap_out(a)
    loop.compress(a)  # 2 blocks now
    assert loop.can_swap(a)
    loop.swap_out(a)
    assert loop.swapped_blocks == 2
    assert not loop.advance_until(lambda s: False)
    engine.close()
    with pytest.raises(ConfigError, match="swap_space_gb"):
        stepped_engine(one_request(), cfg(), swap_space_gb=-1.0)


def test_swapped_requests_come_back_before_waiting_ones() -> None:
    # two slots: a and b run, c waits for a slot
    w = Workload(
        name="three",
        requests=(req("a", [("a", 10)], 20), req("b", [("b", 10)], 20), req("c", [("c", 4)], 2)),
    )
    engine, loop = stepped_engine(w, cfg(max_num_seqs=2))
    a, b = first_running(loop, 2)
    assert loop.sched.num_waiting() == 1
    loop.swap_out(a)  # a slot and 3 blocks free: c would fit, but a comes back first
    assert loop.advance_until(lambda s: True)
    assert loop.sched.running == [b, a] and loop.sched.num_waiting() == 1
    assert not loop.advance_until(lambda s: False)
    engine.close()
    assert all(r.status == "ok" for r in loop.result().records)


def test_no_waiting_request_is_admitted_while_one_is_swapped_out() -> None:
    # watermark: 1 block. a (12 tokens: 3 blocks) and d (40 tokens: 10 blocks) run, 2
    # blocks free; c (4 tokens) waits for a slot
    w = Workload(
        name="held",
        requests=(
            req("a", [("a", 12)], 20),
            req("d", [("d", 40)], 3),
            req("c", [("c", 4)], 2),
        ),
    )
    engine, loop = stepped_engine(w, cfg(max_num_seqs=2, watermark=0.1))
    a, _ = first_running(loop, 2)
    assert loop.kv.num_free == 2 and loop.kv.watermark_blocks == 1
    loop.swap_out(a)  # 5 free
    steps: list[tuple[str, ...]] = []
    while loop.advance_until(lambda s: True):
        steps.append(tuple(s.req.request_id for s in loop.sched.running))
    engine.close()
    # step 1: d's 41st token takes a block (4 free); a needs 4 blocks for its 13 tokens
    # plus the watermark: 5 > 4, it stays out, and c (1 block + the watermark would
    # fit) is not admitted while a is out. Step 2: d finishes. Step 3: a comes back
    # (c is not admitted in a step that starts with a swapped request); step 4: c
    assert steps[:4] == [("d",), (), ("a",), ("a", "c")]
    assert all(r.status == "ok" for r in loop.result().records)


def test_compress_and_swap_need_the_per_block_pool() -> None:
    engine, loop = stepped_engine(one_request(), cfg(extents=True))
    (a,) = first_running(loop)
    for act in (loop.can_compress, loop.compress, loop.can_swap, loop.swap_out):
        with pytest.raises(ConfigError, match=r"extents=False"):
            act(a)
    engine.close()


def check_blocks(loop: SteppedLoop) -> None:
    """No block leaked: every held block's reference count is the number of running
    tables holding it, free + held = usable, a compressed table is as short as its tier
    allows, nothing swapped holds a block."""
    kv = loop.tiers
    assert kv is not None
    pool = kv.pool
    held: Counter[int] = Counter()
    for s in loop.sched.running:
        assert s.status == RUNNING and s.nblocks == len(s.blocks)
        held.update(s.blocks)
        t = kv.tier_of(s)
        assert len(s.blocks) == kv.blocks_for(s.num_computed, t)
        if t:
            assert s.num_cached_blocks == 0
    for s, _ in loop.swapped:
        assert s.status == SWAPPED and s.blocks == [] and s.nblocks == 0
    assert set(kv.tier) <= {s.idx for s in loop.sched.running}
    assert all(pool.ref[b] == n for b, n in held.items())
    assert sum(1 for r in pool.ref[1:] if r > 0) == len(held)
    assert pool.num_free + len(held) == pool.num_blocks - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"scheduling": "priority"},
        {"offload_blocks": 64},
        {"exact_steps": True, "watermark": 0.02},
    ],
    ids=["fcfs", "priority", "offload", "exact-watermark"],
)
def test_random_compress_swap_and_preempt_actions_finish_every_request(
    seed: int, extra: dict[str, object]
) -> None:
    w = random_workload(seed, 40, rate=40.0)
    c = cfg(block_size=16, num_blocks=120, enable_prefix_caching=True, **extra)
    engine, loop = stepped_engine(w, c, swap_space_gb=0.5)
    rng = random.Random(seed)
    acts: Counter[str] = Counter()
    while loop.advance_until(lambda s: s.num_events % 3 == 0):
        check_blocks(loop)
        for s in list(loop.sched.running):
            x = rng.random()
            if x < 0.15 and loop.can_compress(s):
                before = loop.kv.num_free
                gain = loop.compress_gain(s)
                assert loop.compress(s) == gain == loop.kv.num_free - before
                acts["compress"] += 1
            elif x < 0.22 and loop.can_swap(s):
                before, t0, n = loop.kv.num_free, loop.now, s.nblocks
                sec = loop.swap_out(s)
                assert loop.now - t0 == loop.swap_ticks_for(n) == round(sec * TICKS_PER_S)
                assert loop.kv.num_free >= before
                acts["swap"] += 1
            elif x < 0.25:
                loop.preempt(s)
                acts["preempt"] += 1
        check_blocks(loop)
    res = loop.result()
    engine.close()
    assert acts["compress"] > 5 and acts["swap"] > 5 and acts["preempt"] > 0
    assert loop.num_compressions == acts["compress"]
    assert loop.num_swaps_in == loop.num_swaps_out == acts["swap"]
    assert all(r.status == "ok" for r in res.records)
    assert not loop.swapped and not loop.tiers.tier  # type: ignore[union-attr]
    assert loop.kv.num_free == loop.kv.num_blocks - 1
