"""The plan: one model on one GPU, from options to a :class:`PlanResult` with its advice.

Owns :func:`plan`: it validates the options, fills in vLLM's defaults
(:mod:`kvlab.plan.defaults`), prices the memory, sizes the cache
(:mod:`kvlab.plan.groups`, :mod:`kvlab.plan.capacity`) and asks
:mod:`kvlab.plan.advice` for the verdict, the notes and the what-ifs.

Available KV memory is exact when given (``kv_cache_memory_bytes``, like
vLLM's ``--kv-cache-memory-bytes``); otherwise it is
``ceil(memory * gpu_memory_utilization) - weights - overhead`` with a
documented overhead *estimate* (:class:`kvlab.plan.overhead.Overhead`). Weights are
the checkpoint's bytes as it ships (:func:`kvlab.models.spec.weights_bytes`), per GPU.
"""

from __future__ import annotations

import math
from dataclasses import replace
from numbers import Integral, Real
from typing import Any

from kvlab.errors import ConfigError
from kvlab.hardware import GpuSpec, get_gpu
from kvlab.models.spec import (
    RECURRENT_KINDS,
    ModelSpec,
    check_tp,
    dtype_bytes,
    kv_bytes_per_token,
    weights_bytes,
    weights_format,
)
from kvlab.plan import advice
from kvlab.plan.capacity import compute_capacity, estimate_max_model_len
from kvlab.plan.defaults import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    default_batch_limits,
    default_block_size,
)
from kvlab.plan.groups import layer_caches, layer_state_bytes
from kvlab.plan.overhead import estimate_overhead
from kvlab.plan.result import PlanResult


def plan(
    model: ModelSpec | str,
    gpu: GpuSpec | str,
    *,
    kv_dtype: str | None = None,
    tp: int = 1,
    context_tokens: int | None = None,
    concurrency: int = 1,
    block_size: int | None = None,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    kv_cache_memory_bytes: int | None = None,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    offload_gb: float = 0.0,
    weight_dtype: str | None = None,
    overhead_bytes: int | None = None,
    async_scheduling: bool = True,
    enable_prefix_caching: bool = True,
    whatifs: bool = True,
    num_gpu_blocks_override: int | None = None,
) -> PlanResult:
    """Plan ``model`` on ``gpu``: KV bytes, vLLM's block capacity, and a verdict.

    ``context_tokens`` defaults to the model's maximum context (what vLLM uses
    as ``--max-model-len`` by default). ``kv_cache_memory_bytes`` bypasses the
    memory estimate exactly as vLLM's ``--kv-cache-memory-bytes`` does;
    ``overhead_bytes`` replaces the :class:`Overhead` estimate; weights are priced as
    the checkpoint ships (:func:`kvlab.models.spec.weights_bytes`: MXFP4 / FP8 parts of a
    quantized checkpoint at their packed size) unless ``weight_dtype`` (e.g. ``fp8``,
    ``bf16``) prices every weight in one dtype. ``block_size`` defaults to
    vLLM's choice (:func:`default_block_size`). ``max_num_*``
    default to vLLM's API-server defaults for the GPU. ``async_scheduling``
    (vLLM's default on GPUs; its CPU backend turns it off) doubles the in-flight
    tokens a sliding-window layer reserves. ``enable_prefix_caching`` (default
    on) makes vLLM keep 2 state pages per Mamba layer group and request.
    ``num_gpu_blocks_override`` sets the block count whatever the memory gives, as
    vLLM's ``--num-gpu-blocks-override`` does (what-ifs keep it).
    """
    spec = _resolve_model(model)
    gpu_spec = get_gpu(gpu)
    if block_size is None:
        block_size = default_block_size(spec, gpu_spec)
    if weight_dtype is not None:
        dtype_bytes(weight_dtype)
    _validate(
        spec,
        tp=tp,
        context_tokens=context_tokens,
        concurrency=concurrency,
        block_size=block_size,
        gpu_memory_utilization=gpu_memory_utilization,
        kv_cache_memory_bytes=kv_cache_memory_bytes,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        offload_gb=offload_gb,
        kv_dtype=kv_dtype,
        overhead_bytes=overhead_bytes,
    )
    if num_gpu_blocks_override is not None and num_gpu_blocks_override < 1:
        raise ConfigError(f"num_gpu_blocks_override must be >= 1, got {num_gpu_blocks_override}")
    context = spec.max_context if context_tokens is None else context_tokens
    dflt_tokens, dflt_seqs = default_batch_limits(gpu_spec)
    batched = max_num_batched_tokens or dflt_tokens
    seqs = max_num_seqs or dflt_seqs
    result = _plan_one(
        spec,
        gpu_spec,
        kv_dtype=kv_dtype,
        tp=tp,
        context=context,
        concurrency=concurrency,
        block_size=block_size,
        util=gpu_memory_utilization,
        kv_cache_memory_bytes=kv_cache_memory_bytes,
        batched=batched,
        seqs=seqs,
        overhead_bytes=overhead_bytes,
        async_scheduling=async_scheduling,
        prefix_caching=enable_prefix_caching,
        weight_dtype=weight_dtype,
        num_gpu_blocks_override=num_gpu_blocks_override,
    )
    if not whatifs:
        return result
    rerun = _rerun(result, spec, gpu_spec, kv_cache_memory_bytes)
    rows = advice.whatifs(result, spec, gpu_spec, rerun, offload_gb)
    return replace(result, whatifs=tuple(rows))


