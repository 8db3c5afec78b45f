"""Capacity planning: will a model fit on a GPU, and how many sequences at what context?

:func:`plan` reproduces, in our own code, how vLLM v1 sizes its paged KV cache
(vLLM 0.32, ``vllm/v1/core/kv_cache_utils.py`` and
``vllm/v1/kv_cache_interface.py``); docs/plan.md walks through it:

1. Every layer gets a cache spec: a *page* of ``block_size`` tokens for
   attention (``block_size * kv_heads * (head_dim + head_dim_v) * b``; MLA one
   latent of ``kv_lora_rank + qk_rope_head_dim``), or one fixed state page for
   Mamba / linear-attention layers (conv state in the model dtype plus SSM state
   in the state dtype).
2. Hybrid attention + Mamba models raise the attention block size until an
   attention page is at least a Mamba page, then pad the Mamba page to it
   (``Platform._align_hybrid_block_size``).
3. Layers are grouped (``get_kv_cache_groups``): one group when all layers are
   alike; otherwise page sizes are unified and each kind is split into groups of
   ``group_size`` layers (the smallest kind's count, or the largest when the
   counts are within 1.5x), ``layers[i::n]`` per group.
4. ``bytes_per_block`` = the largest group's summed page bytes; every group
   draws blocks from one pool of ``num_blocks = available // bytes_per_block``.
5. A request at ``max_model_len`` needs, per group, ``cdiv(L, block)`` blocks
   (full / MLA), ``cdiv(min(W - 1 + in_flight, L), block) + 1`` (sliding window,
   ``in_flight = max_num_batched_tokens`` x 2 with async scheduling), 2 (Mamba
   with prefix caching, "align" mode) or 1 (Mamba without).
   ``max_concurrency = num_blocks / sum(blocks per group)`` and the logged
   ``GPU KV cache size = int(max_concurrency * L)`` tokens.

Available KV memory is exact when given (``kv_cache_memory_bytes``, like
vLLM's ``--kv-cache-memory-bytes``); otherwise it is
``ceil(memory * gpu_memory_utilization) - weights - overhead`` with a
documented overhead *estimate* (:class:`Overhead`). Weights are the checkpoint's
bytes as it ships (:func:`kvlab.models.spec.weights_bytes`), per GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kvlab.errors import ConfigError
from kvlab.hardware import GIB, MIB, GpuSpec, get_gpu
from kvlab.models.spec import (
    RECURRENT_KINDS,
    LayerSpec,
    ModelSpec,
    check_tp,
    dtype_bytes,
    kv_bytes_per_token,
    weights_bytes,
    weights_format,
)

#: vLLM's default GPU block size (CacheConfig.DEFAULT_BLOCK_SIZE); the CPU build uses 128.
DEFAULT_BLOCK_SIZE = 16
#: vLLM's default --gpu-memory-utilization (vllm/config/cache.py).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
#: Smallest kernel block of FlashAttention (``MultipleOf(16)``), used to align
#: hybrid attention/Mamba block sizes.
KERNEL_BLOCK_ALIGNMENT = 16
#: Default block sizes tried in the what-if table.
WHATIF_BLOCK_SIZES = (16, 32, 64)
WHATIF_TPS = (2, 4, 8)

# Overhead estimate constants (per GPU). See Overhead.
CUDA_CONTEXT_BYTES = 512 * MIB
CUDA_GRAPH_BYTES = 512 * MIB
#: NCCL buffers by TP size: AIConfigurator gpu_systems ``misc.nccl_mem``.
NCCL_BYTES = {1: 0, 2: 358_612_992, 4: 411_041_792, 8: 411_041_792}
#: Peak transient activation of the profile forward pass, in units of
#: ``max_num_batched_tokens * hidden_size * 2 bytes`` (residual, QKV, attention
#: output, MLP gate/up/act/down buffers of one layer live at once).
ACTIVATION_FACTOR = 18


def cdiv(a: int, b: int) -> int:
    """Ceiling division of integers."""
    return -(a // -b)


# ---------------------------------------------------------------------------
# vLLM defaults that depend on the GPU
# ---------------------------------------------------------------------------


def default_block_size(spec: ModelSpec, gpu: GpuSpec) -> int:
    """The block size vLLM picks when ``--block-size`` is not given.

    16 (``CacheConfig.DEFAULT_BLOCK_SIZE``), except for MLA models on Blackwell
    data-center GPUs (SM 10.x), whose first MLA backend, FlashInfer MLA, takes
    32 or 64-token blocks: vLLM then uses the smallest, 32
    (``Platform._preferred_block_size_for_backends``).
    """
    if gpu.sm_version // 10 == 10 and spec.count("mla"):
        return 32
    return DEFAULT_BLOCK_SIZE


def default_batch_limits(gpu: GpuSpec) -> tuple[int, int]:
    """``(max_num_batched_tokens, max_num_seqs)`` vLLM's API server picks for ``gpu``.

    vLLM ``EngineArgs.get_batch_defaults`` (OPENAI_API_SERVER context): >= 160 GiB
    -> 16384 / 1024; >= 70 GiB and not an A100 -> 8192 / 1024; else 2048 / 256.
    """
    if gpu.memory_bytes >= 160 * GIB:
        return 16384, 1024
    if gpu.memory_bytes >= 70 * GIB and not gpu.name.startswith("a100"):
        return 8192, 1024
    return 2048, 256


# ---------------------------------------------------------------------------
# Per-layer cache specs and groups (vLLM's KVCacheSpec / KVCacheGroupSpec)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerCache:
    """One layer's KV cache spec, per GPU: ``page_bytes`` per block of ``block_size`` tokens.

    ``kind`` is ``full``, ``sliding``, ``mla`` or ``mamba`` (every recurrent
    layer). A Mamba page is one sequence's whole state; it does not grow with
    tokens, so ``block_size`` does not size it.
    """

    kind: str
    block_size: int
    page_bytes: int
    window: int | None = None

    def blocks_per_request(
        self, max_model_len: int, in_flight_tokens: int, mamba_pages: int
    ) -> int:
        """Blocks one request at ``max_model_len`` holds.

        vLLM ``max_memory_usage_bytes`` divided by the page size.
        """
        if self.kind == "mamba":
            return mamba_pages
        if self.kind == "sliding":
            assert self.window is not None
            tokens = min(self.window - 1 + in_flight_tokens, max_model_len)
            return cdiv(tokens, self.block_size) + 1
        return cdiv(max_model_len, self.block_size)


@dataclass(frozen=True, slots=True)
class CacheGroup:
    """Layers sharing one block table. Each block id indexes one page in every layer.

    ``uniform_type`` marks vLLM's UniformTypeKVCacheSpecs case: layers of one
    kind whose pages differ; the group's blocks per request is the largest of
    its layers'.
    """

    layers: tuple[LayerCache, ...]
    uniform_type: bool = False

    @property
    def kind(self) -> str:
        return self.layers[0].kind

    @property
    def block_size(self) -> int:
        return self.layers[0].block_size

    @property
    def bytes_per_block(self) -> int:
        return sum(x.page_bytes for x in self.layers)

    def blocks_per_request(
        self, max_model_len: int, in_flight_tokens: int, mamba_pages: int
    ) -> int:
        return max(
            x.blocks_per_request(max_model_len, in_flight_tokens, mamba_pages) for x in self.layers
        )

    def to_dict(
        self, max_model_len: int, in_flight_tokens: int, mamba_pages: int
    ) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_layers": len(self.layers),
            "block_size": self.block_size,
            "page_bytes": self.layers[0].page_bytes,
            "bytes_per_block": self.bytes_per_block,
            "window": self.layers[0].window,
            "blocks_per_request": self.blocks_per_request(
                max_model_len, in_flight_tokens, mamba_pages
            ),
        }


def _attention_page(layer: LayerSpec, block_size: int, b: float, tp: int) -> int:
    # vLLM AttentionSpec.page_size_bytes: block * heads * (head + head_v) * dtype size.
    # MLA: one head of (kv_lora_rank + qk_rope_head_dim), no V, not sharded.
    return math.ceil(block_size * layer.elems_per_token(tp) * b)


def _state_bytes(layer: LayerSpec, tp: int, conv_b: float, ssm_b: float) -> int:
    """One recurrent layer's state per sequence per GPU: conv (model dtype) + SSM (state dtype).

    vLLM ``MambaStateDtypeCalculator``: the conv state uses the cache dtype
    (``auto`` = model dtype), the temporal state ``mamba_ssm_cache_dtype``.
    Both shard over ``min(tp, state_heads)`` GPUs.
    """
    shards = min(tp, layer.state_heads) if layer.state_heads else 1
    conv = math.ceil(layer.conv_elems / shards) * conv_b
    ssm = math.ceil(layer.state_elems / shards) * ssm_b
    return math.ceil(conv + ssm)


def layer_caches(
    spec: ModelSpec,
    *,
    kv_dtype: str | None = None,
    tp: int = 1,
    block_size: int = DEFAULT_BLOCK_SIZE,
    kernel_block_alignment: int = KERNEL_BLOCK_ALIGNMENT,
) -> tuple[LayerCache, ...]:
    """Every layer's cache spec on one GPU, after vLLM's hybrid block-size alignment."""
    b = dtype_bytes(kv_dtype or spec.dtype)
    conv_b = dtype_bytes(spec.dtype)
    ssm_b = dtype_bytes(spec.state_dtype)
    attention = [x for x in spec.layers if x.kind not in RECURRENT_KINDS]
    recurrent = [x for x in spec.layers if x.kind in RECURRENT_KINDS]
    mamba_page = max((_state_bytes(x, tp, conv_b, ssm_b) for x in recurrent), default=0)
    if attention and recurrent and mamba_page > 0:
        # Platform._align_hybrid_block_size: the smallest kernel-aligned block
        # whose attention page holds a Mamba page; then Mamba pads up to it.
        per_token = max(math.ceil(x.elems_per_token(tp) * b) for x in attention)
        align = max(kernel_block_alignment, block_size)
        needed = align * cdiv(mamba_page, align * per_token)
        needed = kernel_block_alignment * cdiv(needed, kernel_block_alignment)
        block_size = max(block_size, needed)
        mamba_page = block_size * per_token
    out = []
    for x in spec.layers:
        if x.kind in RECURRENT_KINDS:
            out.append(LayerCache("mamba", block_size, mamba_page))
        else:
            page = _attention_page(x, block_size, b, tp)
            out.append(LayerCache(x.kind, block_size, page, x.window))
    return tuple(out)


def _type_key(x: LayerCache) -> tuple[object, ...]:
    # UniformTypeKVCacheSpecs.is_uniform_type: same block size and kind; sliding
    # layers also the same window; Mamba the same page.
    if x.kind == "mamba":
        return (x.kind, x.block_size, x.page_bytes)
    if x.kind == "sliding":
        return (x.kind, x.block_size, x.window)
    return (x.kind, x.block_size)


def _unify_pages(layers: tuple[LayerCache, ...]) -> tuple[LayerCache, ...]:
    """vLLM ``unify_kv_cache_spec_page_size``: grow smaller pages to the largest."""
    top = max(x.page_bytes for x in layers)
    out = []
    for x in layers:
        if x.page_bytes == top:
            out.append(x)
        elif x.kind != "mamba" and top % x.page_bytes == 0:
            out.append(replace(x, block_size=x.block_size * (top // x.page_bytes), page_bytes=top))
        elif x.kind in ("mamba", "full", "sliding"):
            out.append(replace(x, page_bytes=top))  # padded page
        else:
            raise ConfigError(
                "vLLM cannot unify this model's KV page sizes (an MLA page does not divide "
                f"the largest page of {top} bytes); kvlab cannot plan it"
            )
    return tuple(out)


def group_layers(layers: tuple[LayerCache, ...]) -> tuple[CacheGroup, ...]:
    """vLLM ``get_kv_cache_groups`` for the default layer-outer KV layout."""
    if not layers:
        return ()
    if len(set(layers)) == 1:
        return (CacheGroup(layers),)
    if len({_type_key(x) for x in layers}) == 1:
        return (CacheGroup(layers, uniform_type=True),)
    layers = _unify_pages(layers)
    buckets: dict[LayerCache, list[LayerCache]] = {}
    for x in layers:
        buckets.setdefault(x, []).append(x)
    sizes = [len(v) for v in buckets.values()]
    group_size = min(sizes)
    if max(sizes) < group_size * 1.5:
        group_size = max(sizes)
    groups: list[CacheGroup] = []
    for members in buckets.values():
        n = cdiv(len(members), group_size)
        groups.extend(CacheGroup(tuple(members[i::n])) for i in range(n))
    return tuple(groups)


# ---------------------------------------------------------------------------
# Overhead estimate
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overhead:
    """Per-GPU memory vLLM spends besides weights and KV cache: an estimate.

    ``cuda_context_bytes`` (CUDA context, cuBLAS workspaces: non-torch memory),
    ``nccl_bytes`` (NCCL buffers at TP > 1, AIConfigurator's measured table),
    ``activation_bytes`` (peak of vLLM's profile run: ``ACTIVATION_FACTOR *
    max_num_batched_tokens * hidden_size * 2`` bytes, or the sampler's
    ``2 * max_num_seqs * vocab_size * 4`` bytes of fp32 logits, whichever is
    larger), ``cuda_graph_bytes`` (captured CUDA graphs, which vLLM profiles and
    subtracts by default). Typical error: 1-2 GiB; read vLLM's "Available KV
    cache memory" log line and pass it as ``kv_cache_memory_bytes`` to be exact.
    """

    cuda_context_bytes: int
    nccl_bytes: int
    activation_bytes: int
    cuda_graph_bytes: int

    @property
    def total_bytes(self) -> int:
        return (
            self.cuda_context_bytes
            + self.nccl_bytes
            + self.activation_bytes
            + self.cuda_graph_bytes
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "cuda_context_bytes": self.cuda_context_bytes,
            "nccl_bytes": self.nccl_bytes,
            "activation_bytes": self.activation_bytes,
            "cuda_graph_bytes": self.cuda_graph_bytes,
            "total_bytes": self.total_bytes,
        }


def estimate_overhead(
    spec: ModelSpec, *, tp: int, max_num_batched_tokens: int, max_num_seqs: int
) -> Overhead:
    """The :class:`Overhead` estimate for ``spec`` at ``tp``."""
    forward = ACTIVATION_FACTOR * max_num_batched_tokens * spec.hidden_size * 2
    sampler = 2 * max_num_seqs * spec.vocab_size * 4
    nccl = NCCL_BYTES.get(tp, NCCL_BYTES[8]) if tp > 1 else 0
    return Overhead(CUDA_CONTEXT_BYTES, nccl, max(forward, sampler), CUDA_GRAPH_BYTES)


# ---------------------------------------------------------------------------
# Capacity
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capacity:
    """vLLM's KV cache sizing for one configuration (per GPU).

    ``num_gpu_blocks`` includes vLLM's permanent null block (usable blocks are
    one fewer); ``max_concurrency = num_gpu_blocks / blocks_per_request`` and
    ``kv_cache_tokens = int(max_concurrency * max_model_len)`` exactly as vLLM
    logs them.
    """

    groups: tuple[CacheGroup, ...]
    block_size: int
    bytes_per_block: int
    blocks_per_request: int
    available_kv_bytes: int
    num_gpu_blocks: int
    max_concurrency: float
    kv_cache_tokens: int
    max_model_len: int
    in_flight_tokens: int
    mamba_pages: int

    @property
    def bytes_per_request(self) -> int:
        """Block-rounded bytes one request at max_model_len takes from the pool."""
        return self.bytes_per_block * self.blocks_per_request

    def starts(self) -> bool:
        """vLLM's startup check: one request at max_model_len fits beside the null block."""
        if not self.groups:
            return True
        return (
            self.available_kv_bytes > 0
            and self.bytes_per_request <= self.available_kv_bytes - self.bytes_per_block
        )

    def log_lines(self) -> list[str]:
        return [
            f"GPU KV cache size: {self.kv_cache_tokens:,} tokens",
            f"Maximum concurrency for {self.max_model_len:,} tokens per request: "
            f"{self.max_concurrency:.2f}x",
        ]


