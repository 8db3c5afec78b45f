"""Narrative engine tests on tiny configurations, with exact expected values."""

from __future__ import annotations

import math

import pytest
from sim_helpers import Gpu, llama8b, req

from kvlab.errors import CapacityError, WorkloadError
from kvlab.results import STATUS_OK, STATUS_REJECTED
from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.engine import Engine, simulate
from kvlab.workload.records import Request, Segment, Workload


def cfg(**kw: object) -> SimConfig:
    base: dict[str, object] = dict(
        model=llama8b(), gpu=Gpu(), block_size=4, num_blocks=64, async_scheduling=False
    )  # (these narratives follow vLLM's synchronous scheduler)
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def test_single_request_timeline_follows_the_roofline() -> None:
    w = Workload((req("a", [("x", 10)], 3),))
    e = Engine(w, cfg())
    r = e.run()
    rec = r.records[0]
    cost = e.r.cost
    # step 1 prefills 10 tokens (attention pairs 10*10, 10 context tokens read)
    t1 = cost.step_ticks(10, 100, 10, 1)
    # then two decode steps with contexts 11 and 12
    t2 = t1 + cost.step_ticks(1, 11, 11, 1)
    t3 = t2 + cost.step_ticks(1, 12, 12, 1)
    assert rec.first_token_s == t1 / TICKS_PER_S
    assert rec.finish_s == t3 / TICKS_PER_S
    assert rec.computed_tokens == 10 and rec.cached_tokens == 0
    assert r.summary["num_steps"] == 3
    assert r.summary["prefix_cache_queries"] == 10
    # 12 tokens of KV (the last sampled token has none) fill 3 blocks of 4, all
    # keyed (the last one when the step computing token 11 was scheduled), all free
    assert e.pool.num_free == 63 and e.pool.num_cached_free() == 3


def test_second_request_hits_shared_prefix_and_reports_causes() -> None:
    w = Workload(
        (
            req("a", [("sys", 8), ("u1", 5)], 2, t=0.0),
            req("b", [("sys", 8), ("u2", 5)], 2, t=1.0),
            req("c", [("sys", 8)], 2, t=2.0),
            req("d", [("sys", 2)], 2, t=3.0),
        )
    )
    r = simulate(w, cfg())
    a, b, c, d = r.records
    assert (a.cached_tokens, a.miss_cause) == (0, "cold")
    assert (b.cached_tokens, b.miss_cause) == (8, "cold")
    # an 8-token prompt can hit at most 7 tokens -> 1 block, capped by the last-token rule
    assert (c.cached_tokens, c.miss_cause) == (4, "last_token")
    assert d.miss_cause == "below_block"
    assert b.hit_tokens_by_retention == {"context": 8}
    assert r.summary["prefix_cache_hits"] == 12
    assert r.summary["prefix_cache_queries"] == 13 + 13 + 8 + 2


def test_evicted_cause_when_the_prefix_was_pushed_out() -> None:
    # 9 usable blocks of 4 tokens: a leaves 3 keyed + 6 clean free blocks; b's
    # 32-token prompt takes the 6 clean ones, then evicts a's tail first (2 blocks)
    w = Workload(
        (
            req("a", [("p", 12)], 1, t=0.0),
            req("b", [("q", 32)], 1, t=1.0),
            req("c", [("p", 12)], 1, t=2.0),
        )
    )
    r = simulate(w, cfg(num_blocks=10))
    # 2 evictions admitting b, 2 more (b's tail) admitting c
    assert r.summary["num_evicted_blocks"] == 4
    assert (r.records[2].cached_tokens, r.records[2].miss_cause) == (4, "evicted")


def test_preemption_by_recompute_puts_victim_back_first() -> None:
    # 8 usable blocks of 4 tokens: two requests of 12 + 12 tokens cannot both finish
    w = Workload((req("a", [("x", 12)], 12, t=0.0), req("b", [("y", 12)], 12, t=0.0)))
    r = simulate(w, cfg(num_blocks=9, reserve_full_prompt=True))
    a, b = r.records
    assert a.status == b.status == STATUS_OK
    assert b.num_preemptions >= 1 and a.num_preemptions == 0
    assert b.computed_tokens > 12  # recomputed after preemption
    assert r.summary["num_preemptions"] == b.num_preemptions
    assert r.summary["preempted_prefix_cache_queries"] > 0


def test_too_long_prompt_is_rejected_and_counted() -> None:
    w = Workload((req("a", [("x", 40)], 2), req("b", [("y", 8)], 2)))
    r = simulate(w, cfg(max_model_len=32))
    assert r.records[0].status == STATUS_REJECTED
    assert r.summary["num_rejected"] == 1 and r.summary["num_completed"] == 1


def test_output_is_clamped_to_max_model_len() -> None:
    r = simulate(Workload((req("a", [("x", 28)], 100),)), cfg(max_model_len=32))
    assert r.records[0].output_tokens == 4


def test_cache_smaller_than_one_request_is_a_capacity_error() -> None:
    w = Workload((req("a", [("x", 100)], 10),))
    with pytest.raises(CapacityError, match="needs"):
        simulate(w, cfg(num_blocks=8))


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf, 1e31])
def test_bad_times_are_rejected(bad: float) -> None:
    w = Workload((Request("a", (Segment("user", 4, "x"),), 2, arrival_s=bad),))
    with pytest.raises(WorkloadError):
        simulate(w, cfg())


