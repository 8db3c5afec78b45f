"""The pure-Python summaries and writers of kvlab.results equal their reference forms.

References: numpy for ``dist`` (mean, linear percentiles, max), ``json.dumps``
per record for ``requests.jsonl``, the csv module for ``timeseries.csv``, and
the per-record formulas of the RequestRecord properties for ``summarize``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.results import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
    dist,
    records_to_jsonl,
    summarize,
    timeseries_to_csv,
)
from kvlab.results.run_dir import _fmt

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on inf and nan


def numpy_dist(values: list[float]) -> dict[str, float | None]:
    a = np.fromiter((v for v in values if v is not None), dtype=float)
    if a.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "mean": float(a.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal to the bit (nan equal to nan, -0.0 distinct from 0.0)."""
    return json.dumps(a) == json.dumps(b) and all(
        (x is None and y is None) or math.copysign(1, x) == math.copysign(1, y)
        for x, y in zip(a.values(), b.values(), strict=True)
        if x is not None and not math.isnan(x)
    )


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(floats, st.integers(-(10**6), 10**6), st.none()), max_size=300))
def test_dist_equals_numpy(values: list[Any]) -> None:
    assert same(dist(values), numpy_dist(values)), values


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-6, 1e4), min_size=1, max_size=40), st.integers(0, 5))
def test_dist_equals_numpy_on_latency_like_samples(base: list[float], reps: int) -> None:
    values = base * (reps + 1)  # ties included
    assert same(dist(values), numpy_dist(values))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 127, 128, 129, 1000, 8191, 8192, 8193, 20000, 65537])
def test_dist_equals_numpy_on_sizes_around_the_summation_blocks(n: int) -> None:
    rng = random.Random(n)
    values = [rng.lognormvariate(0, 3) for _ in range(n)]
    assert same(dist(values), numpy_dist(values))


def reference_jsonl(records: list[RequestRecord]) -> str:
    return "".join(json.dumps(r.to_dict(), allow_nan=False) + "\n" for r in records)


text = st.text(max_size=8)
maybe_float = st.one_of(st.none(), floats)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "request_id": st.one_of(text, st.integers()),
    "arrival_s": st.one_of(floats, st.integers(0, 10), st.booleans()),
    "session_id": st.one_of(st.none(), text),
    "status": st.sampled_from([STATUS_OK, STATUS_REJECTED, 'é\n"x"']),
    "first_token_s": maybe_float,
    "finish_s": st.one_of(maybe_float, st.integers(0, 3)),
    "cached_tokens": st.one_of(st.integers(0, 10**20), st.floats(0, 5)),
    "miss_cause": st.one_of(st.none(), st.sampled_from(["cold", "evicted"])),
    "hit_tokens_by_retention": st.one_of(
        st.none(),
        st.dictionaries(text, st.integers(0, 100), max_size=3),
        st.dictionaries(text, floats, max_size=2),
        st.dictionaries(st.integers(0, 3), st.integers(0, 3), max_size=2),
    ),
    "chunk_times_s": st.one_of(st.none(), st.lists(floats, max_size=3)),
}


@st.composite
def record_lists(draw: st.DrawFn) -> list[RequestRecord]:
    # a few fields vary per record, the rest per list, so that columns are often uniform
    if draw(st.booleans()):  # no column null in some records only (the template path)
        varying = {"request_id", "arrival_s", "cached_tokens", "status"}
        fixed = {k: draw(v) for k, v in field_values.items() if k not in varying}
    else:
        fixed = {k: draw(v) for k, v in field_values.items() if draw(st.booleans())}
    out = []
    for _ in range(draw(st.integers(0, 6))):
        kw = {k: draw(v) for k, v in field_values.items() if k not in fixed}
        kw.update(fixed)
        kw.setdefault("request_id", "r")
        kw.setdefault("arrival_s", 0.0)
        out.append(RequestRecord(prompt_tokens=5, output_tokens=2, **kw))
    return out


def outcome(f: Any, *args: Any) -> tuple[str, str]:
    try:
        return ("ok", f(*args))
    except Exception as e:  # the same error type and message as the reference
        return (type(e).__name__, str(e))


@settings(max_examples=400, deadline=None)
@given(record_lists())
def test_requests_jsonl_equals_json_dumps(records: list[RequestRecord]) -> None:
    assert outcome(records_to_jsonl, records) == outcome(reference_jsonl, records)


def reference_csv(ts: dict[str, list[Any]]) -> str:
    if not ts:
        return ""
    cols = list(ts)
    n = max(len(v) for v in ts.values())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for i in range(n):
        w.writerow([_fmt(ts[c][i]) if i < len(ts[c]) else "" for c in cols])
    return buf.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.lists(
            st.one_of(floats, st.integers(-(10**17), 10**17), st.sampled_from([1e15, -0.0])),
            max_size=5,
        ),
        max_size=4,
    ),
    st.booleans(),
)
def test_timeseries_csv_equals_the_csv_module(ts: dict[str, list[Any]], odd: bool) -> None:
    if odd and ts:  # a non-number sends the table through the csv module
        next(iter(ts.values())).append("a,b")
    assert timeseries_to_csv(ts) == reference_csv(ts)


