"""Turn a SimConfig into concrete engine parts: model, GPU, block count, cost model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvlab.errors import CapacityError, ConfigError
from kvlab.models.spec import ModelSpec, dtype_bytes, weights_bytes
from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import RooflineCost, StepCost
from kvlab.sim.hybrid import state_block_size

GIB = 1 << 30
#: GPU memory vLLM's profiler typically leaves to activations, CUDA graphs and
#: non-torch allocations on top of weights (an allowance, not a measurement).
NON_KV_RESERVE_BYTES = 2 * GIB
#: PCIe Gen5 x16 per direction and a 10 us transfer latency (REFERENCE section 4).
DEFAULT_HOST_BW = 64e9
DEFAULT_HOST_LATENCY_S = 10e-6


@dataclass(frozen=True)
class Resolved:
    model: ModelSpec
    gpu: Any
    block_size: int
    num_blocks: int
    max_model_len: int
    kv_dtype: str
    kv_bytes_per_token: float
    block_bytes: float
    cost: StepCost
    #: ticks between a request's arrival and its joining the queue (the clock's
    #: ``request_delay``, 0 for the roofline)
    request_delay: int
    offload_blocks: int
    offload_bw: float
    offload_latency_s: float
    max_num_seqs: int
    max_num_batched_tokens: int
    #: whether the run follows vLLM's AsyncScheduler, and why (:func:`scheduling_mode`)
    async_scheduling: bool = False
    scheduling_reason: str = ""


def get_model(name: Any) -> ModelSpec:
    if isinstance(name, ModelSpec):
        return name
    from kvlab.models import get_model as lookup

    return lookup(str(name))


def get_gpu(name: Any) -> Any:
    if not isinstance(name, str):
        return name
    from kvlab.hardware import get_gpu as lookup

    return lookup(name)


def batch_limits(cfg: SimConfig, gpu: Any) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs): given, else vLLM's defaults for the GPU."""
    tokens, seqs = 8192, 1024
    if hasattr(gpu, "memory_bytes") and hasattr(gpu, "name"):
        from kvlab.plan import default_batch_limits

        tokens, seqs = default_batch_limits(gpu)
    return cfg.max_num_batched_tokens or tokens, cfg.max_num_seqs or seqs


def plan_num_blocks(cfg: SimConfig, model: ModelSpec, gpu: Any, kv_dtype: str) -> int:
    """vLLM's ``num_gpu_blocks`` for this model and GPU, from :func:`kvlab.plan.plan`."""
    from kvlab.plan import plan

    p = plan(
        model,
        gpu,
        kv_dtype=kv_dtype,
        tp=cfg.tp,
        context_tokens=cfg.max_model_len,
        block_size=cfg.block_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_num_batched_tokens=batch_limits(cfg, gpu)[0],
        max_num_seqs=batch_limits(cfg, gpu)[1],
        enable_prefix_caching=cfg.enable_prefix_caching,
        whatifs=False,
    )
    return int(p.capacity.num_gpu_blocks)


#: why an unset ``async_scheduling`` resolves as it does
ASYNC_DEFAULT = "vLLM's default on a GPU"
SYNC_OFFLOAD = "synchronous: async scheduling with an offload tier is not modelled"
SYNC_MEASURED = (
    "synchronous: a measured clock keeps the measured server's scheduling "
    "(--async-scheduling for a server that ran it)"
)


def scheduling_mode(cfg: SimConfig, offload_blocks: int) -> tuple[bool, str]:
    """Whether the run follows vLLM's ``AsyncScheduler``, and why (one phrase).

    ``cfg.async_scheduling`` when set. Unset, as vLLM decides for the modelled GPU
    (``VllmConfig`` with ``async_scheduling=None``: on, unless pipeline parallelism,
    a pooling model or some speculative decoding rule it out, none of which kvlab
    models), except: with an offload tier (kvlab's loads are synchronous), and with
    a clock given in ``cfg.cost_model`` (a calibration describes the server it was
    measured on, e.g. vLLM's CPU build, which forces async scheduling off)."""
    if cfg.async_scheduling is not None:
        return cfg.async_scheduling, "set"
    if offload_blocks > 0:
        return False, SYNC_OFFLOAD
    if cfg.cost_model is not None:
        return False, SYNC_MEASURED
    return True, ASYNC_DEFAULT


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str, tp: int) -> float:
    """KV bytes one token adds per GPU, every attention layer counted as full
    attention (one block table for all layers, as vLLM without the hybrid manager).
    """
    b = dtype_bytes(kv_dtype)
    return sum(x.elems_per_token(tp) * b for x in model.attention_layers)


