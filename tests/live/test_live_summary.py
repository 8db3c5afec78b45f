"""Client-health figures, and a live run's usage-based prefix figures, on hand-made records."""

from __future__ import annotations

import pytest

from kvlab.backends.base import build_result
from kvlab.backends.live_summary import client_figures
from kvlab.results import RequestRecord, count_errors, summarize


def rec(
    rid: str,
    sent: float,
    finish: float | None,
    *,
    due: float | None = None,
    cached: int | None = None,
    cls: str | None = None,
    error: str | None = None,
) -> RequestRecord:
    r = RequestRecord(
        rid,
        arrival_s=sent if due is None else due,
        prompt_tokens=100,
        output_tokens=10,
        sent_s=sent,
        cls=cls,
        cached_tokens=cached,
        computed_tokens=None,
        offload_hit_tokens=None,
        num_preemptions=None,
    )
    if finish is not None:
        r.first_token_s, r.finish_s = sent + 0.1, finish
    else:
        r.status, r.error = "failed", error or "http_5xx"
    return r


def test_achieved_concurrency_is_the_time_average_in_flight() -> None:
    # in flight: [0,4) one, [1,3) two -> area 4 + 2 = 6 over the window [0,4]
    recs = [rec("a", 0.0, 4.0), rec("b", 1.0, 3.0)]
    f = client_figures(recs, [0.0, 0.0], wall_s=4.0, cpu_s=0.4)
    assert f["achieved_concurrency_mean"] == pytest.approx(1.5)
    assert f["achieved_concurrency_max"] == 2
    assert f["client_cpu_per_request_ms"] == pytest.approx(200.0)
    assert f["client_cpu_fraction"] == pytest.approx(0.1)
    assert f["client_saturated"] is False


def test_back_to_back_requests_do_not_overlap() -> None:
    f = client_figures([rec("a", 0.0, 1.0), rec("b", 1.0, 2.0)], [], wall_s=2.0, cpu_s=0.0)
    assert f["achieved_concurrency_max"] == 1
    assert f["achieved_concurrency_mean"] == pytest.approx(1.0)


def test_lateness_and_saturation() -> None:
    recs = [rec("a", 0.5, 1.0, due=0.0), rec("b", 1.0, 2.0, due=1.0)]
    f = client_figures(recs, [0.0, 0.03], wall_s=2.0, cpu_s=0.1)
    assert f["send_lateness_s"]["max"] == pytest.approx(0.5)
    assert f["client_saturated"] is True  # timers 30 ms late at p99
    busy = client_figures(recs, [0.0], wall_s=1.0, cpu_s=0.95)
    assert busy["client_saturated"] is True  # 95% of a core


def test_usage_prefix_figures_are_null_when_nothing_was_reported() -> None:
    s = summarize([rec("a", 0, 1)])
    assert s["prefix_cache_queries"] is None and s["prefix_cache_hit_rate"] is None
    # one completed request that did not report its cached tokens makes the sum unknown
    s = summarize([rec("a", 0, 1, cached=64), rec("b", 0, 1)])
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"]) == (None, None)
    # failed requests do not count; reported zeros are zeros
    s = summarize([rec("a", 0, 1, cached=64), rec("b", 0, 1, cached=0), rec("c", 0, None)])
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"]) == (200, 64)
    assert s["prefix_cache_hit_rate"] == 0.32
    # usage never says which tier hit, nor how often a request was preempted
    assert s["external_prefix_cache_hits"] is None and s["num_preemptions"] is None


def test_by_class_and_error_counts() -> None:
    recs = [
        rec("a", 0, 1, cls="x", cached=50),
        rec("b", 0, 2, cls="y"),
        rec("c", 0, None, cls="y", error="timeout"),
    ]
    res = build_result("openai", recs, wall_s=2.0, record_source="usage.prompt_tokens_details")
    g = res.summary["by_class"]
    assert g["x"]["prefix_cache_hit_rate"] == 0.5
    assert g["x"]["prefix_cache_source"] == "usage.prompt_tokens_details"
    assert g["y"]["prefix_cache_hit_rate"] is None and g["y"]["num_failed"] == 1
    assert g["y"]["prefix_cache_source"] is None and g["y"]["num_preemptions"] is None
    assert res.summary["prefix_cache_source"] is None  # class y's hits are unknown
    assert count_errors(recs) == {"timeout": 1}
    assert res.summary["errors_by_kind"] == {"timeout": 1}
