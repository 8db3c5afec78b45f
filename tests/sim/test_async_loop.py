"""The async scheduling mode on tiny workloads whose every step is known
(the batch-for-batch check against vLLM is test_vllm_async_differential.py)."""

from __future__ import annotations

from typing import Any

import pytest
from sim_helpers import Gpu, llama8b, random_workload
from test_vllm_scheduler_differential import StepClock

from kvlab.errors import ConfigError
from kvlab.results import RunResult
from kvlab.sim.async_cohort_loop import AsyncCohortLoop
from kvlab.sim.async_loop import AsyncLoop
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import Engine, simulate
from kvlab.workload.detect import load_workload
from kvlab.workload.records import Request, Segment, Workload


def _cfg(**kw: object) -> SimConfig:
    base = dict(
        model=llama8b(),
        gpu=Gpu(),
        num_blocks=200,
        max_model_len=2048,
        max_num_seqs=8,
        max_num_batched_tokens=256,
        cost_model=StepClock(),
    )
    return SimConfig(**{**base, **kw})  # type: ignore[arg-type]


def _two_requests() -> Workload:
    return Workload(
        (
            Request("a", (Segment("user", 32, "a"),), 3, arrival_s=0.0),
            Request("b", (Segment("user", 20, "b"),), 2, arrival_s=0.5),
        )
    )


def test_arrivals_join_a_batch_later_and_the_last_token_is_not_rescheduled() -> None:
    sync = simulate(_two_requests(), _cfg(async_scheduling=False))
    asyn = simulate(_two_requests(), _cfg(async_scheduling=True))
    a_s, b_s = sync.records
    a_a, b_a = asyn.records
    # synchronous: b arrives during step 0 and joins step 1
    assert (a_s.admitted_s, a_s.first_token_s, a_s.finish_s) == (0.0, 1.0, 3.0)
    assert (b_s.admitted_s, b_s.finish_s) == (1.0, 3.0)
    # async: steps 0 and 1 were both scheduled before b arrived; it joins step 2
    assert (a_a.admitted_s, a_a.first_token_s, a_a.finish_s) == (0.0, 1.0, 3.0)
    assert (b_a.admitted_s, b_a.first_token_s, b_a.finish_s) == (2.0, 3.0, 4.0)
    assert asyn.provenance["sim_loop"] == "async-cohort"
    assert asyn.provenance["scheduler"].startswith("AsyncScheduler")
    assert sync.provenance["scheduler"] == "Scheduler (synchronous)"
    # a's 3 tokens take 3 batches; no fourth batch for a token already in flight
    assert asyn.summary["num_steps"] == 4


def test_host_overhead_overlaps_the_gpu() -> None:
    """With the roofline clock a decode step costs max(GPU, overhead) instead of
    their sum: the same decode-heavy workload finishes sooner."""
    wl = random_workload(3, 40)
    kw = dict(step_overhead_s=0.004, cost_model=None)
    sync = simulate(wl, _cfg(**kw, async_scheduling=False))
    asyn = simulate(wl, _cfg(**kw, async_scheduling=True))
    assert all(r.status == "ok" for r in asyn.records)
    assert asyn.summary["output_tokens"] == sync.summary["output_tokens"]
    assert asyn.summary["simulated_duration_s"] < sync.summary["simulated_duration_s"]


def test_refused_where_not_modelled() -> None:
    with pytest.raises(ConfigError, match="offload tier is not modelled"):
        simulate(_two_requests(), _cfg(async_scheduling=True, offload_blocks=100))
    with pytest.raises(ConfigError, match="async_scheduling must be true, false or unset"):
        _cfg(async_scheduling="yes")
    assert _cfg().with_overrides({"async_scheduling": "true"}).async_scheduling is True


# --------------------------------------------------------------------------- decode windows


def _async_run(wl: Workload, cfg: SimConfig, how: str) -> tuple[RunResult, int]:
    """``how``: "batches" (a batch observer: every batch one by one, no windows),
    "windows" (the default) or "exact" (the windows' batches one by one). The result
    and the batches taken in windows."""
    engine = Engine(wl, cfg.replace(exact_steps=how == "exact"))
    loop = engine.loop
    assert isinstance(loop, AsyncLoop)
    if how == "batches":
        loop.batch_observer = lambda batch: None
    try:
        result = engine.run()
    finally:
        engine.close()
    return result, loop.window_batches


def _mooncake_slice() -> Workload:
    """The Mooncake conversation trace's first 100 s, requests under 30k tokens."""
    wl = load_workload("mooncake-conversation", None, seed=0)
    return Workload(
        tuple(q for q in wl.requests[:300] if q.prompt_tokens + q.output_tokens < 30_000)
    )


class HostClock:
    """A fitted-looking clock without ``step_ends``: a host part, a GPU part growing
    with tokens and context (the windows' clock then goes batch end by batch end)."""

    label = "linear, with a host part"
    overhead = 300

    def step_ticks(
        self, num_tokens: int, attn_pairs: int, kv_tokens: int, num_seqs: int = 1
    ) -> int:
        return self.overhead + 500 + 3 * num_tokens + kv_tokens // 4

    def window_ticks(self, num_seqs: int, context_sum: int, num_steps: int) -> int:
        return sum(
            self.step_ticks(
                num_seqs, context_sum + num_seqs * i, context_sum + num_seqs * i, num_seqs
            )
            for i in range(num_steps)
        )


