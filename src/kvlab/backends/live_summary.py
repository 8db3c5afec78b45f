"""Client-health figures of a live run, for its summary.

Achieved concurrency, send lateness, client CPU and saturation; the rest of a
live run's summary is what every backend's is (:func:`kvlab.backends.base.build_result`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kvlab.results import RequestRecord, dist

#: Client CPU share of one core above which a run is flagged ``client_saturated``.
SATURATED_CPU_FRACTION = 0.9
#: p99 timer lateness (seconds) above which a timed run is flagged ``client_saturated``.
SATURATED_LATENESS_S = 0.02


def client_figures(
    records: Sequence[RequestRecord], timer_lateness_s: Sequence[float], wall_s: float, cpu_s: float
) -> dict[str, Any]:
    """Client-side health of a run: achieved concurrency, send lateness, CPU.

    ``achieved_concurrency_mean`` is the time average of requests in flight
    (sent, not yet finished) between the first send and the last finish;
    ``client_saturated`` is set when the client used >= 90% of a core or its
    timers fired more than 20 ms late at p99.
    """
    spans = [
        (r.sent_s, r.finish_s)
        for r in records
        if r.sent_s is not None and r.finish_s is not None and r.finish_s >= r.sent_s
    ]
    mean_c = max_c = None
    if spans:
        starts = np.array([s for s, _ in spans])
        ends = np.array([e for _, e in spans])
        window = float(ends.max() - starts.min())
        mean_c = float((ends - starts).sum() / window) if window > 0 else float(len(spans))
        ev = np.concatenate(
            [np.stack([starts, np.ones_like(starts)], 1), np.stack([ends, -np.ones_like(ends)], 1)]
        )
        ev = ev[np.lexsort((ev[:, 1], ev[:, 0]))]
        max_c = int(np.cumsum(ev[:, 1]).max())
    sent = [r for r in records if r.sent_s is not None]
    late = dist(r.sent_s - r.arrival_s for r in sent if r.sent_s is not None)
    timer = dist(timer_lateness_s)
    cpu_frac = cpu_s / wall_s if wall_s > 0 else 0.0
    saturated = cpu_frac >= SATURATED_CPU_FRACTION or (
        timer["p99"] is not None and timer["p99"] > SATURATED_LATENESS_S
    )
    return {
        "achieved_concurrency_mean": mean_c,
        "achieved_concurrency_max": max_c,
        "send_lateness_s": {"p50": late["p50"], "p99": late["p99"], "max": late["max"]},
        "client_cpu_s": cpu_s,
        "client_cpu_per_request_ms": (1e3 * cpu_s / len(sent)) if sent else None,
        "client_cpu_fraction": cpu_frac,
        "client_saturated": bool(saturated),
    }


__all__ = ["SATURATED_CPU_FRACTION", "SATURATED_LATENESS_S", "client_figures"]
