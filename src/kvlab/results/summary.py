"""Summaries of request records: latency distributions, token counts, prefix-cache figures.

:func:`summarize` is the request-level summary every backend shares (vLLM's
metric names); :func:`group_summaries` is the same per request class or
session.

Percentiles: :func:`dist` gives numpy's numbers, computed in pure Python for
finite samples without zeros, because numpy is not otherwise imported by a
plain ``kvlab simulate`` of a workload file. Measured on a shared 2-core
machine: ``python -X importtime -c "import numpy"`` takes 0.11-0.17 s
(cumulative, 5 runs), while ``kvlab simulate`` of a 40-request workload file
takes 0.12 s end to end, and 0.22-0.29 s with numpy imported first; numpy
would double the command. On large samples numpy is faster (20,000 values:
0.8 ms against 3.2 ms, 200,000: 9 ms against 40 ms), a few milliseconds per
run, and the traces that produce such samples import numpy anyway (their
importers use it), so the pure-Python path costs little where it is slower.
``tests/test_results_encoding.py`` checks it against numpy bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter, sub
from typing import Any

from kvlab.results.records import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
)

_ARRIVAL = attrgetter("arrival_s")
_FIRST = attrgetter("first_token_s")
_FINISH = attrgetter("finish_s")
_OUTPUT = attrgetter("output_tokens")
_PROMPT = attrgetter("prompt_tokens")
_STATUS = attrgetter("status")
_CACHED = attrgetter("cached_tokens")
_OFFLOAD_HIT = attrgetter("offload_hit_tokens")
_PREEMPTIONS = attrgetter("num_preemptions")


def dist(values: Iterable[float]) -> dict[str, float | None]:
    """mean / p50 / p90 / p99 / max of ``values`` (None when empty).

    The numbers are numpy's (``mean``, ``percentile`` with linear
    interpolation, ``max``) to the last bit. Finite samples without zeros are
    computed in pure Python by the same arithmetic (:func:`_pairwise_sum` and
    :func:`_linear_percentile`), which spares importing numpy; any other sample
    goes through numpy itself.
    """
    a = [float(v) for v in values if v is not None]
    if not a:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    total = _pairwise_sum(a, 0, len(a))
    # A finite total means every value is finite (inf and nan never cancel out).
    # Zeros are excluded because the sign of a zero picked by numpy's partition
    # and max is an implementation detail.
    if not math.isfinite(total) or 0.0 in a:
        return _dist_numpy(a)
    a.sort()
    return {
        "mean": total / len(a),
        "p50": _linear_percentile(a, 0.5),
        "p90": _linear_percentile(a, 0.9),
        "p99": _linear_percentile(a, 0.99),
        "max": a[-1],
    }


def _dist_numpy(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    a = np.array(values, dtype=float)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "mean": float(a.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
    }


def _pairwise_sum(a: list[float], lo: int, n: int) -> float:
    """``a[lo:lo + n]`` summed in the order of numpy's float64 ``add.reduce``.

    numpy (loops_utils.h, ``pairwise_sum``): under 8 values a plain loop; up to
    128 eight interleaved partial sums combined as ((0+1)+(2+3))+((4+5)+(6+7)),
    then the remainder; above that, the two halves (the first a multiple of 8
    long) summed recursively.
    """
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[lo : lo + 8]
        end = lo + n - n % 8
        for j in range(lo + 8, end, 8):
            r0 += a[j]
            r1 += a[j + 1]
            r2 += a[j + 2]
            r3 += a[j + 3]
            r4 += a[j + 4]
            r5 += a[j + 5]
            r6 += a[j + 6]
            r7 += a[j + 7]
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for i in range(end, lo + n):
            res += a[i]
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


def _linear_percentile(ordered: list[float], q: float) -> float:
    """numpy's ``percentile(..., method="linear")`` of sorted finite values, ``q`` in [0, 1].

    The virtual index is (n - 1) q; at or beyond the last index both neighbours
    are the last value and the weight is taken from index -1, as numpy does;
    the interpolation is numpy's ``_lerp`` (from the nearer end when the weight
    is >= 0.5).
    """
    n = len(ordered)
    virtual = (n - 1) * q
    if virtual >= n - 1:
        lo = hi = -1
    else:
        lo = math.floor(virtual)
        hi = lo + 1
    t = virtual - lo
    a, b = ordered[lo], ordered[hi]
    diff = b - a
    if t >= 0.5:
        return b - diff * (1 - t)
    return a + diff * t


def summarize(
    records: Sequence[RequestRecord],
    *,
    duration_s: float | None = None,
    counters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Request-level summary shared by every backend.

    ``duration_s`` defaults to last finish - first arrival. ``counters`` are
    backend counters (prefix cache queries/hits, preemptions, evictions, usage,
    offload...) merged in as given; when absent, prefix-cache keys are derived
    from the records that queried the cache (:func:`prefix_queried`): queries =
    their prompt tokens, hits = GPU-tier cached tokens,
    ``external_prefix_cache_hits`` = lower-tier ones, ``num_preemptions`` =
    the records' preemptions. A figure is None (unknown) when a record it sums
    does not know its count (``None``, see :class:`RequestRecord`); hits then
    count every cached token when the tiers are unknown.
    """
    done = [r for r in records if r.status == STATUS_OK and r.finish_s is not None]
    if duration_s is None:
        starts = list(map(_ARRIVAL, records))
        ends = [e for e in map(_FINISH, done) if e is not None]
        duration_s = (max(ends) - min(starts)) if ends and starts else 0.0
    out_tokens = sum(map(_OUTPUT, done))
    prompt_tokens = sum(map(_PROMPT, done))
    statuses = list(map(_STATUS, records))
    # TTFT, TPOT and E2E exactly as the RequestRecord properties define them
    arrivals = list(map(_ARRIVAL, done))
    firsts = list(map(_FIRST, done))
    finishes = list(map(_FINISH, done))
    outputs = list(map(_OUTPUT, done))
    ttft = [f - a for f, a in zip(firsts, arrivals, strict=True) if f is not None]
    tpot = [
        (e - f) / (n - 1)
        for e, f, n in zip(finishes, firsts, outputs, strict=True)
        if f is not None and n >= 2
    ]
    e2e = [e - a for e, a in zip(finishes, arrivals, strict=True)]
    s: dict[str, Any] = {
        "num_requests": len(records),
        "num_completed": len(done),
        "num_rejected": statuses.count(STATUS_REJECTED),
        "num_failed": statuses.count(STATUS_FAILED),
        "num_unfinished": statuses.count(STATUS_UNFINISHED),
        "prompt_tokens": prompt_tokens,
        "output_tokens": out_tokens,
        "ttft_s": dist(ttft),
        "tpot_s": dist(tpot),
        "e2e_s": dist(e2e),
        "request_throughput_per_s": (len(done) / duration_s) if duration_s > 0 else None,
        "output_throughput_tok_per_s": (out_tokens / duration_s) if duration_s > 0 else None,
        "total_throughput_tok_per_s": (
            (out_tokens + prompt_tokens) / duration_s if duration_s > 0 else None
        ),
        "simulated_duration_s": duration_s,
    }
    # vLLM's split: prefix_cache_* counts the GPU tier, external_prefix_cache_* lower tiers.
    queried = prefix_queried(records)
    cached = list(map(_CACHED, queried))
    offloaded = list(map(_OFFLOAD_HIT, queried))
    preemptions = list(map(_PREEMPTIONS, records))
    if None in cached:
        s["prefix_cache_queries"] = s["prefix_cache_hits"] = None
    else:
        s["prefix_cache_queries"] = sum(map(_PROMPT, queried))
        tiers = [0 if o is None else o for o in offloaded] if None in offloaded else offloaded
        s["prefix_cache_hits"] = sum(map(sub, cached, tiers))
    s["external_prefix_cache_hits"] = None if None in offloaded else sum(offloaded)
    s["num_preemptions"] = None if None in preemptions else sum(preemptions)
    return with_counters(s, counters)