def compute_capacity(
    layers: tuple[LayerCache, ...],
    *,
    max_model_len: int,
    available_kv_bytes: int,
    in_flight_tokens: int,
    mamba_pages: int = 2,
) -> Capacity:
    """Blocks, tokens and concurrency from per-layer specs and the KV memory.

    vLLM ``get_kv_cache_config_from_groups`` (num_blocks), and
    ``get_max_concurrency_for_kv_cache_config`` / ``get_kv_cache_capacity``.
    """
    groups = group_layers(layers)
    if not groups:  # attention-free model: vLLM keeps one null block
        return Capacity(
            (),
            0,
            0,
            0,
            available_kv_bytes,
            1,
            math.inf,
            0,
            max_model_len,
            in_flight_tokens,
            mamba_pages,
        )
    bytes_per_block = max(g.bytes_per_block for g in groups)
    per_request = sum(
        g.blocks_per_request(max_model_len, in_flight_tokens, mamba_pages) for g in groups
    )
    num_blocks = max(0, available_kv_bytes) // bytes_per_block
    concurrency = num_blocks / per_request
    return Capacity(
        groups=groups,
        block_size=min(g.block_size for g in groups),
        bytes_per_block=bytes_per_block,
        blocks_per_request=per_request,
        available_kv_bytes=available_kv_bytes,
        num_gpu_blocks=num_blocks,
        max_concurrency=concurrency,
        kv_cache_tokens=int(concurrency * max_model_len),
        max_model_len=max_model_len,
        in_flight_tokens=in_flight_tokens,
        mamba_pages=mamba_pages,
    )


