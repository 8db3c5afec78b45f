"""Per-request block tables on top of the pool (vLLM v1 ``KVCacheManager`` for
one full-attention group: ``get_computed_blocks``, ``allocate_slots``, ``free``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

from kvlab.sim.block_pool import BlockPool
from kvlab.sim.sequence import Seq


class SeqState(Protocol):
    """What the manager needs of a request: its blocks and its block keys."""

    blocks: list[int]
    num_cached_blocks: int
    num_computed: int
    num_tokens: int
    nblocks: int

    @property
    def keys(self) -> Sequence[Hashable]: ...

    def ensure_keys(self, num_full_blocks: int) -> None: ...

    def block_rank(self, index: int) -> int: ...


class BlockSeq(Seq):
    """A request over the per-block pool: ``blocks`` is its block table (block ids in
    block order; ``nblocks == len(blocks)``), kept by :class:`KVManager`."""

    __slots__ = ("blocks",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.blocks: list[int] = []


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class AdmissionRules:
    """vLLM v1's admission arithmetic (``kv_cache_manager.py`` ``allocate_slots``),
    and the pool's state as :class:`kvlab.sim.kv.KVCache` reports it, shared by the
    per-block manager and the extent one (``pool``: either pool)."""

    def __init__(
        self,
        pool: Any,
        block_size: int,
        max_model_len: int,
        *,
        reserve_full_prompt: bool = True,
        watermark_blocks: int = 0,
    ) -> None:
        self.pool = pool
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.reserve_full_prompt = reserve_full_prompt
        self.watermark_blocks = watermark_blocks

    # -- the pool's state (kvlab.sim.kv.KVCache) -----------------------------
    @property
    def num_free(self) -> int:
        return int(self.pool.num_free)

    @property
    def num_clean(self) -> int:
        return int(self.pool.num_clean)

    @property
    def num_evicted(self) -> int:
        return int(self.pool.num_evicted)

    @property
    def num_blocks(self) -> int:
        return int(self.pool.num_blocks)

    def usage(self) -> float:
        return float(self.pool.usage())

    def is_cached(self, key: Hashable) -> bool:
        return self.pool.get(key) is not None

    def histograms(self, ticks_per_s: int) -> dict[str, dict[str, object]]:
        return self.pool.histograms(ticks_per_s)

    # -- admission -------------------------------------------------------------
    def fits_counts(
        self,
        num_tokens: int,
        num_new_tokens: int,
        n_hit: int,
        evictable: int,
        num_external_tokens: int,
        has_running: bool,
    ) -> bool:
        """Whether a request of ``num_tokens`` with ``n_hit`` hit blocks (``evictable``
        of them free) can take its next ``num_new_tokens`` now."""
        bs, mml = self.block_size, self.max_model_len
        extra = evictable + (self.watermark_blocks if has_running else 0)
        free = self.pool.num_free
        if self.reserve_full_prompt:
            need = -(-(num_tokens if num_tokens < mml else mml) // bs) - n_hit  # cdiv
            if (need if need > 0 else 0) + extra > free:
                return False
        slot = n_hit * bs + num_external_tokens + num_new_tokens
        need = -(-(slot if slot < mml else mml) // bs) - n_hit
        return (need if need > 0 else 0) + extra <= free

    def surely_fits(self, num_tokens: int, has_running: bool) -> bool:
        """A sufficient condition for :meth:`fits_counts` whatever the request hits:
        the free blocks cover all of it (a hit only lowers what it needs: the free
        hit blocks it takes are among the blocks it would otherwise allocate)."""
        mml, bs = self.max_model_len, self.block_size
        need = -(-(num_tokens if num_tokens < mml else mml) // bs)
        return need + (self.watermark_blocks if has_running else 0) <= self.pool.num_free


def extend_events(
    kv: Any, running: Sequence[Any], events: Sequence[int], starts: Sequence[int]
) -> bool:
    """:meth:`kvlab.sim.kv.KVCache.extend_window` event by event through ``kv.extend``."""
    n = len(running)
    extend = kv.extend
    ok = True
    for e in events:
        i = e // n
        s = running[e - i * n]
        c = s.num_computed
        s.num_computed = s.num_tokens = c + i
        ok &= extend(s, 1, starts[i])
        s.num_computed = s.num_tokens = c
    return ok


class KVManager(AdmissionRules):
    """Allocation rules of vLLM v1 for full attention (``kv_cache_manager.py``).

    * a lookup covers at most ``num_tokens - 1`` tokens, block aligned (the last
      prompt token is recomputed for its logits);
    * admission with ``reserve_full_prompt`` (vLLM ``scheduler_reserve_full_isl``,
      default on) needs blocks for the whole known sequence, hits counted, else
      only for the scheduled chunk; evictable hit blocks count against the free
      blocks because touching them takes them off the free list;
    * a block is cached (keyed) as soon as the step that fills it is scheduled;
    * freeing releases a request's blocks tail first.
    """

    pool: BlockPool
    seq_class = BlockSeq

    def lookup(self, keys: Sequence[Hashable], num_tokens: int) -> list[int]:
        """Cached blocks of the longest prefix hit, over at most num_tokens - 1 tokens."""
        return self.pool.longest_hit(keys, (num_tokens - 1) // self.block_size)

    def lookup_seq(self, seq: SeqState) -> list[int]:
        """:meth:`lookup` for a request."""
        return self.pool.longest_hit(seq.keys, (seq.num_tokens - 1) // self.block_size)

    def admit(
        self,
        seq: SeqState,
        num_new_tokens: int,
        hit: list[int],
        now: int = 0,
        *,
        num_external_tokens: int = 0,
        has_running: bool = True,
    ) -> list[int] | None:
        """Allocate a waiting request's first chunk (with its hit); None if it does not fit.

        Returns the blocks allocated for ``num_external_tokens`` (lower-tier hits
        to be loaded), possibly empty.
        """
        if not self.fits(seq, num_new_tokens, hit, num_external_tokens, has_running):
            return None
        pool, bs = self.pool, self.block_size
        n_hit = len(hit)
        computed = n_hit * bs + num_external_tokens
        need_slot = min(computed + num_new_tokens, self.max_model_len)
        pool.touch(hit, now)
        seq.blocks = list(hit)
        seq.num_cached_blocks = n_hit
        ext: list[int] = []
        if num_external_tokens:
            ext = pool.allocate(max(0, cdiv(computed, bs) - n_hit), now)
            seq.blocks.extend(ext)
        seq.nblocks = len(seq.blocks)
        self._grow(seq, need_slot, now)
        self._cache(seq, min(computed + num_new_tokens, seq.num_tokens), now)
        return ext

    def fits(
        self,
        seq: SeqState,
        num_new_tokens: int,
        hit: list[int],
        num_external_tokens: int = 0,
        has_running: bool = True,
    ) -> bool:
        """Whether :meth:`admit` would succeed (no side effects)."""
        return self.fits_counts(
            seq.num_tokens,
            num_new_tokens,
            len(hit),
            self.pool.num_evictable(hit),
            num_external_tokens,
            has_running,
        )

    def extend(self, seq: SeqState, num_new_tokens: int, now: int = 0) -> bool:
        """Allocate slots for a running request's next ``num_new_tokens``; False if full."""
        need_slot = min(seq.num_computed + num_new_tokens, self.max_model_len)
        need = cdiv(need_slot, self.block_size) - len(seq.blocks)
        if need > 0:
            if need > self.pool.num_free:
                return False
            seq.blocks.extend(self.pool.allocate(need, now))
            seq.nblocks = len(seq.blocks)
        self._cache(seq, min(seq.num_computed + num_new_tokens, seq.num_tokens), now)
        return True

    def _grow(self, seq: SeqState, need_slot: int, now: int) -> None:
        need = cdiv(need_slot, self.block_size) - len(seq.blocks)
        if need > 0:
            seq.blocks.extend(self.pool.allocate(need, now))
            seq.nblocks = len(seq.blocks)

    def grow_one(self, seq: SeqState, now: int) -> None:
        """Hand one more block to ``seq`` at ``now``."""
        seq.blocks.extend(self.pool.allocate(1, now))
        seq.nblocks += 1

    def cache_upto(self, seq: SeqState, num_tokens: int, now: int) -> None:
        """Cache the request's blocks filled by its first ``num_tokens`` tokens."""
        self._cache(seq, num_tokens, now)

    def extend_window(
        self, running: Sequence[Any], events: Sequence[int], starts: Sequence[int]
    ) -> bool:
        return extend_events(self, running, events, starts)

    def decode_window(
        self, running: Sequence[Any], k: int, now: int, step_start: Callable[[int], int]
    ) -> None:
        """Allocations and cachings of ``k`` decode steps, one by one in per-step
        order (:meth:`kvlab.sim.kv.KVCache.decode_window`)."""
        bs = self.block_size
        events: list[tuple[int, int, int]] = []
        caching = self.pool.enable_caching
        for pos, s in enumerate(running):
            c = s.num_computed
            events.extend((i, pos, 0) for i in range(s.nblocks * bs - c, k, bs))
            if caching:
                events.extend((i, pos, 1) for i in range((bs - 1 - c) % bs, k, bs))
        events.sort()
        t_cache: dict[int, int] = {}
        for i, pos, kind in events:
            t = t_cache.get(i)
            if t is None:
                t = t_cache[i] = step_start(i)
            s = running[pos]
            if kind == 0:
                self.grow_one(s, t)
            else:
                self._cache(s, s.num_computed + i + 1, t)

    def _cache(self, seq: SeqState, num_tokens: int, now: int) -> None:
        n_full = num_tokens // self.block_size
        start = seq.num_cached_blocks
        if start >= n_full or not self.pool.enable_caching:
            return
        seq.ensure_keys(n_full)
        blocks, keys, cache = seq.blocks, seq.keys, self.pool.cache
        seq.num_cached_blocks = n_full
        if self.pool.policy_uses_retention:
            place = getattr(self.pool.policy, "set_place", None)  # (learned policies)
            for i in range(start, n_full):
                if place is not None:
                    place(blocks[i], i, blocks[i - 1] if i else -1)
                cache(blocks[i], keys[i], now, seq.block_rank(i))
        elif n_full - start == 1:
            cache(blocks[start], keys[start], now)
        else:
            self.pool.cache_run(blocks[start:n_full], keys[start:n_full], now)

    def free(self, seq: SeqState, now: int = 0, *, final: bool = False) -> None:
        """Release the request's blocks, tail first (vLLM ``free``)."""
        blocks = seq.blocks
        blocks.reverse()
        self.pool.free(blocks, now)
        seq.blocks = []
        seq.nblocks = 0
        seq.num_cached_blocks = 0

    def close(self) -> None:
        """Nothing to break: the per-block pool holds no reference cycles."""