WINDOW_CASES = {
    # sessions re-sending shared answers while requests wait, chunked prefill
    "sessions": (lambda: random_workload(0, 60, rate=30.0), {}),
    # a KV cache small enough to preempt again and again
    "pressure": (lambda: random_workload(1, 60, rate=30.0), {"num_blocks": 60}),
    "pressure-blocks": (
        lambda: random_workload(2, 60, rate=30.0),
        {"num_blocks": 80, "extents": False},
    ),
    "priority": (lambda: random_workload(3, 60, rate=30.0), {"scheduling": "priority"}),
    "no-caching": (lambda: random_workload(4, 60), {"enable_prefix_caching": False}),
    # host work longer than some batches' GPU part: windows only where it hides
    "host-bound": (lambda: random_workload(5, 40), {"step_overhead_s": 0.004, "num_blocks": 400}),
    "host-clock": (lambda: random_workload(6, 60, rate=30.0), {"cost_model": HostClock()}),
    "mooncake": (
        _mooncake_slice,
        {
            "num_blocks": 2500,
            "max_model_len": None,
            "max_num_seqs": 64,
            "max_num_batched_tokens": 2048,
            "model": "meta-llama/Llama-3.1-8B",
            "gpu": "h100-sxm",
        },
    ),
}


@pytest.mark.parametrize("case", sorted(WINDOW_CASES))
def test_decode_windows_change_no_record(case: str) -> None:
    """Windows take runs of batches at once: every request's record is the one of a
    run batch by batch, and a run taking the same windows batch by batch
    (``exact_steps``) gives the whole result (time series, counters) identically."""
    make, kw = WINDOW_CASES[case]
    wl = make()
    cfg = _cfg(**{"async_scheduling": True, "cost_model": None, **kw})
    ref, none = _async_run(wl, cfg, "batches")
    fast, taken = _async_run(wl, cfg, "windows")
    exact, taken_exact = _async_run(wl, cfg, "exact")
    assert none == 0 and taken > 0 and taken_exact == taken
    assert taken > fast.summary["num_steps"] // 4  # (windows hold much of the run)
    assert fast.records == ref.records == exact.records
    assert fast.summary["num_steps"] == ref.summary["num_steps"]
    assert fast.summary == exact.summary
    assert fast.timeseries == exact.timeseries
    assert fast.histograms == exact.histograms
    if case.startswith("pressure") or case == "mooncake":
        assert sum(r.num_preemptions or 0 for r in fast.records) > 0


# ------------------------------------------------------------------ the async cohort loop
def _whole(result: RunResult) -> tuple[object, ...]:
    summary = dict(result.summary)
    summary.pop("wall_s", None)
    return (summary, result.records, result.timeseries, result.histograms)


def _loop_run(wl: Workload, cfg: SimConfig, loop_class: type | None) -> tuple[RunResult, Any]:
    engine = Engine(wl, cfg, loop_class=loop_class)
    try:
        return engine.run(), engine.loop
    finally:
        engine.close()


COHORT_CASES = {
    **{k: v for k, v in WINDOW_CASES.items() if k not in ("priority", "pressure-blocks")},
    "no-sessions": (lambda: random_workload(7, 80, rate=40.0, sessions=False), {}),
    "tight-no-sessions": (
        lambda: random_workload(8, 80, rate=40.0, sessions=False),
        {"num_blocks": 70},
    ),
    "short-budget": (
        lambda: random_workload(9, 80, rate=40.0, sessions=False),
        {"max_num_batched_tokens": 6, "max_num_seqs": 12},
    ),
    "block-32": (
        lambda: random_workload(10, 60, rate=30.0, sessions=False),
        {"block_size": 32, "num_blocks": 30},
    ),
}


@pytest.mark.parametrize("case", sorted(COHORT_CASES))
def test_the_async_cohort_loop_equals_the_async_loop(case: str) -> None:
    """The async cohort loop (the default fast path with async scheduling) gives the
    whole result of the async loop taking every batch through the scheduler: records,
    counters, time series, histograms; and it keeps the cohort for much of the run."""
    make, kw = COHORT_CASES[case]
    wl = make()
    cfg = _cfg(**{"async_scheduling": True, "cost_model": None, **kw})
    fast, loop = _loop_run(wl, cfg, None)
    ref, ref_loop = _loop_run(wl, cfg, AsyncLoop)
    assert isinstance(loop, AsyncCohortLoop) and type(ref_loop) is AsyncLoop
    assert _whole(fast) == _whole(ref)
    assert loop.window_batches == ref_loop.window_batches
    assert loop.cohort_batches > 0
    if case != "sessions":  # (shared answers keep requests out of the cohort)
        assert loop.cohort_batches + loop.lazy_steps > fast.summary["num_steps"] // 4
    if case.startswith(("pressure", "tight")) or case == "mooncake":
        assert sum(r.num_preemptions or 0 for r in fast.records) > 0
