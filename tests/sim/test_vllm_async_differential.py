"""kvlab's async scheduling mode against vLLM's own ``AsyncScheduler``, batch for batch.

The same random workloads as the synchronous differential
(test_vllm_scheduler_differential.py: shared system prompts, chunked prefill, more
requests than ``max_num_seqs``, a KV cache small enough to preempt, closed-loop
sessions re-sending earlier answers, FCFS and priority, prefix caching on and
off) go through vLLM's AsyncScheduler driven as ``EngineCore.step_with_batch_queue``
drives it (tests/sim/vllm_sched_replay.py with ``async``: two batches in flight,
each lasting one step) and through kvlab with ``async_scheduling=True`` and a clock
of one second per step. Every batch must agree: the step it ran, the tokens it
scheduled per request, the block ids every scheduled request's block table gained
(all of it at an admission; tables only grow, so this is every table at every
step; per-block pool),
the requests its scheduling preempted and the requests it finished; and so must
every request's record (first scheduled, first token, last token, preemptions,
hit tokens, computed tokens) and the prefix-cache counters. kvlab runs each case
on the per-block pool and on the extent pool (no block ids there), each twice:
batch by batch with a batch observer, and with its decode windows (batches taken
at once; records and counters must still agree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sim_helpers import Gpu, llama8b
from test_vllm_scheduler_differential import CASES, StepClock, case_inputs, vllm_trace

from kvlab.sim.async_loop import Batch
from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.engine import Engine
from kvlab.workload.records import Workload


def run_kvlab_async(
    wl: Workload, limits: dict[str, Any], *, extents: bool, windows: bool = False
) -> dict[str, Any]:
    """kvlab's async mode on ``wl``: per-request records and per-batch facts as the
    replay driver prints them; with ``windows``, the run takes its decode windows
    (no batch observer, so no per-batch facts) and says how many batches they held."""
    cfg = SimConfig(
        model=llama8b(),
        gpu=Gpu(),
        block_size=limits["block_size"],
        num_blocks=limits["num_blocks"],
        max_model_len=limits["max_model_len"],
        max_num_seqs=limits["max_num_seqs"],
        max_num_batched_tokens=limits["max_num_batched_tokens"],
        enable_prefix_caching=limits["prefix_caching"],
        scheduling=limits["policy"],
        reserve_full_prompt=limits["reserve_full_prompt"],
        watermark=limits["watermark"],
        cost_model=StepClock(),
        extents=extents,
        async_scheduling=True,
    )
    engine = Engine(wl, cfg)
    batches: list[Batch] = []
    if not windows:
        engine.loop.batch_observer = batches.append  # type: ignore[attr-defined]
    try:
        res = engine.run()
    finally:
        engine.close()
    assert res.provenance["sim_loop"] in ("async", "async-cohort")
    assert res.provenance["scheduler"].startswith("AsyncScheduler")
    rid = {i: f"r{i}" for i in range(len(wl.requests))}
    out_batches = []
    held: dict[int, int] = {}  # request -> blocks of its table already listed
    for b in batches:
        if not b.scheduled and not b.preempted:
            continue
        for s in b.preempted:
            held[s.idx] = 0
        gained = {}
        for (s, _), table in zip(b.scheduled, b.block_ids or [], strict=False):
            if len(table) > held.get(s.idx, 0):
                gained[rid[s.idx]] = table[held.get(s.idx, 0) :]
                held[s.idx] = len(table)
        out_batches.append(
            [
                b.start // TICKS_PER_S,
                {rid[s.idx]: n for s, n in b.scheduled},
                gained if not extents else None,
                sorted(rid[s.idx] for s in b.preempted),
                [rid[s.idx] for s in b.finished],
            ]
        )
    recs = []
    for r in res.records:
        assert r.status == "ok", r
        recs.append(
            {
                "admitted": round(r.admitted_s),
                "first_token": round(r.first_token_s) - 1,  # the step it ran in
                "finish": round(r.finish_s) - 1,
                "cached": r.cached_tokens,
                "computed": r.computed_tokens,
                "preemptions": r.num_preemptions,
            }
        )
    s = res.summary
    return {
        "requests": recs,
        "batches": out_batches,
        "queries": s["prefix_cache_queries"],
        "hits": s["prefix_cache_hits"],
        "window_batches": engine.loop.window_batches,  # type: ignore[attr-defined]
    }


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, vllm_python: str
) -> tuple[dict[str, Any], dict[tuple[str, bool, bool], dict[str, Any]]]:
    """vLLM's results per case and kvlab's per (case, extents, decode windows);
    kvlab's runs are made while vLLM's replay runs in its subprocess."""
    traces = {
        case: {**vllm_trace(*case_inputs(case)), "async": True, "record_steps": True}
        for case in CASES
    }
    path = tmp_path_factory.mktemp("a") / "payload.json"
    path.write_text(json.dumps(traces))
    env = dict(os.environ, VLLM_LOGGING_LEVEL="ERROR", VLLM_TARGET_DEVICE="cpu")
    script = str(Path(__file__).parent / "vllm_sched_replay.py")
    proc = subprocess.Popen(
        [vllm_python, script, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ours = {
            (case, extents, windows): run_kvlab_async(
                *case_inputs(case), extents=extents, windows=windows
            )
            for case in CASES
            for extents in (False, True)
            for windows in (False, True)
        }
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), ours


def _first_batch_mismatch(ours: list, theirs: list, blocks: bool) -> tuple[int, int]:
    """(number of batches that differ, index of the first one or -1)."""
    what = ("step", "scheduled tokens", "block ids", "preempted", "finished")
    bad, first = 0, -1
    for k, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        diff = [w for j, w in enumerate(what) if (j != 2 or blocks) and a[j] != b[j]]
        if diff:
            bad += 1
            first = k if first < 0 else first
    bad += abs(len(ours) - len(theirs))
    if first < 0 and len(ours) != len(theirs):
        first = min(len(ours), len(theirs))
    return bad, first


@pytest.mark.vllm
@pytest.mark.parametrize("case", sorted(CASES))
def test_async_mode_matches_vllm_async_scheduler(
    case: str, results: tuple[dict[str, Any], dict[tuple[str, bool, bool], dict[str, Any]]]
) -> None:
    wl, limits = case_inputs(case)
    theirs = results[0][case]
    their_batches = [b for b in theirs["batches"] if b[1] or b[3]]
    windowed = 0
    for extents, windows in ((False, False), (True, False), (False, True), (True, True)):
        ours = results[1][(case, extents, windows)]
        how = f"extents={extents}, windows={windows}"
        if windows:  # records and counters only (no batch observer)
            windowed += ours["window_batches"]
        bad, first = (
            _first_batch_mismatch(ours["batches"], their_batches, blocks=not extents)
            if not windows
            else (0, -1)
        )
        assert bad == 0, (
            f"{case} ({how}): {bad} of {len(their_batches)} batches differ; first, batch "
            f"{first}: kvlab {ours['batches'][first : first + 1]} vs vLLM "
            f"{their_batches[first : first + 1]}"
        )
        diff = [
            i
            for i, (a, b) in enumerate(zip(ours["requests"], theirs["requests"], strict=True))
            if a != b
        ]
        assert not diff, (
            f"{case} ({how}): {len(diff)} of {len(wl.requests)} requests differ; first "
            f"{wl.requests[diff[0]].request_id}: kvlab {ours['requests'][diff[0]]} vs vLLM "
            f"{theirs['requests'][diff[0]]}"
        )
        assert (ours["queries"], ours["hits"]) == (theirs["queries"], theirs["hits"])
    # the case exercises what it is named for (decode windows included)
    assert windowed > 0
    preempted = sum(r["preemptions"] for r in theirs["requests"])
    assert any(q.prompt_tokens > limits["max_num_batched_tokens"] for q in wl.requests)
    assert (theirs["hits"] > 0) == limits["prefix_caching"]
    if "pressure" in case or case in ("no-caching", "priority", "first-chunk", "small-blocks"):
        assert preempted > 0
    print(
        f"{case}: {len(wl.requests)} requests, {len(their_batches)} batches over "
        f"{theirs['steps']} steps, {preempted} preemptions, {theirs['hits']} hit tokens: "
        f"0 mismatches ({windowed // 2} batches in decode windows)",
        file=sys.stderr,
    )