def test_session_turn_arrives_think_time_after_previous_finished() -> None:
    w = Workload(
        (
            req("t0", [("s", 8)], 3, t=0.0, session_id="S", output_content_id="o0"),
            Request(
                "t1",
                (Segment("user", 8, "s"), Segment("assistant", 3, "o0"), Segment("user", 6, "n")),
                2,
                arrival_s=None,
                think_time_s=2.5,
                session_id="S",
                turn=1,
            ),
        )
    )
    r = simulate(w, cfg())
    t0, t1 = r.records
    assert t0.finish_s is not None
    assert t1.arrival_s == pytest.approx(t0.finish_s + 2.5, abs=1e-12)
    # the second turn hits the first turn's prompt and its generated block
    assert t1.cached_tokens == 8


def test_fcfs_and_max_num_seqs() -> None:
    w = Workload(tuple(req(f"r{i}", [(f"x{i}", 8)], 4, t=0.0) for i in range(3)))
    r = simulate(w, cfg(max_num_seqs=1))
    fins = [x.finish_s for x in r.records]
    assert fins == sorted(fins)
    assert r.records[1].admitted_s == r.records[0].finish_s


def test_priority_scheduling_admits_lower_value_first() -> None:
    w = Workload(
        (
            req("busy", [("b", 8)], 4, t=0.0),
            req("late", [("l", 8)], 4, t=0.0, priority=5),
            req("urgent", [("u", 8)], 4, t=0.0, priority=-1),
        )
    )
    r = simulate(w, cfg(max_num_seqs=1, scheduling="priority"))
    order = sorted(r.records, key=lambda x: x.admitted_s or 0.0)
    assert [x.request_id for x in order] == ["urgent", "busy", "late"]


def test_priority_preemption_takes_the_latest_arrival_on_ties() -> None:
    # Same priority, same arrival tick: the later request in the workload arrived
    # later (vLLM's arrival_time tells them apart), so it is the one preempted
    # when the decoding pair outgrows eight blocks.
    w = Workload(
        (
            req("first", [("a", 8)], 20, t=0.0, priority=1),
            req("second", [("b", 8)], 20, t=0.0, priority=1),
        )
    )
    r = simulate(w, cfg(num_blocks=9, scheduling="priority"))
    first, second = r.records
    assert (first.num_preemptions, second.num_preemptions) == (0, 1)
    assert first.finish_s is not None and second.finish_s is not None
    assert first.finish_s < second.finish_s


def test_prefix_caching_off_never_hits() -> None:
    w = Workload((req("a", [("s", 16)], 2, t=0.0), req("b", [("s", 16)], 2, t=1.0)))
    r = simulate(w, cfg(enable_prefix_caching=False))
    assert r.summary["prefix_cache_hits"] == 0
    assert r.records[1].cached_tokens == 0


def test_offload_tier_serves_evicted_prefix_and_costs_time() -> None:
    w = Workload(
        (
            req("a", [("p", 16)], 1, t=0.0),
            req("b", [("q", 28)], 1, t=1.0),
            req("c", [("p", 17)], 1, t=2.0),
        )
    )
    base = simulate(w, cfg(num_blocks=9))
    off = simulate(w, cfg(num_blocks=9, offload_blocks=32))
    # b evicts a's last 3 blocks (tail first); the tier keeps them
    c0, c1 = base.records[2], off.records[2]
    assert c0.cached_tokens == 4
    assert c1.offload_hit_tokens == 12 and c1.cached_tokens == 16
    assert off.summary["external_prefix_cache_hits"] == 12
    assert off.summary["prefix_cache_hits"] == 4
    assert off.summary["offload_loaded_blocks"] == 3
    assert off.summary["offload_load_s"] > 0
    # Prefilling 13 tokens (c0) or 1 (c1) is one step bound by reading the weights (far
    # below the ridge point), so both steps take the same time: c's TTFT with the tier
    # is the TTFT without it plus exactly the load of the 3 blocks from the tier.
    assert c0.ttft_s is not None and c1.ttft_s is not None and c0.ttft_s > 0
    assert off.summary["offload_load_s"] > 0
    assert c1.ttft_s - c0.ttft_s == pytest.approx(off.summary["offload_load_s"], abs=2e-9)


class ConstantCost:
    """A stand-in for a calibrated table: every step takes 1 ms."""

    label = "constant 1 ms"
    tick = TICKS_PER_S // 1000

    def step_ticks(self, num_tokens: int, attn_pairs: int, kv_tokens: int, num_seqs: int) -> int:
        return self.tick

    def window_ticks(self, num_seqs: int, context_sum: int, num_steps: int) -> int:
        return self.tick * num_steps


def test_cost_model_is_replaceable() -> None:
    w = Workload((req("a", [("x", 10)], 5),))
    r = simulate(w, cfg(cost_model=ConstantCost()))
    rec = r.records[0]
    assert rec.first_token_s == pytest.approx(0.001)
    assert rec.finish_s == pytest.approx(0.005)
    assert r.summary["clock"] == "constant 1 ms"


def test_config_validation_and_overrides() -> None:
    from kvlab.errors import ConfigError

    c = cfg()
    assert c.with_overrides({"max_num_seqs": "8", "mfu": "0.4"}).max_num_seqs == 8
    for bad in ({"max_num_seqs": "x"}, {"num_blocks": "x"}, {"mfu": "2"}, {"nope": "1"}):
        with pytest.raises(ConfigError):
            c.with_overrides(bad)
    assert c.with_overrides({"policy.ttl_s": "5"}).policy_params == {"ttl_s": 5}


def test_batch_limits_default_to_vllm_server_defaults() -> None:
    e = Engine(Workload((req("a", [("x", 8)], 2),)), cfg())
    assert (e.r.max_num_batched_tokens, e.r.max_num_seqs) == (8192, 1024)
