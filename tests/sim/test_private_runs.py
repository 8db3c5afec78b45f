"""Private runs (blocks without identity) change no result: differential tests
against the per-block reference path (``SimConfig(fast_runs=False)``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sim_helpers import Gpu, llama8b, random_workload, req

from kvlab.results import RunResult
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import Engine, simulate
from kvlab.sim.private import NO_PRIVATE, first_private_blocks
from kvlab.workload.records import Request, Segment, Workload


def cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(model=llama8b(), gpu=Gpu(), block_size=4, num_blocks=64)
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


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
    ref = saved(simulate(wl, c.replace(fast_runs=False)), tmp / "ref")
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


def test_first_private_blocks_follow_sharing() -> None:
    a = req("a", [("sys", 8), ("x", 9)], 5)  # blocks 0,1 shared with b; block 2 ends in x
    b = req("b", [("sys", 8), ("y", 4)], 5)
    c = req("c", [("sys", 8)], 5)  # a prefix of a and b: only fresh output is private
    d = req("d", [("sys", 8), ("y", 4)], 5)  # the same prompt as b
    o = Request("o", (Segment("user", 6, "p"),), 8, arrival_s=0.0, output_content_id="out")
    later = req("l", [("p", 6), ("out", 8), ("q", 3)], 2)
    got = first_private_blocks([a, b, c, d, o, later], 4, 1000)
    assert got == [2, 3, 2, 3, NO_PRIVATE, 3]


def test_runs_are_used_and_evicted(tmp_path: Path) -> None:
    wl = Workload(tuple(req(f"r{i}", [(f"u{i}", 30)], 10, t=0.01 * i) for i in range(40)))
    eng = Engine(wl, cfg(num_blocks=40))
    assert eng.kv.runs and eng.first_private == [0] * 40
    res = eng.run()
    assert res.summary["num_evicted_blocks"] > 0
    fast, ref = both(wl, cfg(num_blocks=40), tmp_path)
    assert fast == ref


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
    )
    fast, ref = both(wl, c, tmp_path)
    assert fast == ref
    s = fast["summary"]
    assert isinstance(s, dict)
    if seed < 4:
        assert s["num_evicted_blocks"] > 0


@pytest.mark.parametrize("seed", range(3))
def test_sessions_workload_matches_reference(seed: int, tmp_path: Path) -> None:
    wl = random_workload(seed, 80, rate=40.0)
    fast, ref = both(wl, cfg(block_size=16, num_blocks=90, max_num_seqs=8), tmp_path)
    assert fast == ref


def test_preemptions_happen_in_the_random_workloads() -> None:
    wl = mixed_workload(0, 120)
    res = simulate(wl, cfg(num_blocks=70, max_num_seqs=10))
    assert sum(r.num_preemptions for r in res.records) > 0


@pytest.mark.slow
@pytest.mark.parametrize("trace", ["azure-conv", "mooncake-conversation"])
def test_real_traces_match_reference(trace: str, tmp_path: Path) -> None:
    from kvlab.cli.simulate import build_config
    from kvlab.workload.detect import load_workload

    c = build_config(
        model="llama-3.1-8b",
        gpu="h100",
        mode="prefix",
        policy="lru",
        block_size=16,
        num_blocks=None,
        kv_dtype=None,
        offload_gb=None,
        no_prefix_caching=False,
        exact_steps=False,
        seed=0,
        sets=[],
    )
    wl = load_workload(trace, None, seed=0)
    wl = Workload(wl.requests[:3000])
    fast, ref = both(wl, c, tmp_path)
    assert fast == ref


def test_pool_run_queue_order_and_eviction() -> None:
    from kvlab.sim.block_pool import BlockPool

    pool = BlockPool(10)
    blocks = pool.allocate(5, now=0)
    assert blocks == [1, 2, 3, 4, 5]
    pool.cache_run(blocks[:2], ["a", "b"], 0)
    pool.free_private(blocks, priv=2, num_cached=4, owner=7)  # 3, 4 private; 5 unkeyed
    assert pool.free_order() == [5, 6, 7, 8, 9, 4, 3, 2, 1]
    assert pool.num_free == 9 and pool.num_cached_free() == 4
    assert pool.allocate(6, now=8) == [5, 6, 7, 8, 9, 4]  # the run's tail block is evicted
    assert pool.num_evicted == 1 and pool.lifetime[(8).bit_length()] == 1
    assert pool.run_of(7) == [3] and pool.free_order() == [3, 2, 1]
    pool.touch_run(7, now=9)  # the owner hits the rest of its run
    assert pool.free_order() == [2, 1] and pool.ref[3] == 1 and pool.num_free == 2
    assert pool.run_of(7) is None and pool.reuse_gap[(9).bit_length()] == 1
