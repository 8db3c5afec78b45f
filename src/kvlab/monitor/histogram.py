"""Prometheus histograms read from ``/metrics`` samples: cumulative buckets,
their increase over an interval, and quantiles of that increase.

A histogram ``name`` is exposed as ``name_bucket{le="..."}`` samples (cumulative
counts, one per upper bound, ``+Inf`` last), summed here over every other label
(``engine``, ``model_name``). :func:`quantile` interpolates linearly inside the
bucket holding the rank, as Prometheus' ``histogram_quantile`` does
(prometheus/promql/quantile.go), so the figures agree with a PromQL dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from kvlab.backends.metrics import Samples

#: One histogram: (upper bound, cumulative count) sorted by bound, ``+Inf`` last.
Buckets = tuple[tuple[float, float], ...]


def buckets(samples: Samples, name: str) -> Buckets | None:
    """The cumulative buckets of histogram ``name`` summed over labels; None if absent."""
    rows = samples.get(f"{name}_bucket")
    if not rows:
        return None
    by_le: dict[float, float] = {}
    for labels, v in rows:
        le = labels.get("le")
        if le is None or math.isnan(v):
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        by_le[bound] = by_le.get(bound, 0.0) + v
    if not by_le:
        return None
    return tuple(sorted(by_le.items()))


def delta(before: Buckets | None, after: Buckets) -> tuple[Buckets, bool]:
    """``after - before`` per bucket and whether the counts went down (a restart).

    After a restart the counts start again from zero, so the increase over the
    interval is ``after`` itself (Prometheus' ``increase`` does the same). Buckets
    whose bounds changed between the two are also taken as a restart.
    """
    if before is None:
        return after, False
    old = dict(before)
    if set(old) != {b for b, _ in after}:
        return after, True
    out = tuple((b, c - old[b]) for b, c in after)
    if any(c < 0 for _, c in out):
        return after, True
    return out, False


def quantile(q: float, cumulative: Sequence[tuple[float, float]]) -> float | None:
    """The ``q``-quantile (0-1) of cumulative buckets; None when they hold no observation.

    Linear interpolation inside the bucket that holds rank ``q * total``; the lowest
    bucket interpolates from 0 (when its bound is positive); a rank in the ``+Inf``
    bucket returns the largest finite bound.
    """
    if not cumulative:
        return None
    total = cumulative[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(cumulative):
        if count >= rank:
            if math.isinf(bound):
                return cumulative[i - 1][0] if i > 0 else None
            if i == 0 and bound <= 0:
                return bound
            in_bucket = count - prev_count
            if in_bucket <= 0:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket
        prev_bound, prev_count = bound, count
    return cumulative[-1][0]


def first_present(samples: Samples, names: Sequence[str]) -> tuple[str, Buckets] | None:
    """The first of ``names`` that ``samples`` has as a histogram, with its buckets."""
    for n in names:
        b = buckets(samples, n)
        if b is not None:
            return n, b
    return None


#: Histogram names per server profile: TTFT and inter-token latency, first present wins.
HISTOGRAMS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "vllm": {
        "ttft": ("vllm:time_to_first_token_seconds",),
        "itl": (
            "vllm:inter_token_latency_seconds",
            "vllm:time_per_output_token_seconds",
            "vllm:request_time_per_output_token_seconds",
        ),
    },
    "sglang": {
        "ttft": ("sglang:time_to_first_token_seconds",),
        "itl": ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    },
    "llamacpp": {},
}

__all__ = ["HISTOGRAMS", "Buckets", "buckets", "delta", "first_present", "quantile"]
