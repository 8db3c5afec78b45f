"""The stepped engine (kvlab.rl.engine_steps): stopping at decision points and resuming
changes nothing; a forced preemption frees the request's blocks and recomputes it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_helpers import Gpu, llama8b, random_workload, req

from kvlab.errors import ConfigError
from kvlab.rl.engine_steps import SteppedLoop, stepped_engine
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import simulate
from kvlab.workload.records import Workload


def cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(
        model=llama8b(), gpu=Gpu(), block_size=4, num_blocks=64, async_scheduling=False
    )  # (these narratives follow vLLM's synchronous scheduler)
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("extents", [False, True])
@pytest.mark.parametrize("every", [1, 3])
def test_stopping_every_n_events_changes_no_record(extents: bool, every: int) -> None:
    w = random_workload(5, 40)
    c = cfg(extents=extents, block_size=16, num_blocks=80)
    ref = simulate(w, c.replace(exact_steps=False, scheduling="priority"))
    engine, loop = stepped_engine(w, c.replace(scheduling="priority"))
    stops = 0
    while loop.advance_until(lambda s: s.num_events % every == 0):
        stops += 1
    got = loop.result()
    engine.close()
    assert stops == loop.num_events // every > 0
    assert [r.to_dict() for r in got.records] == [r.to_dict() for r in ref.records]


def test_a_forced_preemption_frees_the_requests_blocks_and_recomputes_it() -> None:
    # one request of 10 prompt tokens (blocks of 4): after its first step it holds 3
    # blocks (10 tokens + the first output token's slot is in block 3), two of them full
    w = Workload(name="one", requests=(req("a", [("p", 10)], 5),))
    engine, loop = stepped_engine(w, cfg(extents=False, enable_prefix_caching=False))
    free0 = loop.kv.num_free
    assert loop.advance_until(lambda s: bool(s.sched.running))
    (seq,) = loop.sched.running
    held = free0 - loop.kv.num_free
    assert held == 3
    assert loop.preempt(seq) == held and loop.kv.num_free == free0
    assert not loop.sched.running and loop.sched.num_waiting() == 1
    with pytest.raises(ValueError, match="not running"):
        loop.preempt(seq)
    assert not loop.advance_until(lambda s: False)
    rec = loop.result().records[0]
    engine.close()
    assert rec.num_preemptions == 1 and rec.status == "ok"
    assert isinstance(loop, SteppedLoop) and loop.num_forced_preemptions == 1


def test_the_stepped_loop_runs_the_synchronous_scheduler() -> None:
    """Unset, async scheduling resolves to the synchronous scheduler for the stepped
    loop (and the run says why); asked for explicitly, it is refused in one line."""
    w = random_workload(2, 10)
    engine, loop = stepped_engine(w, cfg(async_scheduling=None, num_blocks=400))
    try:
        assert not engine.r.async_scheduling and type(engine.sched).__name__ == "Scheduler"
        assert "synchronous scheduler" in engine.r.scheduling_reason
        while loop.advance_until(lambda _: False):
            pass
        assert all(r.status == "ok" for r in loop.result().records)
    finally:
        engine.close()
    with pytest.raises(ConfigError, match="SteppedLoop steps vLLM's synchronous scheduler"):
        stepped_engine(w, cfg(async_scheduling=True))
