"""Client-health figures and usage-based prefix figures, on hand-made records."""

from __future__ import annotations

import pytest

from kvlab.backends.live_summary import (
    by_class,
    client_figures,
    count_errors,
    usage_prefix_counters,
)
from kvlab.results import RequestRecord


def rec(
    rid: str,
    sent: float,
    finish: float | None,
    *,
    due: float | None = None,
    cached: int = 0,
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
    assert usage_prefix_counters([rec("a", 0, 1)])["prefix_cache_queries"] is None
    got = usage_prefix_counters([rec("a", 0, 1, cached=64), rec("b", 0, 1), rec("c", 0, None)])
    assert got == {
        "prefix_cache_queries": 200,
        "prefix_cache_hits": 64,
        "prefix_cache_source": "usage",
    }


def test_by_class_and_error_counts() -> None:
    recs = [
        rec("a", 0, 1, cls="x", cached=50),
        rec("b", 0, 2, cls="y"),
        rec("c", 0, None, cls="y", error="timeout"),
    ]
    g = by_class(recs)
    assert g["x"]["prefix_cache_hit_rate"] == 0.5
    assert g["y"]["prefix_cache_hit_rate"] is None and g["y"]["num_failed"] == 1
    assert count_errors(recs) == {"timeout": 1}
