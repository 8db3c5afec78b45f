"""The async scheduling mode on tiny workloads whose every step is known
(the batch-for-batch check against vLLM is test_vllm_async_differential.py)."""

from __future__ import annotations

import pytest
from sim_helpers import Gpu, llama8b, random_workload
from test_vllm_scheduler_differential import StepClock

from kvlab.errors import ConfigError
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import simulate
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
    sync = simulate(_two_requests(), _cfg())
    asyn = simulate(_two_requests(), _cfg(async_scheduling=True))
    a_s, b_s = sync.records
    a_a, b_a = asyn.records
    # synchronous: b arrives during step 0 and joins step 1
    assert (a_s.admitted_s, a_s.first_token_s, a_s.finish_s) == (0.0, 1.0, 3.0)
    assert (b_s.admitted_s, b_s.finish_s) == (1.0, 3.0)
    # async: steps 0 and 1 were both scheduled before b arrived; it joins step 2
    assert (a_a.admitted_s, a_a.first_token_s, a_a.finish_s) == (0.0, 1.0, 3.0)
    assert (b_a.admitted_s, b_a.first_token_s, b_a.finish_s) == (2.0, 3.0, 4.0)
    assert asyn.provenance["sim_loop"] == "async"
    assert asyn.provenance["scheduler"].startswith("AsyncScheduler")
    assert sync.provenance["scheduler"] == "Scheduler (synchronous)"
    # a's 3 tokens take 3 batches; no fourth batch for a token already in flight
    assert asyn.summary["num_steps"] == 4


def test_host_overhead_overlaps_the_gpu() -> None:
    """With the roofline clock a decode step costs max(GPU, overhead) instead of
    their sum: the same decode-heavy workload finishes sooner."""
    wl = random_workload(3, 40)
    kw = dict(step_overhead_s=0.004, cost_model=None)
    sync = simulate(wl, _cfg(**kw))
    asyn = simulate(wl, _cfg(**kw, async_scheduling=True))
    assert all(r.status == "ok" for r in asyn.records)
    assert asyn.summary["output_tokens"] == sync.summary["output_tokens"]
    assert asyn.summary["simulated_duration_s"] < sync.summary["simulated_duration_s"]


def test_refused_where_not_modelled() -> None:
    with pytest.raises(ConfigError, match="offload tier is not modelled"):
        simulate(_two_requests(), _cfg(async_scheduling=True, offload_blocks=100))
    with pytest.raises(ConfigError, match="async_scheduling must be true or false"):
        _cfg(async_scheduling="yes")
    assert _cfg().with_overrides({"async_scheduling": "true"}).async_scheduling is True
