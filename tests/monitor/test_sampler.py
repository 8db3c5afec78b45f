"""The monitor's sampling on recorded /metrics: rates over the interval, restarts,
outages, quantiles from bucket increases, bad endpoints."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlab.monitor import histogram as hist
from kvlab.monitor.sampler import (
    HTTP_ERROR,
    NOT_METRICS,
    OTHER_DIALECT,
    UNREACHABLE,
    Scrape,
    ServerWatch,
    metrics_url,
)
from monitor.stubs import MetricsStub, bump, fixture, observe, set_value

V1 = "vllm:"


def test_metrics_url() -> None:
    assert metrics_url("localhost:8000") == "http://localhost:8000/metrics"
    assert metrics_url("http://h:1/") == "http://h:1/metrics"
    assert metrics_url("https://h/x/metrics") == "https://h/x/metrics"


def test_vllm_v1_interval_rates_not_lifetime() -> None:
    t0 = fixture("vllm_metrics.txt")
    w = ServerWatch("x:1")
    first = w.update(Scrape(t0), 100.0)
    assert first.up and first.dialect == "vllm" and first.interval_s is None
    assert first.prefix_hit_rate is None  # one scrape: no interval yet
    assert first.totals["prefix_cache_hits"] == 256.0
    assert first.cache_config == {
        "block_size": "128",
        "num_gpu_blocks": "8192",
        "cache_dtype": "auto",
    }
    t1 = bump(t0, "vllm:prefix_cache_queries_total", 1000)
    t1 = bump(t1, "vllm:prefix_cache_hits_total", 250)
    t1 = bump(t1, "vllm:num_preemptions_total", 3)
    t1 = bump(t1, "vllm:generation_tokens_total", 400)
    t1 = set_value(t1, "vllm:kv_cache_usage_perc", 0.75)
    t1 = observe(t1, "vllm:time_to_first_token_seconds", 0.3, n=10)
    s = w.update(Scrape(t1), 102.0)
    assert s.interval_s == 2.0
    assert s.prefix_hit_rate == 0.25  # 250 / 1000 of this interval; lifetime is 506/1609
    assert s.prefix_queries_tokens == 1000
    assert s.preemptions == 3 and s.preemptions_per_s == 1.5
    assert s.generation_tokens_per_s == 200.0
    assert s.kv_cache_usage_perc == 0.75
    assert not s.counter_reset
    # ten observations of 0.3 s, all in the (0.25, 0.5] bucket: linear inside it
    assert s.ttft_p50_s == pytest.approx(0.25 + 0.25 * 5 / 10)
    assert s.ttft_p99_s == pytest.approx(0.25 + 0.25 * 9.9 / 10)
    quiet = w.update(Scrape(t1), 103.0)
    assert quiet.prefix_hit_rate is None and quiet.preemptions_per_s == 0.0
    assert quiet.ttft_p99_s is None  # no request in the interval


def test_vllm_legacy_names() -> None:
    t0 = fixture("vllm_legacy_metrics.txt")
    w = ServerWatch("x:1")
    s0 = w.update(Scrape(t0), 0.0)
    assert s0.dialect == "vllm-legacy"
    assert s0.kv_cache_usage_perc is not None and 0 <= s0.kv_cache_usage_perc <= 1
    t1 = bump(t0, "vllm:gpu_prefix_cache_queries_total", 100)
    t1 = bump(t1, "vllm:gpu_prefix_cache_hits_total", 40)
    s1 = w.update(Scrape(t1), 1.0)
    assert s1.prefix_hit_rate == 0.4


def test_sglang_and_llamacpp() -> None:
    w = ServerWatch("x:1")
    t0 = fixture("sglang_metrics.txt")
    assert w.update(Scrape(t0), 0.0).server == "sglang"
    t1 = bump(bump(t0, "sglang:prompt_tokens_total", 200), "sglang:cached_tokens_total", 50)
    t1 = bump(t1, "sglang:num_retracted_requests_total", 2)
    s = w.update(Scrape(t1), 1.0)
    assert s.kv_cache_usage_perc == 0.25
    assert s.num_requests_running == 3 and s.num_requests_waiting == 2
    assert s.prefix_hit_rate == 0.25 and s.preemptions_per_s == 2.0
    assert s.cache_config == {"max_total_num_tokens": "6144"}
    # llama.cpp: /metrics recorded from a real llama-server (fixtures/llamacpp_real/), then
    # one more request like its last one: 34 prompt tokens, 33 of them cached, 30 generated.
    w2 = ServerWatch("y:1")
    l0 = fixture("llamacpp_real/metrics.txt")
    first = w2.update(Scrape(l0), 0.0)
    assert first.dialect == "llamacpp" and first.num_requests_running == 0
    l1 = bump(
        bump(l0, "llamacpp:prompt_tokens_total", 1), "llamacpp:prompt_tokens_cached_total", 33
    )
    l1 = bump(l1, "llamacpp:tokens_predicted_total", 30)
    s2 = w2.update(Scrape(l1), 2.0)
    assert s2.generation_tokens_per_s == 15.0
    assert s2.prefix_hit_rate == pytest.approx(33 / 34)
    # This llama.cpp exports no KV usage gauge (llamacpp:kv_cache_usage_ratio is gone
    # upstream): the monitor shows none rather than a number.
    assert s2.kv_cache_usage_perc is None
    assert s2.preemptions_per_s is None  # llama.cpp has no preemption counter
    assert s2.ttft_p50_s is None


def test_restart_is_a_counter_reset_not_a_negative_rate() -> None:
    t0 = bump(fixture("vllm_metrics.txt"), "vllm:num_preemptions_total", 50)
    w = ServerWatch("x:1")
    w.update(Scrape(t0), 0.0)
    # the server restarted: counters start again; 2 preemptions since
    fresh = set_value(fixture("vllm_metrics.txt"), "vllm:num_preemptions_total", 2)
    fresh = set_value(fresh, "vllm:prefix_cache_queries_total", 100)
    fresh = set_value(fresh, "vllm:prefix_cache_hits_total", 10)
    s = w.update(Scrape(fresh), 1.0)
    assert s.counter_reset
    assert s.preemptions == 2 and s.preemptions_per_s == 2.0
    assert s.prefix_hit_rate == 0.1
    for v in (s.preemptions_per_s, s.generation_tokens_per_s, s.prefix_hit_rate):
        assert v is None or v >= 0


def test_down_and_back_over_http() -> None:
    text = fixture("vllm_metrics.txt")
    stub = MetricsStub(text)
    try:
        w = ServerWatch(stub.url, timeout_s=1.0)
        assert w.scrape(10.0).up
        stub.stop()
        d1 = w.scrape(11.0)
        d2 = w.scrape(12.0)
        assert not d1.up and d1.problem == UNREACHABLE and "cannot reach" in (d1.error or "")
        assert d1.unreachable_since_unix == d2.unreachable_since_unix == 11.0
        stub.body = bump(
            bump(text, "vllm:prefix_cache_queries_total", 10), "vllm:prefix_cache_hits_total", 5
        )
        stub.start()
        back = w.scrape(13.0)
        assert back.up and back.unreachable_since_unix is None
        assert back.interval_s == 3.0  # against the last good scrape
        assert back.prefix_hit_rate == 0.5
    finally:
        stub.stop()


def test_bad_endpoints_say_what_they_are() -> None:
    w = ServerWatch("x:1")
    html = w.update(Scrape("<!doctype html><html><body>hi</body></html>"), 0.0)
    assert html.problem == NOT_METRICS and "not a Prometheus metrics endpoint" in (html.error or "")
    node = '# HELP node_cpu x\nnode_cpu_seconds_total{cpu="0"} 1\ngo_goroutines 7\n'
    other = w.update(Scrape(node), 1.0)
    assert other.problem == OTHER_DIALECT
    assert "node_*" in (other.error or "") and "vllm:*" in (other.error or "")
    stub = MetricsStub("nope")
    stub.status = 404
    try:
        got = ServerWatch(stub.url).scrape(0.0)
        assert got.problem == HTTP_ERROR and "HTTP 404" in (got.error or "")
    finally:
        stub.stop()


def test_quantile_exact() -> None:
    b = ((0.1, 0.0), (0.5, 10.0), (math.inf, 10.0))
    assert hist.quantile(0.5, b) == pytest.approx(0.3)
    assert hist.quantile(0.5, ((0.1, 0.0), (math.inf, 4.0))) == 0.1  # in +Inf: largest bound
    assert hist.quantile(0.5, ((1.0, 0.0), (math.inf, 0.0))) is None
    assert hist.quantile(0.5, ((1.0, 4.0), (math.inf, 4.0))) == 0.5  # from 0 in the first


@given(
    st.lists(st.floats(0.0005, 3000, allow_nan=False), min_size=1, max_size=50),
    st.floats(0.01, 0.99),
)
def test_quantile_lies_in_the_bucket_of_the_true_quantile(values: list[float], q: float) -> None:
    bounds = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, math.inf)
    cum = tuple((b, float(sum(1 for v in values if v <= b))) for b in bounds)
    got = hist.quantile(q, cum)
    assert got is not None
    rank = q * len(values)
    i = next(i for i, (_, c) in enumerate(cum) if c >= rank)
    lo = bounds[i - 1] if i > 0 else 0.0
    hi = bounds[i] if not math.isinf(bounds[i]) else bounds[i - 1]
    assert lo - 1e-12 <= got <= hi + 1e-12


def test_bucket_delta_restart() -> None:
    a = ((1.0, 5.0), (math.inf, 8.0))
    b = ((1.0, 1.0), (math.inf, 1.0))
    assert hist.delta(a, b) == (b, True)
    assert hist.delta(a, ((1.0, 6.0), (math.inf, 10.0))) == (((1.0, 1.0), (math.inf, 2.0)), False)