def estimate_max_model_len(
    layers: tuple[LayerCache, ...],
    available_kv_bytes: int,
    *,
    upper: int,
    in_flight_tokens: int,
    mamba_pages: int,
) -> int:
    """The longest max_model_len whose one request fits.

    vLLM ``_estimate_max_model_len_from_groups``.

    0 when not even one token fits.
    """

    def fits(n: int) -> bool:
        cap = compute_capacity(
            layers,
            max_model_len=n,
            available_kv_bytes=available_kv_bytes,
            in_flight_tokens=in_flight_tokens,
            mamba_pages=mamba_pages,
        )
        return cap.bytes_per_request <= available_kv_bytes - cap.bytes_per_block

    lo, hi, best = 1, upper, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanResult:
    """Everything :func:`plan` computed; ``to_dict()`` is the ``--json`` output.

    Bytes are per GPU. ``kv_bytes_per_token`` counts growing layers (full
    attention, MLA) only; ``sequence_bytes`` is one sequence at
    ``context_tokens``, token-exact (no block rounding), all layers, including
    ``state_bytes_per_sequence``. ``fits`` answers: can vLLM start and hold
    ``concurrency`` sequences of ``context_tokens`` at once; ``reasons`` says
    why, with numbers.
    """

    model: str
    gpu: str
    kv_dtype: str
    tp: int
    context_tokens: int
    concurrency: int
    gpu_memory_bytes: int
    gpu_memory_utilization: float
    weights_bytes: int
    overhead: Overhead
    overhead_bytes: int
    kv_memory_source: str
    available_kv_bytes: int
    kv_bytes_per_token: int
    sequence_bytes: int
    state_bytes_per_sequence: int
    max_num_batched_tokens: int
    max_num_seqs: int
    async_scheduling: bool
    enable_prefix_caching: bool
    requested_block_size: int
    weight_dtype: str | None
    capacity: Capacity
    vllm_starts: bool
    estimated_max_model_len: int | None
    fits: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    whatifs: tuple[dict[str, Any], ...] = field(default=())
    weights_format: str = ""

    @property
    def block_size(self) -> int:
        return self.capacity.block_size

    @property
    def num_gpu_blocks(self) -> int:
        return self.capacity.num_gpu_blocks

    @property
    def kv_cache_tokens(self) -> int:
        return self.capacity.kv_cache_tokens

    @property
    def max_concurrency(self) -> float:
        return self.capacity.max_concurrency

    def to_dict(self) -> dict[str, Any]:
        cap = self.capacity
        args = (cap.max_model_len, cap.in_flight_tokens, cap.mamba_pages)
        return {
            "model": self.model,
            "gpu": self.gpu,
            "kv_dtype": self.kv_dtype,
            "tp": self.tp,
            "context_tokens": self.context_tokens,
            "concurrency": self.concurrency,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "sequence_bytes": self.sequence_bytes,
            "state_bytes_per_sequence": self.state_bytes_per_sequence,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "weights_bytes": self.weights_bytes,
            "weight_dtype": self.weight_dtype or "model",
            "weights_format": self.weights_format,
            "overhead_bytes": self.overhead_bytes,
            "overhead": self.overhead.to_dict(),
            "kv_memory_source": self.kv_memory_source,
            "available_kv_bytes": self.available_kv_bytes,
            "block_size": cap.block_size,
            "requested_block_size": self.requested_block_size,
            "bytes_per_block": cap.bytes_per_block,
            "blocks_per_request": cap.blocks_per_request,
            "num_gpu_blocks": cap.num_gpu_blocks,
            "kv_cache_tokens": cap.kv_cache_tokens,
            "max_concurrency": _finite(cap.max_concurrency),
            "groups": [g.to_dict(*args) for g in cap.groups],
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_num_seqs": self.max_num_seqs,
            "async_scheduling": self.async_scheduling,
            "enable_prefix_caching": self.enable_prefix_caching,
            "vllm_starts": self.vllm_starts,
            "estimated_max_model_len": self.estimated_max_model_len,
            "vllm_log": cap.log_lines() if cap.groups else [],
            "fits": self.fits,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "whatifs": [dict(w) for w in self.whatifs],
        }


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


