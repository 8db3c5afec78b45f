"""Advice on a plan: the verdict with its reasons, notes, and the what-if table.

Owns the words :func:`kvlab.plan.plan` prints: why a configuration fits or not (each
reason with its numbers), notes on what the figures assume, and the what-ifs that vary
one input at a time: KV cache in fp8, another TP size, half and a quarter of the
context, other block sizes, and a CPU offload tier. A what-if re-plans through the
``rerun`` callable the planner passes in, so this module never builds a plan itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from kvlab.errors import ConfigError
from kvlab.hardware import GIB, MIB, GpuSpec
from kvlab.models.spec import ModelSpec, check_tp
from kvlab.plan.result import PlanResult, finite

#: Block sizes tried in the what-if table.
WHATIF_BLOCK_SIZES = (16, 32, 64)
#: TP sizes tried in the what-if table.
WHATIF_TPS = (2, 4, 8)

#: Plans the base plan's inputs again with some changed, by keyword: ``kv_dtype``,
#: ``tp``, ``context`` or ``block_size``.
Rerun = Callable[..., PlanResult]


def gib(n: float) -> str:
    """Bytes as GiB, or as MiB below 1 GiB."""
    if abs(n) < GIB:
        return f"{n / MIB:,.2f} MiB"
    return f"{n / GIB:,.2f} GiB"


# ---------------------------------------------------------------------------
# Verdict and notes
# ---------------------------------------------------------------------------


def verdict(r: PlanResult, spec: ModelSpec, gpu: GpuSpec, requested: int) -> tuple[bool, list[str]]:
    """``(fits, reasons)`` for ``r``; ``requested`` is vLLM's requested memory in bytes
    (GPU memory x utilization, rounded up).

    Fits when vLLM starts and ``r.concurrency`` sequences of ``r.context_tokens`` fit in
    its usable blocks and its ``max_num_seqs``; otherwise every reason that fails.
    """
    cap = r.capacity
    bad: list[str] = []
    if r.context_tokens > spec.max_context:
        bad.append(
            f"context {r.context_tokens:,} tokens exceeds the model's maximum of "
            f"{spec.max_context:,} "
            "(vLLM refuses a larger --max-model-len)"
        )
    if r.kv_memory_source == "given":
        total = r.weights_bytes + r.available_kv_bytes
        if total > gpu.memory_bytes:
            bad.append(
                f"weights {gib(r.weights_bytes)} + KV cache {gib(r.available_kv_bytes)} "
                f"= {gib(total)} "
                f"exceed the GPU's {gib(gpu.memory_bytes)}"
            )
    elif r.weights_bytes > requested:
        bad.append(
            f"weights need {gib(r.weights_bytes)} per GPU but only {gib(requested)} "
            f"({r.gpu_memory_utilization:g} of {gib(gpu.memory_bytes)}) is usable; "
            "try more TP or a larger GPU"
        )
    elif r.available_kv_bytes <= 0:
        bad.append(
            f"no memory left for the KV cache: {gib(requested)} usable "
            f"- weights {gib(r.weights_bytes)} "
            f"- overhead {gib(r.overhead_bytes)} = {gib(r.available_kv_bytes)}"
        )
    if cap.blocks_before_override is not None:
        total = r.weights_bytes + r.overhead_bytes + cap.available_kv_bytes
        if total > gpu.memory_bytes:
            bad.append(
                f"vLLM would fail allocating the KV cache: {cap.num_gpu_blocks:,} override "
                f"blocks need {gib(cap.available_kv_bytes)}, with weights "
                f"{gib(r.weights_bytes)} and overhead {gib(r.overhead_bytes)} that is "
                f"{gib(total)}, more than the GPU's {gib(gpu.memory_bytes)}"
            )
    if cap.available_kv_bytes > 0 and cap.groups and not r.vllm_starts:
        hint = ""
        if r.estimated_max_model_len:
            hint = f"; the longest context that fits is {r.estimated_max_model_len:,} tokens"
        bad.append(
            f"vLLM would not start: one request at {r.context_tokens:,} tokens needs "
            f"{gib(cap.bytes_per_request)} of KV cache but "
            f"{gib(cap.available_kv_bytes - cap.bytes_per_block)} "
            f"is available{hint}"
        )
    need_blocks = r.concurrency * cap.blocks_per_request
    usable = max(0, cap.num_gpu_blocks - 1)  # block 0 is vLLM's null block
    if cap.groups and r.available_kv_bytes > 0 and need_blocks > usable:
        short = (need_blocks - usable) * cap.bytes_per_block
        bad.append(
            f"KV for {r.concurrency:,} sequences at {r.context_tokens:,} tokens needs "
            f"{need_blocks:,} blocks "
            f"({gib(need_blocks * cap.bytes_per_block)}) but {usable:,} usable blocks "
            f"({gib(usable * cap.bytes_per_block)}) are available: short by {gib(short)}; "
            f"max concurrency {cap.max_concurrency:.2f}"
        )
    if r.concurrency > r.max_num_seqs:
        bad.append(
            f"vLLM runs at most max_num_seqs={r.max_num_seqs:,} sequences at once; "
            f"{r.concurrency:,} requested (raise --max-num-seqs)"
        )
    if bad:
        return False, bad
    ok = [
        f"{r.concurrency:,} sequence(s) at {r.context_tokens:,} tokens use {need_blocks:,} "
        f"of {usable:,} usable blocks ({gib(need_blocks * cap.bytes_per_block)} of "
        f"{gib(cap.available_kv_bytes)} KV memory); "
        f"max concurrency {cap.max_concurrency:.2f}"
    ]
    return True, ok


def notes(r: PlanResult, spec: ModelSpec, kv_dtype: str | None) -> list[str]:
    """What the figures of ``r`` assume: a raised block size, a what-if KV dtype, an
    estimated KV memory, MXFP4 padding, the tokens a sliding window reserves."""
    out = []
    if r.capacity.block_size != r.requested_block_size:
        out.append(
            f"block size raised from {r.requested_block_size} to {r.capacity.block_size} "
            "so an attention "
            "page holds a Mamba state page (vLLM does the same for hybrid models)"
        )
    if kv_dtype is not None and kv_dtype.lower() in ("int8", "int4"):
        out.append(
            f"{kv_dtype} KV is a what-if dtype; vLLM's per-token-head int modes add scale bytes"
        )
    cap = r.capacity
    if cap.blocks_before_override is not None:
        more = ""
        if cap.num_gpu_blocks > cap.blocks_before_override:
            more = (
                "; that is more than the KV memory holds, so the cache tensors may not fit "
                "on the device"
            )
        out.append(
            f"--num-gpu-blocks-override: vLLM uses {cap.num_gpu_blocks:,} blocks "
            f"({gib(cap.available_kv_bytes)}) instead of the {cap.blocks_before_override:,} "
            f"the KV memory gives{more}"
        )
    if r.kv_memory_source == "estimated" and cap.blocks_before_override is None:
        out.append(
            f"available KV memory is an estimate (overhead {gib(r.overhead_bytes)}); pass "
            "--kv-cache-memory-bytes for vLLM-exact numbers"
        )
    fmt = spec.weight_format
    if r.weight_dtype is None and fmt is not None and fmt.method == "mxfp4":
        out.append(
            "weights are the MXFP4 checkpoint's bytes; vLLM may pad the experts' dimensions "
            "for its MoE kernel (e.g. 2880 to 2944 or 3072) and load a few GiB more"
        )
    if any(g.kind == "sliding" for g in r.capacity.groups):
        out.append(
            "sliding-window groups reserve window-1 + "
            f"{r.capacity.in_flight_tokens:,} in-flight tokens "
            "per request (vLLM SlidingWindowSpec)"
        )
    return out


# ---------------------------------------------------------------------------
# What-ifs
# ---------------------------------------------------------------------------


def _row(what: str, base: PlanResult, other: PlanResult) -> dict[str, Any]:
    ratio = None
    if (
        base.max_concurrency
        and not math.isinf(base.max_concurrency)
        and not math.isinf(other.max_concurrency)
    ):
        ratio = other.max_concurrency / base.max_concurrency if base.max_concurrency > 0 else None
    return {
        "what": what,
        "kv_dtype": other.kv_dtype,
        "tp": other.tp,
        "context_tokens": other.context_tokens,
        "block_size": other.block_size,
        "available_kv_bytes": other.available_kv_bytes,
        "num_gpu_blocks": other.num_gpu_blocks,
        "kv_cache_tokens": other.kv_cache_tokens,
        "max_concurrency": finite(other.max_concurrency),
        "concurrency_ratio": ratio,
        "fits": other.fits,
        "reason": other.reasons[0] if other.reasons else "",
    }


def whatifs(
    base: PlanResult, spec: ModelSpec, gpu: GpuSpec, rerun: Rerun, offload_gb: float
) -> list[dict[str, Any]]:
    """The what-if rows for ``base``, in table order; a row that does not apply says
    why under ``skipped``."""
    rows: list[dict[str, Any]] = []
    if base.kv_dtype.lower() not in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        rows.append(_row("KV cache in fp8", base, rerun(kv_dtype="fp8")))
    for tp in WHATIF_TPS:
        if tp == base.tp:
            continue
        try:
            check_tp(spec, tp)
        except ConfigError as e:
            rows.append({"what": f"TP {tp}", "skipped": str(e)})
            continue
        rows.append(_row(f"TP {tp}", base, rerun(tp=tp)))
    for div, label in ((2, "half"), (4, "quarter")):
        ctx = base.context_tokens // div
        if ctx >= 1:
            rows.append(_row(f"{label} context ({ctx:,} tokens)", base, rerun(context=ctx)))
    for bs in WHATIF_BLOCK_SIZES:
        if bs == base.requested_block_size:
            continue
        other = rerun(block_size=bs)
        same = (other.num_gpu_blocks * other.block_size, other.kv_cache_tokens) == (
            base.num_gpu_blocks * base.block_size,
            base.kv_cache_tokens,
        )
        if other.block_size == base.block_size or same:
            rows.append(
                {"what": f"block size {bs}", "skipped": "same capacity as the current block size"}
            )
        else:
            rows.append(_row(f"block size {bs}", base, other))
    if offload_gb > 0:
        rows.append(_offload_row(base, gpu, offload_gb))
    return rows


def _offload_row(base: PlanResult, gpu: GpuSpec, offload_gb: float) -> dict[str, Any]:
    what = f"CPU offload tier of {offload_gb:g} GiB"
    if not gpu.has_host_tier:
        return {"what": what, "skipped": f"{gpu.name} has unified memory: no separate host tier"}
    tier = round(offload_gb * GIB)
    parked = tier // base.sequence_bytes if base.sequence_bytes else 0
    link = gpu.host_link_h2d_bytes_per_s
    assert link is not None
    reload_s = gpu.host_link_latency_s + base.sequence_bytes / link
    return {
        "what": what,
        "offload_bytes": tier,
        "parked_sequences": parked,
        "sequence_bytes": base.sequence_bytes,
        "reload_s_per_sequence": reload_s,
        "note": (
            f"parks {parked:,} idle sequences of {base.context_tokens:,} tokens; reloading one "
            f"({gib(base.sequence_bytes)}) over the {link / 1e9:g} GB/s host link takes "
            f"{reload_s * 1e3:,.1f} ms"
        ),
    }


__all__ = ["WHATIF_BLOCK_SIZES", "WHATIF_TPS", "Rerun", "gib", "notes", "verdict", "whatifs"]
