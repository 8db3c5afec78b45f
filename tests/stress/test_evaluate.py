"""Scenarios through plan + the simulator: verdicts, reasons, figures from content."""

from __future__ import annotations

from kvlab.stress.evaluate import evaluate
from kvlab.stress.matrix import Scenario
from kvlab.stress.scenario import WorkloadCache, build_workload
from kvlab.stress.slo import Slo

SLO = Slo()


def test_model_that_does_not_fit_is_a_reported_fail() -> None:
    r = evaluate(Scenario(name="big", model="qwen2.5-72b", gpu="rtx-4090"), SLO)
    assert r.verdict == "fail" and r.risk == "high"
    assert "would not start" in r.reasons[0]


def test_prompt_at_the_context_limit_is_rejected_not_a_crash() -> None:
    s = Scenario(name="32k", model="qwen2.5-0.5b", batch=3, seq_len=32768, gen_len=8)
    r = evaluate(s, SLO)
    assert r.verdict == "fail"
    assert "max_model_len 32,768" in r.reasons[0]
    assert r.metrics["num_never_fit"] == 3
    # the plan's figure: 12,288 B/token (24 layers x 2 KV heads x 64 x 2 x 2 B)
    assert r.plan["kv_bytes_per_token"] == 12288
    assert r.metrics["kv_demand_bytes"] == 3 * 12288 * (32768 + 8)


def test_small_scenario_passes_with_zero_hits_when_nothing_is_shared() -> None:
    s = Scenario(name="ok", model="qwen2.5-0.5b", batch=4, seq_len=512, gen_len=16)
    r = evaluate(s, SLO)
    assert r.verdict == "pass", r.reasons
    m = r.metrics
    assert m["num_completed"] == 4
    assert m["prefix_cache_hit_rate"] == 0.0
    assert 0 < m["kv_peak_bytes"] <= m["kv_capacity_bytes"]
    assert m["goodput_req_per_s"] > 0
    assert r.risk == "low"


def test_shared_prefix_gives_hits_from_content() -> None:
    s = Scenario(
        name="sh",
        model="qwen2.5-0.5b",
        batch=1,
        concurrency=1,
        rounds=4,
        seq_len=1024,
        gen_len=8,
        shared_prefix=0.5,
    )
    r = evaluate(s, SLO)
    # rounds 2-4 hit the 512 shared tokens (32 blocks); the first round is cold
    assert r.metrics["prefix_cache_hit_rate"] == (3 * 512) / (4 * 1024)


def test_overload_fails_with_preemption_reasons() -> None:
    s = Scenario(
        name="long gen", model="qwen2.5-7b", batch=32, concurrency=2, seq_len=4096, gen_len=256
    )
    r = evaluate(s, SLO)
    assert r.verdict == "fail"
    assert any("preemption" in x for x in r.reasons)
    assert r.metrics["kv_peak_usage"] > 0.95


def test_workload_shapes() -> None:
    s = Scenario(
        name="w",
        model="qwen2.5-0.5b",
        batch=3,
        concurrency=2,
        rounds=2,
        seq_len=100,
        gen_len=5,
        arrival="uniform",
        ramp_s=4.0,
    )
    w = build_workload(s)
    assert len(w) == 12
    firsts = [q for q in w.requests if q.turn == 0]
    assert sorted({q.arrival_s for q in firsts}) == [0.0, 2.0]
    assert all(q.think_time_s == 0.0 for q in w.requests if q.turn == 1)
    p = build_workload(s.with_changes(arrival="poisson", rate_per_s=2.0))
    assert len(p) == 12 and all(q.session_id is None for q in p.requests)
    assert len({q.arrival_s for q in p.requests}) == 4  # 4 batches of 3 requests


def test_workload_cache_prepares_each_shape_once() -> None:
    c = WorkloadCache()
    s = Scenario(name="a", model="qwen2.5-0.5b", batch=2, seq_len=64, gen_len=4)
    evaluate(s, SLO, c)
    evaluate(s.with_changes(kv_dtype="fp8", name="b"), SLO, c)
    evaluate(s.with_changes(batch=3), SLO, c)
    assert c.num_prepared == 2
