"""A calibrated clock's request overhead: requests join the queue that long after
they arrive (:attr:`kvlab.sim.cost_model.CalibratedCost.request_delay`)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from sim_helpers import Gpu, llama8b, random_workload

from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S, CalibratedCost
from kvlab.sim.engine import simulate


def test_requests_join_the_queue_after_the_request_overhead() -> None:
    """The engine is time-invariant: with every request delayed by d before it joins
    the queue, an open-loop run is the same run shifted by d (each TTFT and E2E + d,
    TPOT unchanged, arrivals as recorded); in a session, the next turn is sent its
    think time after the previous answer ends and joins the queue d later."""
    d_s = 0.25
    d = round(d_s * TICKS_PER_S)
    base = CalibratedCost(overhead=10**12, per_token=10**11, per_kv_token=10**7)
    delayed = CalibratedCost(overhead=10**12, per_token=10**11, per_kv_token=10**7, request_delay=d)
    cfg = SimConfig(model=llama8b(), gpu=Gpu(), block_size=16, num_blocks=400)
    wl = random_workload(5, 120, rate=30.0, sessions=False)
    a = simulate(wl, cfg.replace(cost_model=base)).records
    b = simulate(wl, cfg.replace(cost_model=delayed)).records
    for x, y in zip(a, b, strict=True):
        assert y.arrival_s == x.arrival_s
        assert y.first_token_s is not None and x.first_token_s is not None
        assert round((y.first_token_s - x.first_token_s) * TICKS_PER_S) == d
        assert round((y.finish_s - x.finish_s) * TICKS_PER_S) == d  # type: ignore[operator]
        assert (y.cached_tokens, y.num_preemptions) == (x.cached_tokens, x.num_preemptions)
    sessions = random_workload(6, 60, rate=5.0, sessions=True)
    runs = simulate(sessions, cfg.replace(cost_model=delayed)).records
    by_id = {q.request_id: q for q in sessions.requests}
    followed = 0
    for prev, rec in pairwise(runs):
        q = by_id[rec.request_id]
        if q.arrival_s is None and prev.session_id == rec.session_id and prev.finish_s:
            followed += 1
            expect = prev.finish_s + (q.think_time_s or 0.0)
            assert rec.arrival_s == pytest.approx(expect, abs=1e-12)
            assert rec.first_token_s is not None and rec.first_token_s - rec.arrival_s >= d_s
    assert followed > 0
