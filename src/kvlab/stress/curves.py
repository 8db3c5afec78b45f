"""Degradation curves: a rate sweep to saturation, the knee and the bands, from the data.

One request shape (``seq_len`` prompt, ``gen_len`` output, no sharing) arrives open
loop at Poisson times of rate r (``num_requests`` requests per point; the *offered*
rate is the realized one, requests over the last arrival time). The rate starts
at a quarter of one request's service rate (1 / its E2E latency alone) and doubles until
the engine cannot keep up (completed requests per second below ``SATURATION_RATIO`` of
the offered rate) or ``max_points`` is reached; then the interval between the last rate
that kept up and the first that did not is bisected ``refine`` times.

From the points, ordered by rate:

* the **latency knee**: the first rate whose TTFT p99 exceeds ``KNEE_FACTOR`` times the
  TTFT p99 at the lowest rate (where the latency curve bends);
* **saturation**: the first rate the engine cannot keep up with;
* the **bands** of mean KV usage: *safe* below the usage of the last point before the
  knee, *warning* from there to the usage of the first point that preempts or saturates,
  *danger* above it. When a boundary is not reached, the band is open and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvlab.stress.evaluate import evaluate
from kvlab.stress.matrix import Scenario
from kvlab.stress.scenario import WorkloadCache, poisson_times
from kvlab.stress.slo import Slo

KNEE_FACTOR = 2.0
SATURATION_RATIO = 0.9


@dataclass(frozen=True)
class Curve:
    model: str
    gpu: str
    seq_len: int
    gen_len: int
    num_requests: int
    points: list[dict[str, Any]]
    knee_rate_per_s: float | None
    saturation_rate_per_s: float | None
    bands: dict[str, Any]
    num_runs: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpu": self.gpu,
            "seq_len": self.seq_len,
            "gen_len": self.gen_len,
            "num_requests": self.num_requests,
            "knee_rate_per_s": self.knee_rate_per_s,
            "saturation_rate_per_s": self.saturation_rate_per_s,
            "bands": self.bands,
            "num_runs": self.num_runs,
            "notes": self.notes,
            "points": self.points,
        }


def degradation_curve(
    base: Scenario,
    slo: Slo,
    cache: WorkloadCache,
    *,
    seq_len: int = 4096,
    gen_len: int = 256,
    num_requests: int = 200,
    max_points: int = 12,
    refine: int = 2,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> Curve:
    common = {"seq_len": seq_len, "gen_len": gen_len, "shared_prefix": 0.0, "claimed": {}}
    alone = evaluate(
        base.with_changes(
            name="alone",
            batch=1,
            concurrency=1,
            rounds=1,
            arrival="closed",
            rate_per_s=None,
            **common,
        ),
        slo,
        cache,
    )
    e2e = alone.metrics.get("e2e_p50_s")
    if not e2e:
        return Curve(
            base.model,
            base.gpu,
            seq_len,
            gen_len,
            num_requests,
            [],
            None,
            None,
            {"note": f"one request alone fails: {alone.reasons[0]}"},
            1,
        )
    points: list[dict[str, Any]] = []

    def point(rate: float) -> dict[str, Any]:
        s = base.with_changes(
            name=f"rate={rate:.4g}",
            batch=1,
            concurrency=1,
            rounds=num_requests,
            arrival="poisson",
            rate_per_s=rate,
            **common,
        )
        r = evaluate(s, slo, cache)
        m = r.metrics
        done = m.get("request_throughput_per_s") or 0.0
        times = poisson_times(s)
        offered = num_requests / times[-1]
        p = {
            "rate_per_s": rate,
            "offered_per_s": offered,
            "request_throughput_per_s": done,
            "output_throughput_tok_per_s": m.get("output_throughput_tok_per_s"),
            "ttft_p99_s": m.get("ttft_p99_s"),
            "tpot_p99_s": m.get("tpot_p99_s"),
            "preemptions_per_request": (m.get("num_preemptions") or 0) / num_requests,
            "kv_mean_usage": m.get("kv_mean_usage"),
            "kv_peak_usage": m.get("kv_peak_usage"),
            "kept_up": done >= SATURATION_RATIO * offered,
        }
        points.append(p)
        if on_point is not None:
            on_point(p)
        return p

    rate = 0.25 / e2e
    last_ok, first_bad = None, None
    for _ in range(max_points):
        p = point(rate)
        if p["kept_up"]:
            last_ok = rate
            rate *= 2
        else:
            first_bad = rate
            break
    if last_ok is not None and first_bad is not None:
        lo, hi = last_ok, first_bad
        for _ in range(refine):
            mid = (lo + hi) / 2
            if point(mid)["kept_up"]:
                lo = mid
            else:
                hi = mid
    points.sort(key=lambda q: q["rate_per_s"])
    knee, sat, bands, notes = _analyse(points)
    return Curve(
        base.model,
        base.gpu,
        seq_len,
        gen_len,
        num_requests,
        points,
        knee,
        sat,
        bands,
        len(points) + 1,
        notes,
    )


def _analyse(
    points: list[dict[str, Any]],
) -> tuple[float | None, float | None, dict[str, Any], list[str]]:
    notes: list[str] = []
    if not points:
        return None, None, {}, ["no points"]
    base_ttft = points[0]["ttft_p99_s"] or 0.0
    knee_i = next(
        (
            i
            for i, p in enumerate(points)
            if p["ttft_p99_s"] is not None and p["ttft_p99_s"] > KNEE_FACTOR * base_ttft
        ),
        None,
    )
    sat_i = next((i for i, p in enumerate(points) if not p["kept_up"]), None)
    bad_i = next(
        (i for i, p in enumerate(points) if not p["kept_up"] or p["preemptions_per_request"] > 0),
        None,
    )
    knee = None if knee_i is None else points[knee_i]["rate_per_s"]
    sat = None if sat_i is None else points[sat_i]["rate_per_s"]
    warn_from = None
    if knee_i is not None and knee_i > 0:
        warn_from = points[knee_i - 1]["kv_mean_usage"]
    elif knee_i == 0:
        notes.append("TTFT already bends at the lowest rate")
    else:
        notes.append("TTFT never bent within the rates tried")
    danger_from = None if bad_i is None else points[bad_i]["kv_mean_usage"]
    if bad_i is None:
        notes.append("no preemption or saturation within the rates tried")
    if warn_from is not None and danger_from is not None and danger_from < warn_from:
        warn_from = danger_from
    bands = {
        "safe_below_kv_usage": warn_from,
        "warning_from_kv_usage": warn_from,
        "danger_from_kv_usage": danger_from,
    }
    return knee, sat, bands, notes