def prefix_queried(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """The records whose prompts queried the prefix cache: those admitted
    (``admitted_s`` set) and those that completed (a live server admits every
    request it answers, without telling when)."""
    return [r for r in records if r.admitted_s is not None or r.status == STATUS_OK]


def with_counters(summary: dict[str, Any], counters: Mapping[str, Any] | None) -> dict[str, Any]:
    """``summary`` with backend ``counters`` merged in (as :func:`summarize` does), its
    prefix-cache hit rate recomputed; the input's own keys are not changed.

    The hit rate is hits / queries; 0.0 when there were no queries; None when
    either figure is unknown (None), never 0.0 then.
    """
    s = dict(summary)
    s.pop("prefix_cache_hit_rate", None)  # recomputed last, as summarize orders it
    if counters:
        s.update(counters)
    qq, hh = s.get("prefix_cache_queries"), s.get("prefix_cache_hits")
    s["prefix_cache_hit_rate"] = None if qq is None or hh is None else (hh / qq) if qq else 0.0
    return s


def count_errors(records: Sequence[RequestRecord]) -> dict[str, int]:
    """Failed or unfinished records per ``error`` kind (:mod:`kvlab.backends.failures`),
    sorted by kind. Rejected records are left out: ``num_rejected`` counts them, and
    their ``error`` says why in words."""
    out: dict[str, int] = {}
    for r in records:
        if r.error and r.status != STATUS_REJECTED:
            out[r.error] = out.get(r.error, 0) + 1
    return dict(sorted(out.items()))


def group_summaries(
    records: Sequence[RequestRecord], key: str = "cls", *, duration_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """:func:`summarize` per value of a record attribute (``cls`` or ``session_id``)."""
    groups = _groups(records, key)
    return {k: summarize(v, duration_s=duration_s) for k, v in sorted(groups.items())}


def _groups(records: Sequence[RequestRecord], key: str) -> dict[str, list[RequestRecord]]:
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        groups.setdefault(str(getattr(r, key)), []).append(r)
    return groups


def summary_with_groups(
    records: Sequence[RequestRecord],
    *,
    duration_s: float | None,
    counters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``summarize(records, duration_s=..., counters=...)`` plus ``by_class``:
    :func:`group_summaries` by ``cls`` (computed once when all records share one)."""
    groups = _groups(records, "cls")
    if len(groups) == 1:
        whole = summarize(records, duration_s=duration_s)
        s = with_counters(whole, counters)
        s["by_class"] = {k: whole for k in groups}
        return s
    s = summarize(records, duration_s=duration_s, counters=counters)
    s["by_class"] = group_summaries(records, duration_s=duration_s)
    return s


__all__ = [
    "count_errors",
    "dist",
    "group_summaries",
    "prefix_queried",
    "summarize",
    "summary_with_groups",
    "with_counters",
]
