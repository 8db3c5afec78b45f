"""One scenario through ``kvlab.plan`` and the simulator: its figures, verdict and risk.

:func:`evaluate` never raises for a scenario that cannot run: a model that does not fit
the GPU (vLLM would not start), a request larger than the whole KV cache, or a prompt
beyond the context window is a ``fail`` verdict whose reasons say why, with numbers.

Figures (:class:`ScenarioResult.metrics`), all computed:

* ``kv_demand_bytes``: what every request of the scenario would hold at once at its full
  length (``kvlab.plan`` bytes per sequence at ``seq_len + gen_len`` times requests);
* ``kv_capacity_bytes``: the KV pool vLLM would allocate (usable blocks x block bytes);
* ``kv_peak_bytes`` / ``kv_peak_usage``: the simulated peak of referenced blocks, which
  the engine caps at the pool by admitting only what fits;
* prefix hit rate from the workload's content, evicted blocks, preemptions, TTFT / TPOT /
  E2E p50 and p99, throughput, and goodput (requests per second meeting the latency SLOs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import CapacityError, ConfigError
from kvlab.stress.matrix import Scenario
from kvlab.stress.scenario import WorkloadCache
from kvlab.stress.slo import Slo

VERDICTS = ("pass", "warn", "fail")
RISKS = ("low", "medium", "high")
#: Preemptions per request at or above which a run is a preemption cascade (high risk).
CASCADE_PREEMPTIONS_PER_REQUEST = 0.5
#: Share of requests whose prefix hit stopped at an evicted block from which a run thrashes.
THRASH_MISSES_PER_REQUEST = 0.1


@dataclass(frozen=True)
class ScenarioResult:
    """A scenario's verdict (``pass``/``warn``/``fail``) with reasons, figures and risk."""

    scenario: Scenario
    verdict: str
    reasons: tuple[str, ...]
    metrics: dict[str, Any]
    plan: dict[str, Any]
    risk: str
    risk_reasons: tuple[str, ...]
    run: Any = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.verdict != "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.to_dict(),
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "risk": self.risk,
            "risk_reasons": list(self.risk_reasons),
            "metrics": self.metrics,
            "plan": self.plan,
        }


def sim_config(s: Scenario, block_size: int) -> Any:
    from kvlab.sim.config import SimConfig

    return SimConfig(
        model=s.model,
        gpu=s.gpu,
        block_size=block_size,
        kv_dtype=s.kv_dtype,
        tp=s.tp,
        max_model_len=s.max_model_len,
        max_num_seqs=s.max_num_seqs,
        max_num_batched_tokens=s.max_num_batched_tokens,
        offload_gb=s.offload_gb,
        enable_prefix_caching=s.enable_prefix_caching,
        seed=s.seed,
    )


def plan_for(s: Scenario) -> Any:
    """``kvlab.plan`` for the scenario: every request held at once at full length."""
    from kvlab.models.catalog import get_model
    from kvlab.plan import plan

    spec = get_model(s.model)
    context = min(s.seq_len + s.gen_len, s.max_model_len or spec.max_context)
    return plan(
        spec,
        s.gpu,
        kv_dtype=s.kv_dtype,
        tp=s.tp,
        context_tokens=context,
        concurrency=s.batch * s.concurrency,
        max_num_seqs=s.max_num_seqs,
        max_num_batched_tokens=s.max_num_batched_tokens,
        offload_gb=s.offload_gb or 0.0,
        enable_prefix_caching=s.enable_prefix_caching,
        whatifs=False,
    )


def evaluate(
    s: Scenario,
    slo: Slo,
    cache: WorkloadCache | None = None,
    *,
    keep_run: bool = False,
) -> ScenarioResult:
    """Plan and simulate ``s``; judge it against ``slo``."""
    from kvlab.models.catalog import get_model

    spec = get_model(s.model)
    max_len = s.max_model_len or spec.max_context
    try:
        p = plan_for(s)
    except ConfigError as e:
        return _failed(s, f"plan: {e}", {}, "high")
    block_size = p.block_size
    plan_d = {
        "num_gpu_blocks": p.num_gpu_blocks,
        "block_size": block_size,
        "kv_bytes_per_token": p.kv_bytes_per_token,
        "sequence_bytes": p.sequence_bytes,
        "available_kv_bytes": p.available_kv_bytes,
        "weights_bytes": p.weights_bytes,
        "max_concurrency": p.max_concurrency,
        "vllm_starts": p.vllm_starts,
        "kv_dtype": p.kv_dtype,
        "max_num_seqs": p.max_num_seqs,
        "max_num_batched_tokens": p.max_num_batched_tokens,
        "max_model_len": max_len,
    }
    n = s.num_requests
    capacity = (p.num_gpu_blocks - 1) * p.kv_bytes_per_token * block_size
    per_seq = p.kv_bytes_per_token * (s.seq_len + s.gen_len)
    base = {
        "num_requests": n,
        "kv_demand_bytes": per_seq * s.batch * s.concurrency,
        "kv_capacity_bytes": capacity,
    }
    if not p.vllm_starts:
        why = "; ".join(p.reasons) or "weights and overhead exceed the GPU memory"
        return _failed(s, f"vLLM would not start (OOM at start-up): {why}", plan_d, "high", base)
    if s.seq_len >= max_len:
        reason = (
            f"prompt {s.seq_len:,} tokens >= max_model_len {max_len:,}: vLLM rejects every "
            f"request (HTTP 400)"
        )
        return _failed(s, reason, plan_d, "high", {**base, "num_never_fit": n})
    cache = cache or WorkloadCache()
    try:
        prepared = cache.get(s, block_size)
        from kvlab.sim.engine import simulate

        run = simulate(prepared, sim_config(s, block_size))
    except CapacityError as e:
        return _failed(s, f"cannot run: {e}", plan_d, "high", {**base, "num_never_fit": n})
    summ = run.summary
    metrics = {**base, **_metrics(run, slo, p.kv_bytes_per_token, block_size)}
    bad, warn = slo.check(summ)
    verdict = "fail" if bad else ("warn" if warn else "pass")
    reasons = bad + warn or [
        f"meets every SLO: TTFT p99 {metrics['ttft_p99_s']:.3f} s, TPOT p99 "
        f"{metrics['tpot_p99_s']:.4f} s, peak KV {metrics['kv_peak_usage']:.1%}, "
        f"{metrics['num_preemptions']} preemptions"
    ]
    risk, risk_reasons = _risk(metrics, plan_d)
    return ScenarioResult(
        s, verdict, tuple(reasons), metrics, plan_d, risk, risk_reasons, run if keep_run else None
    )


