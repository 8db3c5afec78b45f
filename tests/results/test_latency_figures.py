"""ITL, standard deviations, percentiles, goodput, miss causes and the vLLM bench export."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlab.backends.base import build_result
from kvlab.backends.metrics import server_summary
from kvlab.bench.experiment import points_csv
from kvlab.errors import ConfigError
from kvlab.report.progress import LineProgress
from kvlab.results import RequestRecord
from kvlab.results.summary import (
    good_requests,
    itl_values,
    latency_figures,
    parse_goodput,
    parse_percentiles,
    percentile,
    std,
    vllm_bench_metrics,
)


def live(rid: str, arrival: float, chunks: list[float], **kw: object) -> RequestRecord:
    """A completed live record whose chunks arrived at ``chunks`` (one token each)."""
    return RequestRecord(
        rid,
        arrival,
        100,
        len(chunks),
        first_token_s=chunks[0],
        finish_s=chunks[-1],
        chunk_times_s=chunks,
        cached_tokens=None,
        computed_tokens=None,
        offload_hit_tokens=None,
        num_preemptions=None,
        **kw,  # type: ignore[arg-type]
    )


RECS = [
    live("a", 0.0, [0.1, 0.2, 0.4, 0.5]),  # TTFT 100 ms, gaps 100, 200, 100 ms
    live("b", 1.0, [1.3, 1.35]),  # TTFT 300 ms, gap 50 ms
    RequestRecord("c", 2.0, 10, 0, status="failed", error="http_500"),
]


def test_itl_are_the_gaps_between_chunks_of_completed_requests() -> None:
    assert itl_values(RECS) == pytest.approx([0.1, 0.2, 0.1, 0.05])
    sim = [RequestRecord("s", 0.0, 10, 4, first_token_s=0.1, finish_s=0.4)]
    assert itl_values(sim) is None  # no chunk times: unknown, not empty
    f = latency_figures(RECS, duration_s=2.0)
    assert f["itl_s"]["mean"] == pytest.approx(0.1125)
    assert f["itl_s"]["max"] == pytest.approx(0.2)
    assert latency_figures(sim, duration_s=1.0)["itl_s"]["mean"] is None
    assert f["latency_std_s"]["ttft_s"] == pytest.approx(np.std([0.1, 0.3]))
    assert f["latency_percentiles_s"]["itl_s"]["p99"] == pytest.approx(
        np.percentile([0.1, 0.2, 0.1, 0.05], 99)
    )
    assert f["goodput"] is None and f["miss_causes"] is None  # live: causes unknown


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0.1, 100))
def test_std_and_percentile_are_numpys(values: list[float], q: float) -> None:
    assert std(values) == pytest.approx(float(np.std(values)), rel=1e-9, abs=1e-6)
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


def test_goodput_counts_requests_meeting_every_slo() -> None:
    # a: TTFT 100 ms, TPOT 133 ms, E2E 500 ms; b: TTFT 300 ms, TPOT 50 ms, E2E 350 ms
    assert good_requests(RECS, {"ttft": 200}) == 1
    assert good_requests(RECS, {"tpot": 60}) == 1
    assert good_requests(RECS, {"ttft": 301, "tpot": 140, "e2el": 501}) == 2
    assert good_requests(RECS, {"ttft": 301, "e2el": 400}) == 1
    f = latency_figures(RECS, duration_s=2.0, goodput_slo_ms={"ttft": 200})
    assert f["goodput"] == {
        "slo_ms": {"ttft": 200},
        "good_requests": 1,
        "good_fraction": 0.5,
        "request_goodput_per_s": 0.5,
    }


def test_option_parsers_name_the_bad_item() -> None:
    assert parse_goodput("ttft:200,tpot:50") == {"ttft": 200.0, "tpot": 50.0}
    assert parse_goodput(["ttft:200", "e2el:1000"]) == {"ttft": 200.0, "e2el": 1000.0}
    assert parse_goodput(None) is None
    for bad in ("ttft", "itl:5", "ttft:x", "ttft:-1", "ttft:nan", ","):
        with pytest.raises(ConfigError, match="--goodput"):
            parse_goodput(bad)
    assert parse_percentiles("50,90,99.9") == (50.0, 90.0, 99.9)
    for bad in ("0", "101", "p99", ""):
        with pytest.raises(ConfigError, match="--percentiles"):
            parse_percentiles(bad)


def test_vllm_bench_export_has_vllms_keys_in_milliseconds() -> None:
    res = build_result("openai", RECS, wall_s=3.0, record_source="usage.prompt_tokens_details")
    s = res.summary
    out = vllm_bench_metrics(s, res.records, percentiles=(50.0, 99.9), goodput_slo_ms={"ttft": 200})
    assert out["completed"] == 2 and out["failed"] == 1
    assert out["total_input_tokens"] == 200 and out["total_output_tokens"] == 6
    assert out["duration"] == s["simulated_duration_s"] == pytest.approx(1.35)
    assert out["request_throughput"] == s["request_throughput_per_s"]
    assert out["request_goodput"] == pytest.approx(1 / 1.35)
    assert out["mean_ttft_ms"] == pytest.approx(200.0)
    assert out["median_ttft_ms"] == pytest.approx(200.0)
    assert out["std_ttft_ms"] == pytest.approx(100.0)
    assert out["p99.9_ttft_ms"] == pytest.approx(np.percentile([100, 300], 99.9))
    assert out["mean_itl_ms"] == pytest.approx(112.5)
    assert out["mean_e2el_ms"] == pytest.approx(1e3 * s["e2e_s"]["mean"])
    assert out["mean_tpot_ms"] == pytest.approx((400 / 3 + 50) / 2)
    json.dumps(out, allow_nan=False)


def test_every_summary_has_the_latency_keys_and_sim_miss_causes() -> None:
    recs = [
        RequestRecord("x", 0.0, 32, 2, first_token_s=0.1, finish_s=0.2, miss_cause="cold"),
        RequestRecord("y", 0.0, 32, 2, first_token_s=0.1, finish_s=0.2, miss_cause="evicted"),
        RequestRecord("z", 0.0, 32, 2, first_token_s=0.1, finish_s=0.2, miss_cause="cold"),
    ]
    s = build_result("sim", recs, wall_s=1.0, record_source="simulated").summary
    assert s["miss_causes"] == {
        "cold": 2,
        "evicted": 1,
        "below_block": 0,
        "last_token": 0,
        "none": 0,
    }
    assert s["itl_s"]["mean"] is None and s["latency_std_s"]["itl_s"] is None


def test_live_kv_usage_comes_from_the_sampled_metrics() -> None:
    ts = {"t_s": [0.0, 1.0, 2.0], "kv_cache_usage_perc": [0.1, 0.5, 0.3]}
    s = build_result(
        "openai", RECS, wall_s=3.0, record_source="usage.prompt_tokens_details", timeseries=ts
    ).summary
    assert s["kv_cache_usage_perc_max"] == 0.5
    assert s["kv_cache_usage_perc_mean"] == pytest.approx(0.3)
    none = build_result("openai", RECS, wall_s=3.0, record_source=None).summary
    assert none["kv_cache_usage_perc_max"] is None  # no samples: unknown


def test_sglang_cached_tokens_give_the_prefix_cache_figures() -> None:
    # SGLang: sglang:prompt_tokens_total and sglang:cached_tokens_total, no query counter
    s = server_summary({"prompt_tokens": 1000.0, "prompt_tokens_cached": 250.0})
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"]) == (1000, 250)
    # vLLM's own query and hit counters win
    v = server_summary(
        {
            "prefix_cache_queries": 900.0,
            "prefix_cache_hits": 100.0,
            "prompt_tokens": 1000.0,
            "prompt_tokens_cached": 250.0,
        }
    )
    assert (v["prefix_cache_queries"], v["prefix_cache_hits"]) == (900, 100)
    assert "prefix_cache_queries" not in server_summary({"prompt_tokens": 10.0})


def test_points_csv_flattens_nested_figures() -> None:
    pts = [
        {"concurrency": 1, "ttft_s": {"p50": 0.1, "p99": None}, "wall_time_s": 2.0},
        {"concurrency": 2, "ttft_s": {"p50": 0.2, "p99": 0.3}, "extra": "x"},
    ]
    assert points_csv(pts).splitlines() == [
        "concurrency,ttft_s.p50,ttft_s.p99,wall_time_s,extra",
        "1,0.1,,2.0,",
        "2,0.2,0.3,,x",
    ]


def test_line_progress_prints_every_tenth_and_the_last() -> None:
    buf = io.StringIO()
    p = LineProgress("replay", 100, stream=buf, every_s=3600.0)
    for _ in range(100):
        p.advance()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "replay: 10/100 (10%)" and lines[-1] == "replay: 100/100 (100%)"
    assert len(lines) == 10