def _gib(n: float) -> str:
    """Bytes as GiB, or as MiB below 1 GiB."""
    if abs(n) < GIB:
        return f"{n / MIB:,.2f} MiB"
    return f"{n / GIB:,.2f} GiB"


def _resolve_model(model: ModelSpec | str) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    try:
        from kvlab.models.catalog import get_model
    except ModuleNotFoundError as e:  # pragma: no cover - catalog lands separately
        raise ConfigError(
            f"cannot resolve model {model!r}: the model catalog is not available"
        ) from e
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
) -> None:
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
    if offload_gb < 0:
        raise ConfigError(f"offload size must be >= 0 GiB, got {offload_gb}")
    if kv_dtype is not None:
        dtype_bytes(kv_dtype)


def _sequence_bytes(
    spec: ModelSpec, seq_len: int, kv_dtype: str | None, tp: int
) -> tuple[int, int]:
    """(token-exact bytes of one sequence, of which recurrent state), per GPU."""
    b = dtype_bytes(kv_dtype or spec.dtype)
    conv_b, ssm_b = dtype_bytes(spec.dtype), dtype_bytes(spec.state_dtype)
    attn = sum(x.elems_per_token(tp) * b * x.tokens_held(seq_len) for x in spec.layers)
    state = sum(
        _state_bytes(x, tp, conv_b, ssm_b) for x in spec.layers if x.kind in RECURRENT_KINDS
    )
    return math.ceil(attn) + state, state


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
    )
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
    )
    if not whatifs:
        return result
    rows = _whatifs(
        result,
        spec,
        gpu_spec,
        offload_gb,
        kv_cache_memory_bytes,
        max_num_batched_tokens,
        max_num_seqs,
    )
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
    )
    seq_bytes, state_bytes = _sequence_bytes(spec, context, kv_dtype, tp)
    starts = cap.starts()
    est_len = None
    if not starts and available > 0 and cap.groups:
        est_len = estimate_max_model_len(
            layers, available, upper=context, in_flight_tokens=in_flight, mamba_pages=mamba_pages
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
    fits, reasons = _verdict(base, spec, gpu, requested)
    return replace(
        base, fits=fits, reasons=tuple(reasons), notes=tuple(_notes(base, spec, kv_dtype))
    )


def _verdict(
    r: PlanResult, spec: ModelSpec, gpu: GpuSpec, requested: int
) -> tuple[bool, list[str]]:
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
                f"weights {_gib(r.weights_bytes)} + KV cache {_gib(r.available_kv_bytes)} "
                f"= {_gib(total)} "
                f"exceed the GPU's {_gib(gpu.memory_bytes)}"
            )
    elif r.weights_bytes > requested:
        bad.append(
            f"weights need {_gib(r.weights_bytes)} per GPU but only {_gib(requested)} "
            f"({r.gpu_memory_utilization:g} of {_gib(gpu.memory_bytes)}) is usable; "
            "try more TP or a larger GPU"
        )
    elif r.available_kv_bytes <= 0:
        bad.append(
            f"no memory left for the KV cache: {_gib(requested)} usable "
            f"- weights {_gib(r.weights_bytes)} "
            f"- overhead {_gib(r.overhead_bytes)} = {_gib(r.available_kv_bytes)}"
        )
    if r.available_kv_bytes > 0 and cap.groups and not r.vllm_starts:
        hint = ""
        if r.estimated_max_model_len:
            hint = f"; the longest context that fits is {r.estimated_max_model_len:,} tokens"
        bad.append(
            f"vLLM would not start: one request at {r.context_tokens:,} tokens needs "
            f"{_gib(cap.bytes_per_request)} of KV cache but "
            f"{_gib(r.available_kv_bytes - cap.bytes_per_block)} "
            f"is available{hint}"
        )
    need_blocks = r.concurrency * cap.blocks_per_request
    usable = max(0, cap.num_gpu_blocks - 1)  # block 0 is vLLM's null block
    if cap.groups and r.available_kv_bytes > 0 and need_blocks > usable:
        short = (need_blocks - usable) * cap.bytes_per_block
        bad.append(
            f"KV for {r.concurrency:,} sequences at {r.context_tokens:,} tokens needs "
            f"{need_blocks:,} blocks "
            f"({_gib(need_blocks * cap.bytes_per_block)}) but {usable:,} usable blocks "
            f"({_gib(usable * cap.bytes_per_block)}) are available: short by {_gib(short)}; "
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
        f"of {usable:,} usable blocks ({_gib(need_blocks * cap.bytes_per_block)} of "
        f"{_gib(r.available_kv_bytes)} KV memory); "
        f"max concurrency {cap.max_concurrency:.2f}"
    ]
    return True, ok


