"""How far a simulated run's latencies are from a real run's, request by request."""

from __future__ import annotations

from typing import Any

METRICS = ("ttft_s", "tpot_s", "e2e_s")


def per_request_errors(real: Any, sim: Any) -> dict[str, dict[str, float | int | None]]:
    """Per metric of :data:`METRICS`: the mean absolute relative error (``mape``) and the
    mean signed relative error (``bias``, > 0: simulated longer) of ``sim``'s records
    against ``real``'s, matched by request id, over the requests both know the metric of
    (``n``; None figures when none)."""
    by_id = {r.request_id: r for r in sim.records}
    out: dict[str, dict[str, float | int | None]] = {}
    for metric in METRICS:
        rel = []
        for r in real.records:
            s = by_id.get(r.request_id)
            a, b = getattr(r, metric), None if s is None else getattr(s, metric)
            if a and b is not None:
                rel.append((b - a) / a)
        out[metric] = {
            "mape": sum(map(abs, rel)) / len(rel) if rel else None,
            "bias": sum(rel) / len(rel) if rel else None,
            "n": len(rel),
        }
    return out
