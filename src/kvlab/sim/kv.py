"""The KV cache as the scheduler and the engine loops see it: one interface, three
implementations, chosen in one place (:func:`make_kv`).

* :class:`kvlab.sim.kv_manager.KVManager` over :class:`kvlab.sim.block_pool.BlockPool`:
  the per-block reference, block ids and a free queue as vLLM keeps them; any
  eviction policy, the CPU offload tier.
* :class:`kvlab.sim.extents.ExtentKV` over :class:`kvlab.sim.extents.ExtentPool`:
  the same decisions without block identities (runs of blocks with one state
  are one extent), many times faster on long prompts.

* :class:`kvlab.sim.hybrid.HybridKV` over :class:`kvlab.sim.block_pool.BlockPool`:
  one block table per KV cache group (full attention, sliding windows, Mamba /
  linear-attention state), for models with sliding-window groups (gpt-oss, Gemma 3)
  or state groups (Nemotron-H, Jamba, Qwen3-Next), as vLLM's hybrid manager.

The first two give identical results wherever both apply (tests/sim/test_extents.py
runs them side by side). The choice and, when the extent pool cannot be used, the
reason are recorded in the run's provenance (``kv_pool``, ``kv_pool_reason``);
``kv_pool`` is "hybrid" for the third (the reason names its groups).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Protocol

from kvlab.sim.sequence import Seq


class KVCache(Protocol):
    """What a loop and the scheduler may ask of the KV cache.

    ``hit`` values are what :meth:`lookup_seq` returned (their ``len`` is the
    number of hit blocks); times are integer ticks. Requests are instances of
    :attr:`seq_class`, which holds the cache's per-request state.
    """

    block_size: int
    max_model_len: int

    @property
    def seq_class(self) -> type[Seq]:
        """The request class whose per-request state this cache keeps."""
        ...

    # -- admission and growth (vLLM's KVCacheManager) ------------------------
    def lookup_seq(self, seq: Any) -> Sized:
        """GPU blocks of the longest cached prefix (at most ``num_tokens - 1`` tokens)."""
        ...

    def fits(
        self,
        seq: Any,
        num_new_tokens: int,
        hit: Any,
        num_external_tokens: int = 0,
        has_running: bool = True,
    ) -> bool:
        """Whether :meth:`admit` would succeed (no side effects)."""
        ...

    def surely_fits(self, num_tokens: int, has_running: bool) -> bool:
        """A sufficient condition for :meth:`fits`, whatever the request hits."""
        ...

    def admit(
        self,
        seq: Any,
        num_new_tokens: int,
        hit: Any,
        now: int = 0,
        *,
        num_external_tokens: int = 0,
        has_running: bool = True,
    ) -> list[int] | None:
        """Take the hit and allocate the first chunk; None if it does not fit."""
        ...

    def extend(self, seq: Any, num_new_tokens: int, now: int = 0) -> bool:
        """Allocate a running request's next ``num_new_tokens``; False if full."""
        ...

    def cache_upto(self, seq: Any, num_tokens: int, now: int) -> None:
        """Cache the blocks filled by the request's first ``num_tokens`` tokens."""
        ...

    def decode_window(
        self, running: Sequence[Any], k: int, now: int, step_start: Callable[[int], int]
    ) -> None:
        """The block allocations and cachings of ``k`` decode steps of ``running``
        (every request decoding), in the order the steps would make them;
        ``step_start(i)`` is the tick step ``i`` starts (step 0 at ``now``)."""
        ...

    def extend_window(
        self, running: Sequence[Any], events: Sequence[int], starts: Sequence[int]
    ) -> bool:
        """An async decode window's allocations and cachings: for each event
        ``i * len(running) + pos`` (sorted), what :meth:`extend` of one token makes for
        ``running[pos]`` as of batch ``i`` (its counters ``i`` tokens on, the blocks
        its first ``num_computed + i`` tokens fill cached), at tick ``starts[i]``;
        every request's counters as they were. False if the blocks do not fit."""
        ...

    def free(self, seq: Any, now: int = 0, *, final: bool = False) -> None:
        """Release the request's blocks, tail first."""
        ...

    # -- state ---------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Free blocks, cached ones included."""
        ...

    @property
    def num_clean(self) -> int:
        """Free blocks without a key."""
        ...

    @property
    def num_evicted(self) -> int:
        """Keyed blocks evicted so far."""
        ...

    @property
    def num_blocks(self) -> int:
        """All blocks, the null block included."""
        ...

    def usage(self) -> float:
        """vLLM ``kv_cache_usage_perc`` (cached free blocks count as free)."""
        ...

    def is_cached(self, key: Hashable) -> bool:
        """Whether a block with this key is in the cache."""
        ...

    def histograms(self, ticks_per_s: int) -> dict[str, dict[str, object]]:
        """The residency histograms (lifetime, idle before eviction, reuse gap)."""
        ...

    def close(self) -> None:
        """Break reference cycles once the run is over."""
        ...


