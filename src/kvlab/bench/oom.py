"""OOM risk: will a setting run out of KV memory? A tier, the reasons, and what to change.

:func:`assess` asks :func:`kvlab.plan.plan` (vLLM's own sizing, REFERENCE
sections 1-2) how many KV blocks ``concurrency`` sequences of ``context_tokens``
need against the blocks the memory holds, and, given a workload, runs it through
the simulator on exactly that many blocks (preemptions, rejections, peak usage).

Tiers, from the demand ratio ``r = concurrency x blocks per request / usable
blocks`` (kvlab's thresholds, not vLLM's):

* **high**: vLLM would not start (one request at the context does not fit, or
  the weights do not), ``r > 1`` (the sequences cannot all be resident: vLLM
  preempts, a framework without paging runs out of memory), or the simulated
  workload had requests rejected;
* **medium**: ``0.8 < r <= 1`` (under 20% headroom), or the simulated workload
  was preempted or filled the cache (peak usage >= 95%);
* **low**: everything else.

Every recommendation carries its numbers: KV in fp8 (the plan's fp8 what-if:
its capacity and maximum concurrency), a shorter context (the longest context
at which ``concurrency`` sequences fit), fewer sequences (the most that fit at
the context), tensor parallelism (the smallest TP of the plan's what-ifs that
fits) and a CPU offload tier (the plan's offload what-if; it keeps evicted
prefix blocks for reuse and adds no room for running sequences, so it is
offered for prefix-reuse workloads, never as a fix for the demand).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kvlab.errors import ConfigError

#: Demand ratios at which the tier rises (see the module docstring).
MEDIUM_RATIO = 0.8
HIGH_RATIO = 1.0
#: Simulated peak KV usage that counts as a full cache.
FULL_USAGE = 0.95
TIERS: tuple[str, ...] = ("low", "medium", "high")


@dataclass(frozen=True)
class Recommendation:
    """One change and what it would give (``numbers``: figures named with units)."""

    what: str
    numbers: dict[str, Any]
    fits: bool | None
    text: str


@dataclass(frozen=True)
class OomRisk:
    """The verdict of :func:`assess`. ``demand_ratio`` is None when vLLM has no usable
    block at all; ``simulated`` holds the simulator's figures when a workload was given."""

    tier: str
    demand_ratio: float | None
    demand_blocks: int
    usable_blocks: int
    block_size: int
    context_tokens: int
    concurrency: int
    vllm_starts: bool
    reasons: list[str]
    recommendations: list[Recommendation] = field(default_factory=list)
    simulated: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        lines = [f"OOM risk: {self.tier.upper()}"]
        lines += [f"  - {r}" for r in self.reasons]
        if self.recommendations:
            lines.append("  recommendations:")
            lines += [f"    * {r.text}" for r in self.recommendations]
        return "\n".join(lines)