def _metrics(run: Any, slo: Slo, kv_per_token: int, block_size: int) -> dict[str, Any]:
    s = run.summary
    good = 0
    evicted_misses = 0
    for r in run.records:
        if r.miss_cause == "evicted":
            evicted_misses += 1
        ttft, tpot = r.ttft_s, r.tpot_s
        if (
            r.status == "ok"
            and ttft is not None
            and ttft <= slo.ttft_p99_s
            and (tpot is None or tpot <= slo.tpot_p99_s)
        ):
            good += 1
    dur = s.get("simulated_duration_s") or 0.0
    usable = max(1, (s["num_gpu_blocks"] or 2) - 1)
    peak_use = s.get("kv_cache_usage_perc_max") or 0.0
    return {
        "num_completed": s["num_completed"],
        "num_rejected": s["num_rejected"],
        "num_never_fit": s["num_rejected"],
        "kv_peak_usage": peak_use,
        "kv_mean_usage": s.get("kv_cache_usage_perc_mean"),
        "kv_peak_bytes": round(peak_use * usable) * block_size * kv_per_token,
        "prefix_cache_hit_rate": s.get("prefix_cache_hit_rate"),
        "num_evicted_blocks": s.get("num_evicted_blocks"),
        "num_evicted_misses": evicted_misses,
        "num_preemptions": s.get("num_preemptions") or 0,
        "num_gpu_blocks": s.get("num_gpu_blocks"),
        "ttft_p50_s": s["ttft_s"]["p50"],
        "ttft_p99_s": s["ttft_s"]["p99"],
        "tpot_p50_s": s["tpot_s"]["p50"],
        "tpot_p99_s": s["tpot_s"]["p99"],
        "e2e_p50_s": s["e2e_s"]["p50"],
        "e2e_p99_s": s["e2e_s"]["p99"],
        "output_throughput_tok_per_s": s.get("output_throughput_tok_per_s"),
        "request_throughput_per_s": s.get("request_throughput_per_s"),
        "goodput_req_per_s": good / dur if dur > 0 else None,
        "good_fraction": good / max(1, len(run.records)),
        "simulated_duration_s": dur,
    }


def _risk(m: dict[str, Any], plan_d: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    reasons: list[str] = []
    level = 0
    n = max(1, m["num_requests"])
    pre = m["num_preemptions"]
    if pre:
        rate = pre / n
        if rate >= CASCADE_PREEMPTIONS_PER_REQUEST:
            level = 2
            reasons.append(f"preemption cascade: {pre:,} preemptions for {n:,} requests")
        else:
            level = max(level, 1)
            reasons.append(f"{pre:,} preemptions ({rate:.2f} per request)")
    lost = m.get("num_evicted_misses") or 0
    if lost / n >= THRASH_MISSES_PER_REQUEST:
        level = max(level, 1)
        reasons.append(
            f"cache thrash: {lost:,} of {n:,} requests missed blocks evicted before their "
            f"reuse ({m.get('num_evicted_blocks') or 0:,} evicted blocks)"
        )
    if m.get("num_rejected"):
        level = 2
        reasons.append(f"{m['num_rejected']:,} requests rejected")
    if not reasons:
        reasons.append("starts (plan), no preemption, no thrash (simulated)")
    return RISKS[level], tuple(reasons)


def _failed(
    s: Scenario,
    reason: str,
    plan_d: dict[str, Any],
    risk: str,
    metrics: dict[str, Any] | None = None,
) -> ScenarioResult:
    m = {"num_requests": s.num_requests, **(metrics or {})}
    return ScenarioResult(s, "fail", (reason,), m, plan_d, risk, (reason,))
