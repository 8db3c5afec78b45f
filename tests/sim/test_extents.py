"""The extent pool (blocks without identity) changes no result: differential tests
against the per-block reference pool (``SimConfig(extents=False)``), and narrative
tests of the pool itself."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sim_helpers import ExtentSeq, Gpu, admit, bins, chain, llama8b, random_workload, req

from kvlab.results import RunResult
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import Engine, simulate
from kvlab.sim.extents import ExtentPool, _add_ages
from kvlab.sim.hashing import ChainInterner
from kvlab.sim.policies import POLICIES
from kvlab.sim.policies.base import PolicyBase
from kvlab.workload.records import Request, Segment, Workload


def cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(model=llama8b(), gpu=Gpu(), block_size=4, num_blocks=64)
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


PARAMS: dict[str, dict[str, float]] = {"ttl": {"ttl_s": 1.0}}


def saved(result: RunResult, d: Path) -> dict[str, object]:
    result.save(d)
    summary = json.loads((d / "summary.json").read_text())
    summary.pop("wall_s", None)
    return {
        "summary": summary,
        "requests": (d / "requests.jsonl").read_text(),
        "timeseries": (d / "timeseries.csv").read_text(),
        "histograms": (d / "histograms.json").read_text(),
    }


def both(wl: Workload, c: SimConfig, tmp: Path) -> tuple[dict[str, object], dict[str, object]]:
    fast = saved(simulate(wl, c), tmp / "fast")
    ref = saved(simulate(wl, c.replace(extents=False)), tmp / "ref")
    return fast, ref


def mixed_workload(seed: int, n: int) -> Workload:
    """Shared and private prefixes, identical prompts, sessions re-sending outputs,
    block-aligned lengths (the last-block lookup cap) and long outputs."""
    rng = np.random.default_rng(seed)
    reqs: list[Request] = []
    t = 0.0
    for i in range(n):
        t += float(rng.exponential(0.05))
        segs = []
        if rng.random() < 0.5:
            segs.append(Segment("system", 4 * int(rng.integers(1, 12)), f"sys{rng.integers(3)}"))
        kind = rng.random()
        if kind < 0.15:
            segs.append(Segment("user", 4 * int(rng.integers(1, 10)), f"dup{rng.integers(2)}"))
        else:
            n_user = int(rng.integers(1, 60))
            segs.append(
                Segment("user", 4 * (n_user // 4 + 1) if rng.random() < 0.3 else n_user, f"u{i}")
            )
        out = int(rng.integers(1, 90))
        prio = int(rng.integers(0, 4))
        if rng.random() < 0.3:
            sid = f"s{i}"
            reqs.append(
                Request(
                    f"r{i}",
                    tuple(segs),
                    out,
                    arrival_s=t,
                    session_id=sid,
                    output_content_id=f"o{i}",
                    priority=prio,
                )
            )
            hist = (*segs, Segment("assistant", out, f"o{i}"))
            reqs.append(
                Request(
                    f"r{i}b",
                    (*hist, Segment("user", int(rng.integers(1, 30)), f"v{i}")),
                    int(rng.integers(1, 60)),
                    arrival_s=None,
                    think_time_s=float(rng.exponential(0.2)),
                    session_id=sid,
                    turn=1,
                    priority=prio,
                )
            )
        else:
            reqs.append(Request(f"r{i}", tuple(segs), out, arrival_s=t, priority=prio))
    return Workload(tuple(reqs))


def test_extents_are_used_and_evicted(tmp_path: Path) -> None:
    wl = Workload(tuple(req(f"r{i}", [(f"u{i}", 30)], 10, t=0.01 * i) for i in range(40)))
    eng = Engine(wl, cfg(num_blocks=40))
    assert isinstance(eng.pool, ExtentPool)
    res = eng.run()
    assert res.summary["num_evicted_blocks"] > 0
    fast, ref = both(wl, cfg(num_blocks=40), tmp_path)
    assert fast == ref


def test_every_policy_runs_on_extents_and_offload_uses_the_block_pool() -> None:
    wl = Workload((req("a", [("u", 30)], 10),))
    for name in POLICIES:
        pool = Engine(wl, cfg(policy=name, policy_params=PARAMS.get(name, {}))).pool
        assert isinstance(pool, ExtentPool), name
    assert not isinstance(Engine(wl, cfg(offload_blocks=100)).pool, ExtentPool)
    assert not isinstance(Engine(wl, cfg(extents=False)).pool, ExtentPool)

    class BlocksOnly(PolicyBase):
        no_extents_reason = "it needs block ids"

    with pytest.raises(ValueError, match="cannot run on extents: it needs block ids"):
        ExtentPool(10, 4, policy=BlocksOnly())  # type: ignore[arg-type]


# odd seeds schedule by priority; seeds 11, 15 and 37 preempt the request that needed the
# block and leave a step with nothing scheduled, which must not stop the engine
@pytest.mark.parametrize("seed", range(40))
def test_random_mixed_workloads_match_reference(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(1000 + seed)
    wl = mixed_workload(seed, 120)
    c = cfg(
        num_blocks=int(rng.integers(70, 160)),
        max_num_seqs=int(rng.integers(2, 12)),
        max_num_batched_tokens=int(rng.choice([64, 128, 512])),
        scheduling="priority" if seed % 2 else "fcfs",
        exact_steps=seed % 3 == 2,
        enable_prefix_caching=seed % 7 != 3,
        max_model_len=96 if seed % 4 == 1 else None,  # rejections and clamped outputs
        reserve_full_prompt=seed % 5 != 4,
        watermark=0.02 if seed % 6 == 5 else 0.0,
    )
    fast, ref = both(wl, c, tmp_path)
    assert fast == ref
    s = fast["summary"]
    assert isinstance(s, dict)
    if seed < 4 and c.enable_prefix_caching:
        assert s["num_evicted_blocks"] > 0


@pytest.mark.parametrize("seed", range(3))
def test_sessions_workload_matches_reference(seed: int, tmp_path: Path) -> None:
    wl = random_workload(seed, 80, rate=40.0)
    fast, ref = both(wl, cfg(block_size=16, num_blocks=90, max_num_seqs=8), tmp_path)
    assert fast == ref


#: the policies besides LRU (all run on extents), with parameters drawn per seed
EXTENT_POLICIES = ["fifo", "lfu", "retention", "s3fifo", "ttl"]


def policy_params(name: str, rng: np.random.Generator) -> dict[str, float]:
    if name == "ttl":  # pins that expire within a window, or never; system or more pinned
        return {"ttl_s": float(rng.choice([0.0, 0.02, 0.3, 1e6])), "pin_rank": int(rng.integers(3))}
    if name == "s3fifo":  # the small queue's share, at its edges too; ghost lists that overflow
        return {
            "small_fraction": float(rng.choice([0.1, 0.3, 0.0, 1.0, 0.55])),
            "ghost_size": int(rng.choice([0, 3, 40, 4096])),
        }
    if name == "retention":
        return {"num_ranks": int(rng.choice([5, 2]))}
    return {}


# every policy with an extent queue, against its own per-block reference; odd seeds run
# the sessions workload (retention classes, 16-token blocks), seeds 2 mod 3 by priority
@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("policy", EXTENT_POLICIES)
def test_policies_on_extents_match_reference(policy: str, seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(3000 + seed)
    if seed % 2:
        wl = random_workload(seed, 80, rate=40.0)
        size = dict(block_size=16, num_blocks=int(rng.integers(90, 200)))
    else:
        wl = mixed_workload(seed, 120)
        size = dict(num_blocks=int(rng.integers(70, 160)))
    c = cfg(
        **size,
        max_num_seqs=int(rng.integers(2, 12)),
        max_num_batched_tokens=int(rng.choice([64, 128, 512])),
        scheduling="priority" if seed % 3 == 2 else "fcfs",
        exact_steps=seed % 4 == 3,
        policy=policy,
        policy_params=policy_params(policy, rng),
    )
    fast, ref = both(wl, c, tmp_path)
    assert fast == ref
    s = fast["summary"]
    assert isinstance(s, dict) and s["num_evicted_blocks"] > 0


def test_preemptions_happen_in_the_random_workloads() -> None:
    wl = mixed_workload(0, 120)
    res = simulate(wl, cfg(num_blocks=70, max_num_seqs=10))
    assert sum(r.num_preemptions for r in res.records) > 0


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["lru", *EXTENT_POLICIES])
@pytest.mark.parametrize("trace", ["azure-conv", "mooncake-conversation"])
def test_real_traces_match_reference(trace: str, policy: str, tmp_path: Path) -> None:
    from kvlab.cli.simulate import build_config
    from kvlab.workload.detect import load_workload

    c = build_config(
        model="llama-3.1-8b",
        gpu="h100",
        mode="prefix",
        policy=policy,
        block_size=16,
        num_blocks=None,
        kv_dtype=None,
        offload_gb=None,
        no_prefix_caching=False,
        exact_steps=False,
        seed=0,
        sets=["policy.ttl_s=5", "policy.pin_rank=1"] if policy == "ttl" else [],  # (context)
    )
    wl = load_workload(trace, None, seed=0)
    wl = Workload(wl.requests[:3000])
    fast, ref = both(wl, c, tmp_path)
    assert fast == ref


def test_extent_pool_queue_order_eviction_and_histograms() -> None:
    from kvlab.sim.extents import ExtentKV

    pool = ExtentPool(21, 4)  # 20 usable blocks
    kv = ExtentKV(pool, 4, 1000)
    a = ExtentSeq(chain(1, 3) + chain(2, 2), [3, 5, 1 << 62])  # two runs: 3 + 2 blocks
    assert admit(kv, a, now=0) == 0
    assert pool.clean == 14 and a.nblocks == 6 and a.num_cached_blocks == 5
    assert [(e.key, e.n) for e, _ in a.table] == [(chain(1, 1)[0], 3), (chain(2, 1)[0], 2)]
    kv.free(a, 5)
    assert pool.clean == 15 and pool.queued == 5  # the partial block is clean again
    # the queue holds run 2 (freed first) then run 1; each is evicted from its end
    x = ExtentSeq(chain(9, 16), [16, 1 << 62])  # 17 blocks: 15 clean, then all of run 2
    assert admit(kv, x, now=16) == 0
    assert pool.num_evicted == 2 and bins(pool.lifetime) == {(16).bit_length(): 2}
    assert bins(pool.idle) == {(16).bit_length(): 2}
    assert list(pool.by_run) == [1, 9] and pool.clean == 0 and pool.queued == 3
    kv.free(x, 18)
    b = ExtentSeq(chain(1, 3) + chain(3, 1), [3, 4, 1 << 62])
    assert admit(kv, b, now=20) == 3  # all of run 1 hits: a's blocks are still cached
    assert bins(pool.reuse_gap) == {(20).bit_length(): 3}
    assert b.nblocks == 5 and pool.clean == 0 and pool.num_evicted == 3  # one of x's
    assert pool.queued == 15 and pool.by_run[9][0].n == 15


def test_a_partial_hit_splits_an_extent_and_keeps_its_queue_place() -> None:
    from kvlab.sim.extents import ExtentKV

    pool = ExtentPool(40, 4)
    kv = ExtentKV(pool, 4, 1000)
    a = ExtentSeq(chain(1, 6), [6, 1 << 62])
    admit(kv, a, 0)
    kv.free(a, 1)
    c = ExtentSeq(chain(7, 2), [2, 1 << 62])
    admit(kv, c, 2)
    kv.free(c, 3)  # queue: a's 6 blocks, then c's 2
    b = ExtentSeq(chain(1, 2) + chain(5, 1), [2, 3, 1 << 62])
    assert admit(kv, b, 4) == 2  # the first two blocks of a's extent
    exts = pool.by_run[1]
    assert [(e.n, e.ref) for e in exts] == [(2, 1), (4, 0)]
    assert pool.queued == 6
    pool.take(pool.clean + 3, now=9)  # evicts a's last three blocks, c's stay
    assert [(e.n, e.ref) for e in pool.by_run[1]] == [(2, 1), (1, 0)]
    assert pool.by_run[7][0].n == 2
    kv.free(b, 10)  # b's hit extent joins the queue tail again, after c's
    order = [(e.key >> 24, e.n) for e in pool.queue.items()]  # type: ignore[attr-defined]
    assert order == [(1, 1), (7, 2), (5, 1), (1, 2)]


def test_duplicates_hit_the_block_cached_first() -> None:
    from kvlab.sim.extents import ExtentKV

    pool = ExtentPool(40, 4)
    kv = ExtentKV(pool, 4, 1000)
    a = ExtentSeq(chain(1, 4), [4, 1 << 62])
    b = ExtentSeq(chain(1, 4), [4, 1 << 62])
    assert kv.admit(a, 8, kv.lookup_seq(a), 0) == []  # a chunk: blocks 0, 1 cached
    a.num_computed = 8
    assert admit(kv, b, 1) == 2  # b hits them and computes blocks 2, 3 itself
    assert kv.extend(a, 9, 2)  # a fills its blocks 2, 3 too: duplicates (vLLM keeps both)
    assert [(e.key & 0xFFFFFF, e.n, e.ref) for e in pool.by_run[1]] == [
        (4, 2, 2),
        (12, 2, 1),  # b's, cached first
        (12, 2, 1),  # a's
    ]
    bs_blocks, a_blocks = pool.by_run[1][1], pool.by_run[1][2]
    c = ExtentSeq(chain(1, 4), [4, 1 << 62])
    assert admit(kv, c, 3) == 4
    assert bs_blocks.ref == 2 and a_blocks.ref == 1
    kv.free(b, 4)
    kv.free(c, 5)
    assert bs_blocks.ref == 0 and pool.queued == 2
    pool.take(pool.clean + 1, now=6)  # evicts the last block of b's copy
    d = ExtentSeq(chain(1, 4), [4, 1 << 62])
    hit = kv.lookup_seq(d)
    # block 2 from b's copy (still first), block 3 from a's (the only one left)
    assert [(e is bs_blocks, j, t) for e, j, t in hit.pieces] == [
        (False, 0, 2),
        (True, 0, 1),
        (False, 1, 1),
    ]
    assert hit.pieces[2][0] is a_blocks


def test_the_cohort_drops_old_step_ticks_without_changing_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import kvlab.sim.cohort

    monkeypatch.setattr(kvlab.sim.cohort, "TRIM_STEPS", 64)
    wl = mixed_workload(5, 200)
    c = cfg(num_blocks=150, max_num_seqs=8, max_num_batched_tokens=128)
    fast, ref = both(wl, c, tmp_path)
    assert fast == ref


def test_a_clock_without_step_ends_gives_the_same_results(tmp_path: Path) -> None:
    from kvlab.sim.resolve import resolve

    base = cfg(num_blocks=120, max_num_seqs=6)
    roofline = resolve(base).cost

    class Table:  # only the StepCost protocol: windows fall back to window_ticks
        label = "table"

        def step_ticks(
            self, num_tokens: int, attn_pairs: int, kv_tokens: int, num_seqs: int = 1
        ) -> int:
            return roofline.step_ticks(num_tokens, attn_pairs, kv_tokens, num_seqs)

        def window_ticks(self, num_seqs: int, context_sum: int, num_steps: int) -> int:
            return roofline.window_ticks(num_seqs, context_sum, num_steps)

    fast, ref = both(mixed_workload(3, 120), base.replace(cost_model=Table()), tmp_path)
    assert fast == ref


@pytest.mark.parametrize("seed", range(12))
def test_merged_key_runs_change_no_result(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts continuing each other's runs (ChainInterner.reserve) rename keys but keep
    which blocks are equal: every output, miss causes included, is the same as with a
    run per (prefix, content) part."""
    rng = np.random.default_rng(2000 + seed)
    wl = mixed_workload(seed, 120) if seed % 2 else random_workload(seed, 80, rate=40.0)
    bs = int(rng.choice([4, 16]))
    c = cfg(
        block_size=bs,
        num_blocks=int(rng.integers(90, 200)) * (16 // bs),
        max_num_seqs=int(rng.integers(2, 12)),
        max_num_batched_tokens=int(rng.choice([64, 128, 512])),
        extents=seed % 3 != 2,
    )
    merged = saved(simulate(wl, c), tmp_path / "merged")
    monkeypatch.setattr(ChainInterner, "reserve", lambda self, lengths: None)
    assert saved(simulate(wl, c), tmp_path / "apart") == merged


@given(
    st.lists(st.integers(0, 10**6), max_size=40),
    st.integers(0, 10**6),
    st.integers(0, 40),
    st.integers(0, 40),
)
def test_ages_by_bisection_equal_block_by_block(stamps: list, extra: int, a: int, b: int) -> None:
    stamps.sort()
    t = (stamps[-1] if stamps else 0) + extra
    lo, hi = min(a, b, len(stamps)), min(max(a, b), len(stamps))
    got = [0] * 64
    _add_ages(got, stamps, lo, hi, t)
    assert bins(got) == Counter((t - x).bit_length() for x in stamps[lo:hi])


def _window_world(
    olds: list[int], runs: list[tuple[int, int]], spare: int, k: int
) -> tuple[ExtentPool, Any, list[ExtentSeq], int]:
    """A pool whose queue holds the freed blocks of requests of ``olds`` blocks each,
    then ``runs`` (prompt blocks, tokens past the prompt) decoding, and room for a
    ``k``-batch window plus ``spare`` blocks: the window takes clean blocks first, then
    evicts old ones."""
    from kvlab.sim.extents import ExtentKV

    bs = 4
    held = sum(p + 1 for p, _ in runs)
    window = sum((extra + 1 + k) // bs + 1 for _, extra in runs)
    pool = ExtentPool(1 + held + window + spare, bs)
    kv = ExtentKV(pool, bs, 1000)
    t = 0
    for j, n in enumerate(olds):
        if n + 1 > pool.clean + pool.queued:
            break
        old = ExtentSeq(chain(100 + j, n), [n, 1 << 62])
        admit(kv, old, t + 1)
        kv.free(old, t + 2)
        t += 3
    running = []
    for j, (p, extra) in enumerate(runs):
        nkeys = p + k // bs + 4
        s = ExtentSeq(chain(j + 1, nkeys), [nkeys, 1 << 62])
        s.num_tokens = s.prompt_len = bs * p + 1  # the rest of the keys: its output blocks
        admit(kv, s, t + 1)
        s.num_computed = s.num_tokens = bs * p + 1 + extra  # (extra < 3: the same blocks)
        running.append(s)
        t += 1
    return pool, kv, running, t


@given(
    st.lists(st.integers(1, 5), max_size=4),
    st.lists(st.tuples(st.integers(1, 4), st.integers(0, 2)), min_size=1, max_size=5),
    st.integers(0, 3),
    st.integers(1, 14),
)
def test_a_windows_blocks_in_one_take_equal_one_take_per_event(
    olds: list[int], runs: list[tuple[int, int]], spare: int, k: int
) -> None:
    """ExtentKV.extend_window (the async loop's decode window: every batch's blocks in
    one take_steps, then the cachings) leaves the pool and every request exactly as
    one extend per event does: evictions, their histograms, block stamps, keyed runs."""
    from kvlab.sim.kv_manager import extend_events

    results = []
    for bulk in (False, True):
        pool, kv, running, t = _window_world(olds, runs, spare, k)
        n, bs = len(running), 4
        events = sorted(
            e
            for pos, s in enumerate(running)
            for e in range((-s.num_computed % bs) * n + pos, k * n, bs * n)
        )
        starts = [t + 10 + 7 * i for i in range(k)]
        ok = kv.extend_window(running, events, starts) if bulk else None
        if not bulk:
            ok = extend_events(kv, running, events, starts)
        results.append(
            (
                ok,
                pool.clean,
                pool.queued,
                pool.num_evicted,
                bins(pool.lifetime),
                bins(pool.idle),
                {r: [(e.key, e.n, e.ref, e.cached) for e in x] for r, x in pool.by_run.items()},
                [(s.nblocks, s.pending, s.num_cached_blocks, s.nkeyed) for s in running],
                [[(e.key, e.n) for e, _ in s.table] for s in running],
            )
        )
    assert results[0][0] is True
    assert results[0] == results[1]