def assess(
    model: Any,
    gpu: Any,
    *,
    context_tokens: int,
    concurrency: int,
    kv_dtype: str | None = None,
    tp: int = 1,
    kv_cache_memory_bytes: int | None = None,
    block_size: int | None = None,
    workload: Any = None,
    offload_gb: float | None = None,
) -> OomRisk:
    """The OOM risk of ``concurrency`` sequences of ``context_tokens`` of ``model`` on
    ``gpu`` (see the module docstring); ``workload`` adds a simulated run on the
    planned blocks, ``offload_gb`` the size of the offload what-if (default: twice
    the KV memory)."""
    from functools import partial

    from kvlab.plan import plan

    if concurrency < 1 or context_tokens < 1:
        raise ConfigError("concurrency and context_tokens must be at least 1")
    planned = partial(
        plan,
        model,
        gpu,
        kv_dtype=kv_dtype,
        tp=tp,
        context_tokens=context_tokens,
        concurrency=concurrency,
        kv_cache_memory_bytes=kv_cache_memory_bytes,
        block_size=block_size,
    )
    # the KV memory first (it sizes the offload what-if), then the plan with it
    kv_gib = planned(whatifs=False).available_kv_bytes / 2**30
    off = offload_gb if offload_gb is not None else max(1.0, round(2 * kv_gib))
    p = planned(offload_gb=off)
    cap = p.capacity
    usable = max(0, cap.num_gpu_blocks - 1)
    per_request = cap.blocks_per_request
    demand = concurrency * per_request
    ratio = demand / usable if usable else None
    reasons = [
        f"{concurrency} sequence(s) of {context_tokens:,} tokens need {demand:,} blocks of "
        f"{cap.block_size} tokens; the KV memory ({kv_gib:.2f} GiB) holds {usable:,} usable "
        + (f"blocks (demand {100 * ratio:.0f}% of capacity)" if ratio is not None else "blocks")
    ]
    tier = "low"
    if not p.vllm_starts or ratio is None or ratio > HIGH_RATIO:
        tier = "high"
    elif ratio > MEDIUM_RATIO:
        tier = "medium"
    if not p.vllm_starts:
        reasons += list(p.reasons)  # the planner's: why vLLM would not start, with numbers
    elif ratio is not None and ratio > HIGH_RATIO:
        reasons.append(
            f"at most {int(cap.max_concurrency)} such sequences are resident at once "
            f"(vLLM's maximum concurrency {cap.max_concurrency:.2f}x): the rest wait or are "
            "preempted; an engine without paging runs out of memory"
        )
    simulated = None
    if workload is not None and p.vllm_starts and usable > 0:
        simulated = _simulate(workload, model, gpu, p)
        if simulated["num_rejected"]:
            tier = "high"
            reasons.append(
                f"simulated: {simulated['num_rejected']} request(s) rejected "
                "(longer than the cache)"
            )
        elif simulated["num_preemptions"] or (simulated["kv_cache_usage_perc_max"] or 0) >= (
            FULL_USAGE
        ):
            tier = max(tier, "medium", key=TIERS.index)
            reasons.append(
                f"simulated: {simulated['num_preemptions']} preemption(s), peak KV usage "
                f"{100 * (simulated['kv_cache_usage_perc_max'] or 0):.0f}%"
            )
        else:
            reasons.append(
                f"simulated: no preemption, peak KV usage "
                f"{100 * (simulated['kv_cache_usage_perc_max'] or 0):.0f}%"
            )
    recs = [] if tier == "low" else _recommendations(p, concurrency, context_tokens)
    return OomRisk(
        tier=tier,
        demand_ratio=ratio,
        demand_blocks=demand,
        usable_blocks=usable,
        block_size=cap.block_size,
        context_tokens=context_tokens,
        concurrency=concurrency,
        vllm_starts=p.vllm_starts,
        reasons=reasons,
        recommendations=recs,
        simulated=simulated,
    )


def _simulate(workload: Any, model: Any, gpu: Any, p: Any) -> dict[str, Any]:
    """The workload on the planned blocks, at its own concurrency (vLLM's default
    max_num_seqs): a workload that runs more at once than the stated shape shows here."""
    from kvlab.sim.config import SimConfig
    from kvlab.sim.engine import simulate

    cfg = SimConfig(
        model=model,
        gpu=gpu,
        block_size=p.capacity.block_size,
        num_blocks=p.capacity.num_gpu_blocks,
        max_model_len=p.context_tokens,
        kv_dtype=p.kv_dtype,
    )
    s = simulate(workload, cfg).summary
    keys = (
        "num_requests",
        "num_rejected",
        "num_preemptions",
        "kv_cache_usage_perc_max",
        "num_gpu_blocks",
    )
    return {k: s.get(k) for k in keys}


