"""One experiment point per run: the numbers the figures plot, computed from a RunResult."""

from __future__ import annotations

import math
from typing import Any

from kvlab.bench.target import Target, kv_usage_peak, server_cache_config
from kvlab.results import STATUS_OK, RunResult, dist


def wall_time_s(result: RunResult) -> float:
    """The run's wall time: the backend's own when reported (:attr:`RunResult.wall_s`;
    the older names in run directories written before), else first send to last finish."""
    own = result.wall_s
    if own is not None and own > 0:
        return own
    for key in ("wall_time_s", "wall_duration_s", "duration_s"):
        v = result.summary.get(key)
        if isinstance(v, int | float) and v > 0:
            return float(v)
    starts = [r.arrival_s for r in result.records]
    ends = [r.finish_s for r in result.records if r.finish_s is not None]
    return (max(ends) - min(starts)) if starts and ends else 0.0


def run_point(result: RunResult, target: Target, **labels: Any) -> dict[str, Any]:
    """Throughput, latency distributions and KV/memory figures of one run.

    Throughput is total tokens (prompt + output of completed requests) over
    the run's wall time: one aggregate rate, never a sum of per-request rates.
    ``latency_percentiles_s`` (TTFT, TPOT, ITL, E2E at the chosen percentiles) and,
    with goodput SLOs, ``goodput`` come from the run's summary when it has them.
    """
    done = [r for r in result.records if r.status == STATUS_OK and r.finish_s is not None]
    wall = wall_time_s(result)
    out_tokens = sum(r.output_tokens for r in done)
    total_tokens = out_tokens + sum(r.prompt_tokens for r in done)
    p: dict[str, Any] = dict(labels)
    p.update(
        {
            "num_requests": len(result.records),
            "num_completed": len(done),
            "wall_time_s": wall,
            "total_tokens": total_tokens,
            "output_tokens": out_tokens,
            "total_throughput_tok_per_s": total_tokens / wall if wall > 0 else None,
            "output_throughput_tok_per_s": out_tokens / wall if wall > 0 else None,
            "ttft_s": dist(r.ttft_s for r in done if r.ttft_s is not None),
            "tpot_s": dist(r.tpot_s for r in done if r.tpot_s is not None),
            "e2e_s": dist(r.e2e_s for r in done if r.e2e_s is not None),
        }
    )
    s = result.summary
    # the percentiles and goodput the experiment asked for (ExperimentResult.with_latency)
    if s.get("latency_percentiles_s") is not None:
        p["latency_percentiles_s"] = s["latency_percentiles_s"]
    if s.get("goodput") is not None:
        p["goodput"] = s["goodput"]
    bpt = target.kv_bytes_per_token()
    p["kv_bytes_per_token_formula"] = bpt
    if s.get("kv_cache_bytes_peak") is not None:  # measured in process (hf)
        p["kv_bytes_measured_peak"] = s["kv_cache_bytes_peak"]
        p["kv_bytes_tokens_peak"] = s.get("kv_token_bytes_peak")
        p["kv_padding_bytes_peak"] = s.get("kv_padding_bytes_peak")
        p["peak_rss_bytes"] = s.get("peak_rss_bytes")
        p["prefill_time_s"] = s.get("prefill_time_s")
        p["decode_time_s"] = s.get("decode_time_s")
    usage = kv_usage_peak(result)
    if usage is not None and done and usage == 0:
        # Requests ran but no sample caught them in flight: not a measurement of zero.
        p["kv_usage_peak"] = None
        p["kv_usage_missed"] = True
    elif usage is not None:  # sampled from a server
        p["kv_usage_peak"] = usage
        cc = server_cache_config(result)
        blocks, block_size = _int(cc.get("num_gpu_blocks")), _int(cc.get("block_size"))
        if blocks and block_size and bpt:
            usable = blocks - 1  # block 0 is vLLM's null block
            p["kv_blocks_peak"] = round(usage * usable)
            p["kv_bytes_server_peak"] = round(usage * usable) * block_size * bpt
            p["block_size"] = block_size
    for key in ("prefix_cache_hit_rate", "prefix_cache_hits", "prefix_cache_queries"):
        if key in s:
            p[key] = s[key]
    if "num_preemptions" in s:
        p["num_preemptions"] = s["num_preemptions"]
    return p


def class_latency(result: RunResult, cls: str) -> dict[str, Any]:
    """TTFT and E2E distributions of the completed requests of one class."""
    done = [
        r
        for r in result.records
        if r.cls == cls and r.status == STATUS_OK and r.finish_s is not None
    ]
    return {
        "num": len(done),
        "ttft_s": dist(r.ttft_s for r in done if r.ttft_s is not None),
        "e2e_s": dist(r.e2e_s for r in done if r.e2e_s is not None),
    }


def _int(v: Any) -> int | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return int(x) if math.isfinite(x) else None


__all__ = ["class_latency", "run_point", "wall_time_s"]
