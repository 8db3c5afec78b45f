"""KV cache groups: every layer's cache page on one GPU, and the groups vLLM v1 forms from them.

Reproduces, in our own code, ``vllm/v1/kv_cache_interface.py`` and the grouping in
``vllm/v1/core/kv_cache_utils.py`` (vLLM 0.32); docs/plan.md walks through it:

1. Every layer gets a cache spec (:class:`LayerCache`): a *page* of ``block_size``
   tokens for attention (``block_size * kv_heads * (head_dim + head_dim_v) * b``; MLA
   one latent of ``kv_lora_rank + qk_rope_head_dim``), or one fixed state page for
   Mamba / linear-attention layers (conv state in the model dtype plus SSM state in the
   state dtype).
2. Hybrid attention + Mamba models raise the attention block size until an attention
   page is at least a Mamba page, then pad the Mamba page to it
   (``Platform._align_hybrid_block_size``): :func:`layer_caches`.
3. Layers are grouped (``get_kv_cache_groups``): one group when all layers are alike;
   otherwise page sizes are unified and each kind is split into groups of
   ``group_size`` layers (the smallest kind's count, or the largest when the counts are
   within 1.5x), ``layers[i::n]`` per group: :func:`group_layers`.

A group (:class:`CacheGroup`) also answers how many of its blocks one request at
``max_model_len`` holds, the per-group figure :mod:`kvlab.plan.capacity` sums: full
attention and MLA every token, a sliding window its window plus the tokens in flight,
Mamba a fixed number of state pages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from kvlab.errors import ConfigError
from kvlab.models.spec import RECURRENT_KINDS, LayerSpec, ModelSpec, dtype_bytes
from kvlab.plan.defaults import DEFAULT_BLOCK_SIZE

#: Smallest kernel block of FlashAttention (``MultipleOf(16)``), used to align
#: hybrid attention/Mamba block sizes.
KERNEL_BLOCK_ALIGNMENT = 16


def cdiv(a: int, b: int) -> int:
    """Ceiling division of integers."""
    return -(a // -b)


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


def layer_state_bytes(layer: LayerSpec, tp: int, conv_b: float, ssm_b: float) -> int:
    """One recurrent layer's state per sequence per GPU: conv (model dtype) + SSM (state dtype).

    vLLM ``MambaStateDtypeCalculator``: the conv state uses the cache dtype
    (``auto`` = model dtype), the temporal state ``mamba_ssm_cache_dtype``.
    Both shard over ``min(tp, state_heads)`` GPUs. ``conv_b`` and ``ssm_b`` are
    bytes per element; the sum is rounded up to whole bytes.
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
    mamba_page = max((layer_state_bytes(x, tp, conv_b, ssm_b) for x in recurrent), default=0)
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


__all__ = [
    "KERNEL_BLOCK_ALIGNMENT",
    "CacheGroup",
    "LayerCache",
    "cdiv",
    "group_layers",
    "layer_caches",
    "layer_state_bytes",
]