def _recommendations(p: Any, concurrency: int, context: int) -> list[Recommendation]:
    cap = p.capacity
    usable = max(0, cap.num_gpu_blocks - 1)
    out: list[Recommendation] = []
    rows = {row.get("what", ""): row for row in p.whatifs}
    fp8 = next((r for w, r in rows.items() if w.startswith("KV cache in fp8")), None)
    if fp8 is not None and "skipped" not in fp8:
        out.append(
            Recommendation(
                "fp8 KV cache",
                {
                    "num_gpu_blocks": fp8["num_gpu_blocks"],
                    "max_concurrency": fp8["max_concurrency"],
                },
                fp8["fits"],
                f"KV in fp8 (--kv-cache-dtype fp8): {fp8['num_gpu_blocks']:,} blocks, maximum "
                f"concurrency {fp8['max_concurrency']:.2f}x"
                + (" - fits" if fp8["fits"] else " - still does not fit"),
            )
        )
    per_seq_blocks = usable // concurrency
    short = per_seq_blocks * cap.block_size
    if 0 < short < context:
        out.append(
            Recommendation(
                "shorter context",
                {"context_tokens": short},
                True,
                f"a shorter context: {concurrency} sequence(s) fit at up to {short:,} tokens "
                f"(--max-model-len {short}), from {context:,}",
            )
        )
    fewer = int(cap.max_concurrency)
    if fewer < concurrency:
        out.append(
            Recommendation(
                "fewer sequences",
                {"max_num_seqs": fewer},
                fewer >= 1,
                f"fewer sequences: at most {fewer} of {context:,} tokens at once "
                f"(--max-num-seqs {max(fewer, 1)})"
                if fewer >= 1
                else "fewer sequences cannot help: not even one sequence of "
                f"{context:,} tokens fits",
            )
        )
    tps = [r for w, r in rows.items() if w.startswith("TP ") and "skipped" not in r]
    tp = next((r for r in tps if r["fits"]), None)
    if tp is not None:
        out.append(
            Recommendation(
                "tensor parallelism",
                {"tp": tp["tp"], "max_concurrency": tp["max_concurrency"]},
                True,
                f"tensor parallelism {tp['tp']} (--tensor-parallel-size {tp['tp']}): maximum "
                f"concurrency {tp['max_concurrency']:.2f}x per replica",
            )
        )
    off = next((r for w, r in rows.items() if w.startswith("CPU offload")), None)
    if off is not None and "skipped" not in off:
        numbers = {k: off[k] for k in ("offload_bytes",) if k in off}
        out.append(
            Recommendation(
                "CPU offload",
                numbers,
                None,
                f"a {off['what']}: keeps evicted prefix blocks for reuse; "
                "adds no room for running sequences",
            )
        )
    return out


def experiment_shape(experiment: str, params: Any) -> tuple[int, int]:
    """(concurrency, tokens per sequence) at the peak of a bench experiment: its most
    concurrent requests and its longest prompt plus output."""
    import importlib

    if params is None:
        mod = importlib.import_module(f"kvlab.bench.{experiment}")
        params = getattr(mod, f"{experiment.capitalize()}Params")()
    if experiment == "concurrency":
        return max(params.levels), params.prompt_tokens + params.output_tokens
    if experiment == "seqlen":
        return 1, max(params.prompt_lengths) + params.output_tokens
    if experiment == "mixed":
        return (
            params.num_short + params.num_long,
            params.long_prompt_tokens + params.long_output_tokens,
        )
    if experiment == "prefix":
        return (
            params.num_requests,
            params.prefix_tokens + params.suffix_tokens + params.output_tokens,
        )
    raise ConfigError(f"no OOM check for experiment {experiment!r}")


def host_available_bytes() -> int | None:
    """``MemAvailable`` of this host (Linux ``/proc/meminfo``), None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def bench_check(
    experiment: str,
    params: Any,
    *,
    model_config: str | None,
    gpu: str | None,
    backend: str,
    kv_dtype: str | None = None,
) -> tuple[OomRisk | None, str]:
    """The OOM verdict of a bench run before it starts, and a line saying what it was
    checked against (or why it was not checked). ``gpu`` names the accelerator;
    without one the in-process backend is checked against this host's available
    memory less the weights (it runs on the CPU), and a server is not checked."""
    if model_config is None:
        return None, "OOM check skipped: no model config (--model-dir or --model-config)"
    concurrency, tokens = experiment_shape(experiment, params)
    if gpu is not None:
        risk = assess(
            model_config, gpu, context_tokens=tokens, concurrency=concurrency, kv_dtype=kv_dtype
        )
        return risk, f"OOM check against {gpu}"
    if backend != "hf":
        return None, "OOM check skipped: give --gpu for the server's accelerator"
    avail = host_available_bytes()
    if avail is None:
        return None, "OOM check skipped: this host's available memory is unknown"
    from kvlab.plan import plan

    weights = plan(model_config, "h100", context_tokens=tokens, whatifs=False).weights_bytes
    kv = avail - weights
    if kv < 1:
        return None, (
            f"OOM check: the weights ({weights / 2**30:.2f} GiB) exceed this host's "
            f"available memory ({avail / 2**30:.2f} GiB)"
        )
    risk = assess(
        model_config,
        "h100",
        context_tokens=tokens,
        concurrency=concurrency,
        kv_dtype=kv_dtype,
        kv_cache_memory_bytes=kv,
    )
    return risk, (
        f"OOM check against this host's available memory ({avail / 2**30:.2f} GiB, "
        f"{kv / 2**30:.2f} GiB after the weights; blocks of {risk.block_size} tokens)"
    )


__all__ = ["TIERS", "OomRisk", "Recommendation", "assess", "bench_check"]