@dataclass(frozen=True)
class KVChoice:
    """The KV cache a run uses: ``pool`` is "extent" or "block"; ``reason`` says why
    the per-block pool was taken (None when it is the extent pool)."""

    kv: KVCache
    pool: str
    reason: str | None


def extent_blocker(policy: Any, offload: bool, extents: bool) -> str | None:
    """Why a run cannot use the extent pool, or None when it can."""
    if not extents:
        return "extents=False asked for the per-block reference pool"
    if offload:
        return "the CPU offload tier needs block identities (per-block pool)"
    if not getattr(policy, "supports_extents", False):
        why = getattr(policy, "no_extents_reason", "") or "it has no extent implementation"
        return f"eviction policy {policy.name!r}: {why}"
    return None


def make_kv(
    *,
    num_blocks: int,
    block_size: int,
    max_model_len: int,
    enable_caching: bool,
    policy: Any,
    offload: Any,
    extents: bool,
    reserve_full_prompt: bool,
    watermark_blocks: int,
    groups: Sequence[Any] | None = None,
    in_flight_tokens: int = 0,
) -> KVChoice:
    """The KV cache for a run: the hybrid one when ``groups`` (a model's
    :class:`kvlab.sim.hybrid.GroupRule` s) are given, else the extent pool where it
    applies, else the per-block one. ``in_flight_tokens`` sizes a sliding group's
    admission cap (tokens scheduled per step)."""
    from kvlab.sim.block_pool import BlockPool
    from kvlab.sim.extents import ExtentKV, ExtentPool
    from kvlab.sim.kv_manager import KVManager

    rules: dict[str, Any] = dict(
        reserve_full_prompt=reserve_full_prompt, watermark_blocks=watermark_blocks
    )
    if groups:
        return _hybrid(
            groups,
            num_blocks,
            block_size,
            max_model_len,
            enable_caching,
            policy,
            offload,
            in_flight_tokens,
            rules,
        )
    reason = extent_blocker(policy, offload is not None, extents)
    if reason is None:
        pool = ExtentPool(num_blocks, block_size, enable_caching=enable_caching, policy=policy)
        return KVChoice(ExtentKV(pool, block_size, max_model_len, **rules), "extent", None)
    bpool = BlockPool(num_blocks, enable_caching=enable_caching, policy=policy, tier=offload)
    return KVChoice(KVManager(bpool, block_size, max_model_len, **rules), "block", reason)


def _hybrid(
    groups: Sequence[Any],
    num_blocks: int,
    block_size: int,
    max_model_len: int,
    enable_caching: bool,
    policy: Any,
    offload: Any,
    in_flight_tokens: int,
    rules: dict[str, Any],
) -> KVChoice:
    from kvlab.errors import ConfigError
    from kvlab.sim.block_pool import BlockPool
    from kvlab.sim.hybrid import HybridKV

    if offload is not None:
        raise ConfigError("a CPU offload tier is not modelled with hybrid KV cache groups")
    if getattr(policy, "uses_retention", False):
        raise ConfigError(
            f"eviction policy {policy.name!r} ranks blocks by retention, which the hybrid "
            "KV cache groups do not pass on; use lru"
        )
    pool = BlockPool(num_blocks, enable_caching=enable_caching, policy=policy)
    kv = HybridKV(
        pool, block_size, max_model_len, groups, in_flight_tokens=in_flight_tokens, **rules
    )
    return KVChoice(kv, "hybrid", _groups_text(groups, enable_caching))


def _groups_text(groups: Sequence[Any], enable_caching: bool) -> str:
    """``N KV cache groups (...)``: attention groups one by one, the state groups
    counted once (with vLLM's Mamba cache mode)."""
    names: list[str] = []
    num_state = sum(1 for g in groups if g.kind == "mamba")
    for g in groups:
        if g.kind != "mamba":
            names.append("full" if g.window is None else f"sliding {g.window}")
        elif num_state:
            mode = "align" if enable_caching else "none"
            names.append(f"{num_state} mamba state in {mode} mode")
            num_state = 0
    return f"{len(groups)} KV cache groups ({', '.join(names)})"
