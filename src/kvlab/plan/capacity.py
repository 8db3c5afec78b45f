"""Capacity: KV memory -> blocks, tokens and concurrency, as vLLM v1 sizes its paged cache.

Continues :mod:`kvlab.plan.groups` (vLLM 0.32, ``vllm/v1/core/kv_cache_utils.py``):

4. ``bytes_per_block`` = the largest group's summed page bytes; every group draws
   blocks from one pool of ``num_blocks = available // bytes_per_block``.
5. A request at ``max_model_len`` needs, per group, ``cdiv(L, block)`` blocks
   (full / MLA), ``cdiv(min(W - 1 + in_flight, L), block) + 1`` (sliding window,
   ``in_flight = max_num_batched_tokens`` x 2 with async scheduling), 2 (Mamba with
   prefix caching, "align" mode) or 1 (Mamba without).
   ``max_concurrency = num_blocks / sum(blocks per group)`` and the logged
   ``GPU KV cache size = int(max_concurrency * L)`` tokens.
6. ``--num-gpu-blocks-override N`` (vLLM ``may_override_num_blocks`` and
   ``get_kv_cache_configs``): ``num_blocks = N`` whatever the memory gives, and the
   memory vLLM plans against (startup check, auto-fit) becomes ``N * bytes_per_block``;
   vLLM logs "Overriding num_gpu_blocks=<memory's count> with num_gpu_blocks_override=N".

Owns :class:`Capacity`, vLLM's startup check (one request at ``max_model_len`` must
fit beside the null block) and the longest ``max_model_len`` that passes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvlab.plan.groups import CacheGroup, LayerCache, group_layers


@dataclass(frozen=True, slots=True)
class Capacity:
    """vLLM's KV cache sizing for one configuration (per GPU).

    ``num_gpu_blocks`` includes vLLM's permanent null block (usable blocks are
    one fewer); ``max_concurrency = num_gpu_blocks / blocks_per_request`` and
    ``kv_cache_tokens = int(max_concurrency * max_model_len)`` exactly as vLLM
    logs them. With a block override, ``blocks_before_override`` is the count the
    memory alone gives and ``available_kv_bytes`` is ``num_gpu_blocks *
    bytes_per_block`` (the memory vLLM then plans against).
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
    blocks_before_override: int | None = None

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
        override = []
        if self.blocks_before_override is not None:
            override = [
                f"Overriding num_gpu_blocks={self.blocks_before_override} "
                f"with num_gpu_blocks_override={self.num_gpu_blocks}"
            ]
        return [
            *override,
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
    num_gpu_blocks_override: int | None = None,
) -> Capacity:
    """Blocks, tokens and concurrency from per-layer specs and the KV memory.

    vLLM ``get_kv_cache_config_from_groups`` (num_blocks), and
    ``get_max_concurrency_for_kv_cache_config`` / ``get_kv_cache_capacity``.
    ``num_gpu_blocks_override`` replaces the block count the memory gives (an
    attention-free model keeps its one null block, as in vLLM).
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
    before: int | None = None
    if num_gpu_blocks_override is not None:
        before, num_blocks = num_blocks, num_gpu_blocks_override
        available_kv_bytes = num_blocks * bytes_per_block
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
        blocks_before_override=before,
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


__all__ = ["Capacity", "compute_capacity", "estimate_max_model_len"]