def _plan_one(
    spec: ModelSpec,
    gpu: GpuSpec,
    *,
    kv_dtype: str | None,
    tp: int,
    context: int,
    concurrency: int,
    block_size: int,
    util: float,
    kv_cache_memory_bytes: int | None,
    batched: int,
    seqs: int,
    overhead_bytes: int | None,
    async_scheduling: bool,
    prefix_caching: bool,
    weight_dtype: str | None = None,
    num_gpu_blocks_override: int | None = None,
) -> PlanResult:
    weights = math.ceil(weights_bytes(spec, tp, weight_dtype))
    overhead = estimate_overhead(spec, tp=tp, max_num_batched_tokens=batched, max_num_seqs=seqs)
    overhead_total = overhead.total_bytes if overhead_bytes is None else overhead_bytes
    requested = math.ceil(gpu.memory_bytes * util)  # vLLM request_memory
    if kv_cache_memory_bytes is not None:
        available, source = kv_cache_memory_bytes, "given"
    else:
        available = requested - weights - overhead_total
        source = "estimated" if overhead_bytes is None else "given overhead"
    layers = layer_caches(spec, kv_dtype=kv_dtype, tp=tp, block_size=block_size)
    in_flight = batched * (2 if async_scheduling else 1)
    mamba_pages = 2 if prefix_caching else 1
    cap = compute_capacity(
        layers,
        max_model_len=context,
        available_kv_bytes=available,
        in_flight_tokens=in_flight,
        mamba_pages=mamba_pages,
        num_gpu_blocks_override=num_gpu_blocks_override,
    )
    seq_bytes, state_bytes = _sequence_bytes(spec, context, kv_dtype, tp)
    starts = cap.starts()
    est_len = None
    if not starts and cap.available_kv_bytes > 0 and cap.groups:
        est_len = estimate_max_model_len(
            layers,
            cap.available_kv_bytes,
            upper=context,
            in_flight_tokens=in_flight,
            mamba_pages=mamba_pages,
        )
    kv_name = kv_dtype or spec.dtype
    base = PlanResult(
        model=spec.name,
        gpu=gpu.name,
        kv_dtype=kv_name,
        tp=tp,
        context_tokens=context,
        concurrency=concurrency,
        gpu_memory_bytes=gpu.memory_bytes,
        gpu_memory_utilization=util,
        weights_bytes=weights,
        overhead=overhead,
        overhead_bytes=overhead_total,
        kv_memory_source=source,
        available_kv_bytes=available,
        kv_bytes_per_token=math.ceil(kv_bytes_per_token(spec, kv_dtype, tp)),
        sequence_bytes=seq_bytes,
        state_bytes_per_sequence=state_bytes,
        max_num_batched_tokens=batched,
        max_num_seqs=seqs,
        async_scheduling=async_scheduling,
        enable_prefix_caching=prefix_caching,
        requested_block_size=block_size,
        weight_dtype=weight_dtype,
        weights_format=weights_format(spec, weight_dtype),
        capacity=cap,
        vllm_starts=starts,
        estimated_max_model_len=est_len,
        fits=False,
        reasons=(),
        notes=(),
    )
    fits, reasons = advice.verdict(base, spec, gpu, requested)
    return replace(
        base, fits=fits, reasons=tuple(reasons), notes=tuple(advice.notes(base, spec, kv_dtype))
    )


