"""kvlab's engine against vLLM's own v1 Scheduler, step for step.

Both sides run the same workload with a clock of one step per tick-second, so a
request's times in kvlab's records are step numbers: the step it was first
scheduled in (admitted), the step whose output was its first token, the step
that finished it. The vLLM side (tests/sim/vllm_sched_replay.py, in a subprocess
of $KVLAB_VLLM_PYTHON) drives the real ``Scheduler`` with a stand-in model runner
that samples the workload's tokens. Workloads mix shared system prompts, prompts
longer than the token budget (chunked prefill), more requests than
``max_num_seqs``, a KV cache small enough to preempt, and closed-loop sessions
whose later turns re-send earlier answers, FCFS and priority scheduling, prefix
caching on and off. Every request must agree exactly: the step it was first
scheduled in, the step that produced its first token and its last, its
preemptions, its prefix-cache hit tokens and the tokens it computed over all its
admissions; so must the prefix-cache query and hit counters, and every row of
kvlab's time series (KV usage, running and waiting requests, hit tokens so far)
must equal vLLM's scheduler stats after the same step. kvlab runs each case four
ways (per-block pool and extent pool, step by step and in decode windows).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from sim_helpers import Gpu, llama8b, run_in_vllm

from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.engine import simulate
from kvlab.workload.content import output_token_ids, prompt_token_ids, token_ids
from kvlab.workload.records import Request, Segment, Workload


class StepClock:
    """Every step lasts one second: record times are step numbers."""

    label = "one second per step"

    def step_ticks(
        self, num_tokens: int, attn_pairs: int, kv_tokens: int, num_seqs: int = 1
    ) -> int:
        return TICKS_PER_S

    def window_ticks(self, num_seqs: int, context_sum: int, num_steps: int) -> int:
        return TICKS_PER_S * num_steps


def make_workload(
    seed: int, n: int, *, sessions: bool, max_prompt: int, priorities: bool = False
) -> Workload:
    """Open-loop requests at whole-step arrivals (shared system prompts, unique
    tails, some longer than the token budget) and, with ``sessions``, closed-loop
    follow-up turns that re-send the previous prompt and answer. Prompts are
    clipped to ``max_prompt`` tokens (the model length rejects longer ones)."""
    rng = np.random.default_rng(seed)
    reqs: list[Request] = []
    step = 0
    for i in range(n):
        step += int(rng.integers(0, 4))
        sys_id = int(rng.integers(0, 3))
        system = min(40 + 56 * sys_id, max_prompt - 1)
        user = min(int(rng.integers(1, 150 if rng.random() < 0.8 else 600)), max_prompt - system)
        segs = [
            Segment("system", system, f"sys{sys_id}", "system"),
            Segment("user", user, f"u{i}"),
        ]
        out = int(rng.integers(1, 60))
        prio = int(rng.integers(0, 3)) if priorities else 0
        if not sessions or rng.random() < 0.5:
            reqs.append(Request(f"r{i}", tuple(segs), out, arrival_s=float(step), priority=prio))
            continue
        sid = f"s{i}"
        turns = int(rng.integers(2, 4))
        for t in range(turns):
            answer = f"a{i}.{t}"
            reqs.append(
                Request(
                    f"r{i}.{t}",
                    tuple(segs),
                    out,
                    arrival_s=float(step) if t == 0 else None,
                    think_time_s=None if t == 0 else float(rng.integers(0, 3)),
                    session_id=sid,
                    turn=t,
                    output_content_id=answer,
                    priority=prio,
                )
            )
            segs = [
                *segs,
                Segment("assistant", out, answer, "generation"),
                Segment("user", int(rng.integers(1, 60)), f"u{i}.{t + 1}"),
            ]
            out = int(rng.integers(1, 40))
    return Workload(tuple(reqs))


def vllm_trace(wl: Workload, limits: dict[str, Any]) -> dict[str, Any]:
    """The workload as vLLM sees it: token ids, arrival steps, session links."""
    prev: dict[str, int] = {}
    reqs = []
    for i, q in enumerate(wl.requests):
        gen = output_token_ids(q) or token_ids(f"{q.request_id}/generated", q.output_tokens)
        r: dict[str, Any] = {"prompt": prompt_token_ids(q), "output": gen, "priority": q.priority}
        if q.arrival_s is not None:
            r["arrival_step"] = int(q.arrival_s)
        else:  # after the previous turn's last step and the think time
            r["after"] = prev[q.session_id or ""]
            r["think_steps"] = int(q.think_time_s or 0)
        if q.session_id is not None:
            prev[q.session_id] = i
        reqs.append(r)
    return {**limits, "requests": reqs}


def run_kvlab(
    wl: Workload, limits: dict[str, Any], *, exact_steps: bool, extents: bool
) -> dict[str, Any]:
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
        sample_interval_s=0.0,  # a time-series row at every event boundary
        exact_steps=exact_steps,
        extents=extents,
    )
    res = simulate(wl, cfg)
    out = []
    for r in res.records:
        assert r.status == "ok", r
        out.append(
            {
                "admitted": round(r.admitted_s),
                "first_token": round(r.first_token_s) - 1,  # the step it ended
                "finish": round(r.finish_s) - 1,
                "cached": r.cached_tokens,
                "computed": r.computed_tokens,
                "preemptions": r.num_preemptions,
            }
        )
    ts = res.timeseries
    gauges = {  # the step that ended at each boundary -> what vLLM's stats say after it
        round(t) - 1: [u, int(run), int(wait), int(hits)]
        for t, u, run, wait, hits in zip(
            ts["t_s"],
            ts["kv_cache_usage_perc"],
            ts["num_requests_running"],
            ts["num_requests_waiting"],
            ts["prefix_cache_hit_tokens"],
            strict=True,
        )
    }
    s = res.summary
    return {
        "requests": out,
        "gauges": gauges,
        "queries": s["prefix_cache_queries"],
        "hits": s["prefix_cache_hits"],
    }


#: name: (seed, workload entries, sessions, engine limits besides the defaults);
#: a session is one entry of 2-3 turns
CASES: dict[str, tuple[int, int, bool, dict[str, Any]]] = {
    "pressure": (1, 1000, False, {"num_blocks": 60, "max_num_batched_tokens": 128}),
    "sessions": (2, 400, True, {"num_blocks": 120, "max_num_seqs": 6}),
    "sessions-pressure": (3, 500, True, {"num_blocks": 70, "max_num_batched_tokens": 128}),
    "roomy": (
        4,
        1000,
        True,
        {"num_blocks": 2000, "max_num_seqs": 16, "max_num_batched_tokens": 512},
    ),
    "no-caching": (5, 500, True, {"num_blocks": 80, "prefix_caching": False}),
    "priority": (7, 600, True, {"num_blocks": 70, "policy": "priority"}),
    # admission checks the first chunk only (vLLM scheduler_reserve_full_isl=False)
    "first-chunk": (8, 500, True, {"num_blocks": 70, "reserve_full_prompt": False}),
    "watermark": (9, 500, True, {"num_blocks": 90, "watermark": 0.1}),
    "small-blocks": (10, 500, True, {"block_size": 8, "num_blocks": 140}),
    # prompts up to the model length: outputs stop at max_model_len
    "capped": (
        6,
        600,
        False,
        {"num_blocks": 200, "max_model_len": 192, "max_num_batched_tokens": 96},
    ),
}
DEFAULTS = {
    "block_size": 16,
    "max_model_len": 2048,
    "max_num_seqs": 8,
    "max_num_batched_tokens": 256,
    "prefix_caching": True,
    "policy": "fcfs",
    "reserve_full_prompt": True,
    "watermark": 0.0,
}


def case_inputs(case: str) -> tuple[Workload, dict[str, Any]]:
    seed, n, sessions, extra = CASES[case]
    limits = {**DEFAULTS, **extra}
    wl = make_workload(
        seed,
        n,
        sessions=sessions,
        max_prompt=limits["max_model_len"] - 1,
        priorities=limits["policy"] == "priority",
    )
    return wl, limits


@pytest.fixture(scope="module")
def vllm_results(tmp_path_factory: pytest.TempPathFactory, vllm_python: str) -> dict[str, Any]:
    traces = {case: vllm_trace(*case_inputs(case)) for case in CASES}
    return run_in_vllm(vllm_python, "vllm_sched_replay.py", traces, tmp_path_factory.mktemp("s"))


@pytest.mark.vllm
@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_matches_vllm_scheduler(case: str, vllm_results: dict[str, Any]) -> None:
    wl, limits = case_inputs(case)
    theirs = vllm_results[case]
    # the per-block pool and the extent pool, step by step and in decode windows
    for exact, extents in ((True, False), (False, False), (True, True), (False, True)):
        ours = run_kvlab(wl, limits, exact_steps=exact, extents=extents)
        how = f"exact_steps={exact}, extents={extents}"
        bad = [
            i
            for i, (a, b) in enumerate(zip(ours["requests"], theirs["requests"], strict=True))
            if a != b
        ]
        assert not bad, (
            f"{case} ({how}): {len(bad)} of {len(wl.requests)} requests differ; "
            f"first {wl.requests[bad[0]].request_id}: kvlab {ours['requests'][bad[0]]} "
            f"vs vLLM {theirs['requests'][bad[0]]}"
        )
        assert (ours["queries"], ours["hits"]) == (theirs["queries"], theirs["hits"])
        # the time series, at kvlab's event boundaries, against vLLM's stats after that step
        rows = ours["gauges"]
        assert len(rows) > len(wl.requests)
        off = [
            (step, row, theirs["gauges"][str(step)])
            for step, row in rows.items()
            if row != theirs["gauges"][str(step)]
        ]
        assert not off, f"{case} ({how}): {len(off)} of {len(rows)} rows differ, first {off[0]}"
    # the case exercises what it is named for
    preempted = sum(r["preemptions"] for r in theirs["requests"])
    hits = theirs["hits"]
    assert any(q.prompt_tokens > limits["max_num_batched_tokens"] for q in wl.requests)
    assert (hits > 0) == limits["prefix_caching"]
    if "pressure" in case or case in ("no-caching", "priority", "first-chunk", "small-blocks"):
        assert preempted > 0
    if case == "capped":
        assert any(q.prompt_tokens + q.output_tokens > limits["max_model_len"] for q in wl.requests)
    print(
        f"{case}: {len(wl.requests)} requests, {theirs['steps']} steps, "
        f"{preempted} preemptions, {hits} hit tokens: identical",
        file=sys.stderr,
    )
