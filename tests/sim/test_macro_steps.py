"""Decode windows (macro-steps) against the per-step reference mode: identical results."""

from __future__ import annotations

from typing import Any

import pytest
from sim_helpers import Gpu, llama8b, random_workload

from kvlab.results import RunResult
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import simulate


def comparable(r: RunResult) -> dict[str, Any]:
    summary = {k: v for k, v in r.summary.items() if k != "wall_s"}
    return {
        "records": [x.to_dict() for x in r.records],
        "summary": summary,
        "timeseries": r.timeseries,
        "histograms": r.histograms,
    }


CASES = [
    dict(num_blocks=300, max_num_seqs=64),
    dict(num_blocks=200, max_num_seqs=16, max_num_batched_tokens=512),
    dict(num_blocks=400, policy="s3fifo"),
    dict(num_blocks=250, policy="retention", scheduling="priority"),
    dict(num_blocks=250, policy="ttl", policy_params={"ttl_s": 0.5}),
    dict(num_blocks=250, policy="lfu", offload_blocks=500),
    dict(num_blocks=250, policy="fifo", offload_blocks=300, offload_mode="write_through"),
    dict(num_blocks=300, enable_prefix_caching=False),
    dict(num_blocks=300, reserve_full_prompt=False, block_size=32),
]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_macro_steps_equal_exact_steps(seed: int, case: int) -> None:
    w = random_workload(seed, 150)
    base = SimConfig(model=llama8b(), gpu=Gpu(), **CASES[case])  # type: ignore[arg-type]
    fast = simulate(w, base)
    exact = simulate(w, base.replace(exact_steps=True))
    assert fast.summary["num_completed"] == len(w.requests)
    assert comparable(fast) == comparable(exact)