def _rerun(
    base: PlanResult, spec: ModelSpec, gpu: GpuSpec, kv_cache_memory_bytes: int | None
) -> advice.Rerun:
    """Plans ``base``'s inputs again with the keyword arguments given changed."""
    kw: dict[str, Any] = {
        "kv_dtype": None if base.kv_dtype == spec.dtype else base.kv_dtype,
        "tp": base.tp,
        "context": base.context_tokens,
        "concurrency": base.concurrency,
        "block_size": base.requested_block_size,
        "util": base.gpu_memory_utilization,
        "kv_cache_memory_bytes": kv_cache_memory_bytes,
        "batched": base.max_num_batched_tokens,
        "seqs": base.max_num_seqs,
        "overhead_bytes": base.overhead_bytes
        if base.kv_memory_source == "given overhead"
        else None,
        "async_scheduling": base.async_scheduling,
        "prefix_caching": base.enable_prefix_caching,
        "weight_dtype": base.weight_dtype,
        "num_gpu_blocks_override": base.capacity.num_gpu_blocks
        if base.capacity.blocks_before_override is not None
        else None,
    }

    def rerun(**changes: Any) -> PlanResult:
        return _plan_one(spec, gpu, **{**kw, **changes})

    return rerun


def _resolve_model(model: ModelSpec | str) -> ModelSpec:
    """``model`` itself, or the catalog's spec for a name or config.json path (the catalog
    and its parsers are imported only then)."""
    if isinstance(model, ModelSpec):
        return model
    from kvlab.models.catalog import get_model

    return get_model(model)


def _validate(
    spec: ModelSpec,
    *,
    tp: int,
    context_tokens: int | None,
    concurrency: int,
    block_size: int,
    gpu_memory_utilization: float,
    kv_cache_memory_bytes: int | None,
    max_num_batched_tokens: int | None,
    max_num_seqs: int | None,
    offload_gb: float,
    kv_dtype: str | None,
    overhead_bytes: int | None,
) -> None:
    for name, value in (
        ("tp", tp),
        ("concurrency", concurrency),
        ("block_size", block_size),
        ("context_tokens", context_tokens),
        ("kv_cache_memory_bytes", kv_cache_memory_bytes),
        ("max_num_batched_tokens", max_num_batched_tokens),
        ("max_num_seqs", max_num_seqs),
        ("overhead_bytes", overhead_bytes),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
    for name, number in (
        ("gpu_memory_utilization", gpu_memory_utilization),
        ("offload_gb", offload_gb),
    ):
        if isinstance(number, bool) or not isinstance(number, Real) or not math.isfinite(number):
            raise ConfigError(f"{name} must be a finite number, got {number!r}")
    check_tp(spec, tp)
    if context_tokens is not None and context_tokens < 1:
        raise ConfigError(f"context must be >= 1 token, got {context_tokens}")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    if block_size < 1:
        raise ConfigError(f"block size must be >= 1, got {block_size}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(f"gpu memory utilization must be in (0, 1], got {gpu_memory_utilization}")
    if kv_cache_memory_bytes is not None and kv_cache_memory_bytes < 1:
        raise ConfigError(f"kv cache memory must be >= 1 byte, got {kv_cache_memory_bytes}")
    if max_num_batched_tokens is not None and max_num_batched_tokens < 1:
        raise ConfigError(f"max_num_batched_tokens must be >= 1, got {max_num_batched_tokens}")
    if max_num_seqs is not None and max_num_seqs < 1:
        raise ConfigError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
    if overhead_bytes is not None and overhead_bytes < 0:
        raise ConfigError(f"overhead_bytes must be >= 0, got {overhead_bytes}")
    if not 0 <= offload_gb <= MAX_OFFLOAD_GB:
        raise ConfigError(
            f"offload size (offload_gb) must be >= 0 GiB and <= {MAX_OFFLOAD_GB:g}, "
            f"got {offload_gb}"
        )
    if kv_dtype is not None:
        dtype_bytes(kv_dtype)


#: The largest CPU offload tier plan() takes (GiB): a petabyte, far beyond any host.
MAX_OFFLOAD_GB = 1_048_576.0


def _sequence_bytes(
    spec: ModelSpec, seq_len: int, kv_dtype: str | None, tp: int
) -> tuple[int, int]:
    """(token-exact bytes of one sequence, of which recurrent state), per GPU."""
    b = dtype_bytes(kv_dtype or spec.dtype)
    conv_b, ssm_b = dtype_bytes(spec.dtype), dtype_bytes(spec.state_dtype)
    attn = sum(x.elems_per_token(tp) * b * x.tokens_held(seq_len) for x in spec.layers)
    state = sum(
        layer_state_bytes(x, tp, conv_b, ssm_b) for x in spec.layers if x.kind in RECURRENT_KINDS
    )
    return math.ceil(attn) + state, state


__all__ = ["plan"]