def _notes(r: PlanResult, spec: ModelSpec, kv_dtype: str | None) -> list[str]:
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
    if r.kv_memory_source == "estimated":
        out.append(
            f"available KV memory is an estimate (overhead {_gib(r.overhead_bytes)}); pass "
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
        "max_concurrency": _finite(other.max_concurrency),
        "concurrency_ratio": ratio,
        "fits": other.fits,
        "reason": other.reasons[0] if other.reasons else "",
    }


def _whatifs(
    base: PlanResult,
    spec: ModelSpec,
    gpu: GpuSpec,
    offload_gb: float,
    kv_cache_memory_bytes: int | None,
    max_num_batched_tokens: int | None,
    max_num_seqs: int | None,
) -> list[dict[str, Any]]:
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
    }
    run: Callable[..., PlanResult] = lambda **ch: _plan_one(spec, gpu, **{**kw, **ch})  # noqa: E731
    rows: list[dict[str, Any]] = []
    if base.kv_dtype.lower() not in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        rows.append(_row("KV cache in fp8", base, run(kv_dtype="fp8")))
    for tp in WHATIF_TPS:
        if tp == base.tp:
            continue
        try:
            check_tp(spec, tp)
        except ConfigError as e:
            rows.append({"what": f"TP {tp}", "skipped": str(e)})
            continue
        rows.append(_row(f"TP {tp}", base, run(tp=tp)))
    for div, label in ((2, "half"), (4, "quarter")):
        ctx = base.context_tokens // div
        if ctx >= 1:
            rows.append(_row(f"{label} context ({ctx:,} tokens)", base, run(context=ctx)))
    for bs in WHATIF_BLOCK_SIZES:
        if bs == base.requested_block_size:
            continue
        other = run(block_size=bs)
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
            f"({_gib(base.sequence_bytes)}) over the {link / 1e9:g} GB/s host link takes "
            f"{reload_s * 1e3:,.1f} ms"
        ),
    }


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "CacheGroup",
    "Capacity",
    "LayerCache",
    "Overhead",
    "PlanResult",
    "compute_capacity",
    "default_batch_limits",
    "default_block_size",
    "estimate_max_model_len",
    "estimate_overhead",
    "group_layers",
    "layer_caches",
    "plan",
]