def resolve(cfg: SimConfig) -> Resolved:
    if cfg.model is None or cfg.gpu is None:
        raise ConfigError("a simulation needs a model and a GPU (SimConfig.model, SimConfig.gpu)")
    model, gpu = get_model(cfg.model), get_gpu(cfg.gpu)
    kv_dtype = cfg.kv_dtype or model.dtype
    per_token = kv_bytes_per_token(model, kv_dtype, cfg.tp)
    if per_token <= 0:
        raise ConfigError(f"{model.name} has no attention KV to simulate")
    # vLLM raises the block size of a model with Mamba / linear-attention state
    block_size = state_block_size(model, kv_dtype=kv_dtype, tp=cfg.tp, block_size=cfg.block_size)
    block_bytes = per_token * block_size
    w = weights_bytes(model, cfg.tp)
    if cfg.num_blocks is not None:
        num_blocks = cfg.num_blocks
    elif isinstance(cfg.gpu, str) or hasattr(gpu, "unified_memory"):
        num_blocks = plan_num_blocks(cfg, model, gpu, kv_dtype)
    else:  # a duck-typed GPU: weights and a fixed allowance off the top
        avail = gpu.memory_bytes * cfg.gpu_memory_utilization - w - NON_KV_RESERVE_BYTES
        num_blocks = int(avail // block_bytes)
    if num_blocks < 2:
        raise CapacityError(
            f"{model.name} leaves no room for a KV cache on {gpu.name} "
            f"(weights {w / GIB:.1f} GiB); use a larger GPU, more TP or --num-blocks"
        )
    head_dim = model.head_dim or model.hidden_size // max(1, model.num_attention_heads)
    cost: StepCost = cfg.cost_model or RooflineCost.from_specs(
        active_params=model.num_active_params // cfg.tp,
        attn_layers=len(model.attention_layers),
        q_heads=max(1, model.num_attention_heads // cfg.tp),
        head_dim=head_dim,
        weight_bytes=w,
        kv_bytes_per_token=per_token,
        peak_flops=gpu.bf16_flops,
        mem_bw_bytes_per_s=gpu.mem_bw_bytes_per_s,
        mfu=cfg.mfu,
        mbu=cfg.mbu,
        overhead_s=cfg.step_overhead_s,
    )
    off_blocks = cfg.offload_blocks
    if cfg.offload_gb:
        off_blocks = int(cfg.offload_gb * GIB // block_bytes)
    bw = cfg.offload_bw_bytes_per_s or getattr(gpu, "host_link_d2h_bytes_per_s", None)
    lat = cfg.offload_latency_s
    if lat is None:
        lat = getattr(gpu, "host_link_latency_s", None) or DEFAULT_HOST_LATENCY_S
    use_async, why = scheduling_mode(cfg, off_blocks)
    return Resolved(
        model=model,
        gpu=gpu,
        block_size=block_size,
        num_blocks=num_blocks,
        max_model_len=cfg.max_model_len or model.max_context,
        kv_dtype=kv_dtype,
        kv_bytes_per_token=per_token,
        block_bytes=block_bytes,
        cost=cost,
        request_delay=_request_delay(cost),
        offload_blocks=off_blocks,
        offload_bw=bw or DEFAULT_HOST_BW,
        offload_latency_s=lat,
        max_num_seqs=batch_limits(cfg, gpu)[1],
        max_num_batched_tokens=batch_limits(cfg, gpu)[0],
        async_scheduling=use_async,
        scheduling_reason=why,
    )


def _request_delay(cost: StepCost) -> int:
    """The clock's ``request_delay`` ticks (an optional member, see StepCost), >= 0."""
    delay = getattr(cost, "request_delay", 0)
    if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
        raise ValueError(f"the clock's request_delay must be an int >= 0 ticks, got {delay!r}")
    return delay