def reference_summary(records: list[RequestRecord], duration_s: float | None) -> dict[str, Any]:
    """summarize() as it was written first: one generator per quantity."""
    done = [r for r in records if r.status == STATUS_OK and r.finish_s is not None]
    if duration_s is None:
        starts = [r.arrival_s for r in records]
        ends = [r.finish_s for r in done if r.finish_s is not None]
        duration_s = (max(ends) - min(starts)) if ends and starts else 0.0
    out_tokens = sum(r.output_tokens for r in done)
    prompt_tokens = sum(r.prompt_tokens for r in done)
    s: dict[str, Any] = {
        "num_requests": len(records),
        "num_completed": len(done),
        "num_rejected": sum(r.status == STATUS_REJECTED for r in records),
        "num_failed": sum(r.status == STATUS_FAILED for r in records),
        "num_unfinished": sum(r.status == STATUS_UNFINISHED for r in records),
        "prompt_tokens": prompt_tokens,
        "output_tokens": out_tokens,
        "ttft_s": numpy_dist([r.ttft_s for r in done if r.ttft_s is not None]),  # type: ignore[misc]
        "tpot_s": numpy_dist([r.tpot_s for r in done if r.tpot_s is not None]),  # type: ignore[misc]
        "e2e_s": numpy_dist([r.e2e_s for r in done if r.e2e_s is not None]),  # type: ignore[misc]
        "request_throughput_per_s": (len(done) / duration_s) if duration_s > 0 else None,
        "output_throughput_tok_per_s": (out_tokens / duration_s) if duration_s > 0 else None,
        "total_throughput_tok_per_s": (
            (out_tokens + prompt_tokens) / duration_s if duration_s > 0 else None
        ),
        "simulated_duration_s": duration_s,
    }
    # every record that queried the prefix cache: admitted, or completed (live servers)
    queried = [r for r in records if r.admitted_s is not None or r.status == STATUS_OK]
    if any(r.cached_tokens is None for r in queried):  # unknown: None, never 0
        s["prefix_cache_queries"] = s["prefix_cache_hits"] = None
    else:
        s["prefix_cache_queries"] = sum(r.prompt_tokens for r in queried)
        s["prefix_cache_hits"] = sum(
            (r.cached_tokens or 0) - (r.offload_hit_tokens or 0) for r in queried
        )
    offloaded = [r.offload_hit_tokens for r in queried]
    s["external_prefix_cache_hits"] = None if None in offloaded else sum(offloaded)  # type: ignore[arg-type]
    preemptions = [r.num_preemptions for r in records]
    s["num_preemptions"] = None if None in preemptions else sum(preemptions)  # type: ignore[arg-type]
    qq, hh = s.get("prefix_cache_queries"), s.get("prefix_cache_hits")
    s["prefix_cache_hit_rate"] = None if qq is None or hh is None else (hh / qq) if qq else 0.0
    return s


@st.composite
def run_records(draw: st.DrawFn) -> list[RequestRecord]:
    out = []
    # half the runs know every count (simulator); in the others some are None (live)
    count = st.integers(0, 64) | st.none() if draw(st.booleans()) else st.integers(0, 64)
    for i in range(draw(st.integers(0, 30))):
        arrival = draw(st.floats(0, 100))
        status = draw(st.sampled_from([STATUS_OK] * 4 + [STATUS_REJECTED, STATUS_UNFINISHED]))
        first = arrival + draw(st.floats(0, 5)) if draw(st.integers(0, 5)) else None
        finish = (first or arrival) + draw(st.floats(0, 50)) if draw(st.integers(0, 5)) else None
        cached = draw(count)
        offload = draw(count)
        out.append(
            RequestRecord(
                str(i),
                arrival,
                prompt_tokens=draw(st.integers(1, 100)),
                output_tokens=draw(st.integers(1, 5)),
                status=status,
                admitted_s=arrival if draw(st.booleans()) else None,
                first_token_s=first,
                finish_s=finish,
                cached_tokens=cached,
                offload_hit_tokens=None if offload is None else min(offload, cached or 0),
                num_preemptions=draw(count),
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(run_records(), st.one_of(st.none(), st.floats(0, 1000)))
def test_summarize_equals_the_per_record_formulas(
    records: list[RequestRecord], duration_s: float | None
) -> None:
    assert json.dumps(summarize(records, duration_s=duration_s)) == json.dumps(
        reference_summary(records, duration_s)
    )


def test_a_percent_sign_in_a_column_that_never_changes_is_written_once() -> None:
    """Constant columns go into the line's template with '%' escaped as '%%'; a run
    whose every column is constant must still unescape it (it once wrote "%%")."""
    for n in (1, 3):
        recs = [RequestRecord("a%b", 0.0, 1, 1, session_id="%", cls="100%")] * n
        expected = "".join(json.dumps(r.to_dict(), allow_nan=False) + "\n" for r in recs)
        assert records_to_jsonl(recs) == expected
