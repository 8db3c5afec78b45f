"""Per-request KV dtype tiers over the per-block pool: the block arithmetic behind
:meth:`kvlab.rl.engine_steps.SteppedLoop.compress`.

A request's *tier* t says how many times its KV was halved in bytes per token: tier 0
is the run's KV dtype (e.g. bf16), tier 1 an int8-like and tier 2 an int4-like format
for a 16-bit run. The page (block) keeps its size in bytes, so a block of a tier-t
request holds ``block_size * 2**t`` tokens. Tiers go down to 4 bits per element
(:func:`max_tier`): 2 for a 16-bit KV dtype, 1 for an 8-bit one.

:class:`TieredKV` is :class:`kvlab.sim.kv_manager.KVManager` with a table
``tier[seq.idx]`` of the running requests above tier 0. Their blocks are private
(never prefix-cached: a re-quantized block is no copy of the full-precision block
another request would hit), and they grow by one block every ``block_size * 2**t``
tokens. A request not in the table takes the manager's own code unchanged, so a run
in which nothing is compressed makes exactly the decisions of the plain manager.

Invariants:

* ``tier`` holds only running requests, each with 1 <= t <= ``max_tier``;
* a request in ``tier`` holds ``cdiv(num_computed + scheduled, block_size << t)``
  blocks (no more than its slots need) and ``num_cached_blocks == 0``;
* freeing a request (finish, preemption, swap-out) drops it from ``tier``: a request
  preempted while compressed is recomputed at tier 0.
"""

from __future__ import annotations

from typing import Any

from kvlab.models.spec import dtype_bytes
from kvlab.sim.kv_manager import BlockSeq, KVManager, SeqState, cdiv

_extend = KVManager.extend

#: The fewest bits per element a tier may reach (an int4-like format).
MIN_TIER_BITS = 4


def max_tier(kv_dtype: str) -> int:
    """How many times a KV dtype can be halved down to :data:`MIN_TIER_BITS` bits per
    element: 2 for bf16/fp16 (-> int8 -> int4), 1 for an 8-bit dtype, 3 for fp32."""
    bits = round(dtype_bytes(kv_dtype) * 8)
    t = 0
    while bits >> (t + 1) >= MIN_TIER_BITS:
        t += 1
    return t


class TieredKV(KVManager):
    """The per-block manager with per-request tiers (module doc)."""

    def __init__(self, base: KVManager) -> None:
        """A manager over ``base``'s pool with ``base``'s rules (``base`` keeps no
        state of its own besides them, so both see the same pool)."""
        super().__init__(
            base.pool,
            base.block_size,
            base.max_model_len,
            reserve_full_prompt=base.reserve_full_prompt,
            watermark_blocks=base.watermark_blocks,
        )
        #: ``seq.idx`` -> tier, for the running requests above tier 0
        self.tier: dict[int, int] = {}

    def tier_of(self, seq: Any) -> int:
        """The request's tier (0 unless compressed)."""
        return self.tier.get(seq.idx, 0)

    def tokens_per_block(self, tier: int) -> int:
        """Tokens one block holds at ``tier``."""
        return self.block_size << tier

    def blocks_for(self, num_tokens: int, tier: int) -> int:
        """Blocks ``num_tokens`` tokens of KV take at ``tier``."""
        return cdiv(num_tokens, self.block_size << tier)

    # -- growth of a compressed request ---------------------------------------------
    def extend(self, seq: SeqState, num_new_tokens: int, now: int = 0) -> bool:
        tiers = self.tier
        if not tiers or seq.idx not in tiers:  # type: ignore[attr-defined]
            return _extend(self, seq, num_new_tokens, now)
        t = tiers[seq.idx]  # type: ignore[attr-defined]
        need_slot = min(seq.num_computed + num_new_tokens, self.max_model_len)
        need = cdiv(need_slot, self.block_size << t) - len(seq.blocks)
        if need > 0:
            if need > self.pool.num_free:
                return False
            seq.blocks.extend(self.pool.allocate(need, now))
            seq.nblocks = len(seq.blocks)
        return True  # private blocks: nothing to cache

    def decode_window(self, running: Any, k: int, now: int, step_start: Any) -> None:
        # the stepped loop takes single steps while a compressed request runs
        if self.tier and any(s.idx in self.tier for s in running):
            raise RuntimeError("a decode window over a compressed request")
        super().decode_window(running, k, now, step_start)

    def free(self, seq: SeqState, now: int = 0, *, final: bool = False) -> None:
        """Release the request's blocks (its tier ends with them)."""
        if self.tier:
            self.tier.pop(seq.idx, None)  # type: ignore[attr-defined]
        super().free(seq, now, final=final)

    # -- the tier changes ------------------------------------------------------------
    def compress_gain(self, seq: BlockSeq, tier: int) -> int:
        """Net free blocks :meth:`requantize` to ``tier`` would give (no side effects):
        the blocks only this request holds, less the private blocks it takes. Negative
        when it shares most of its blocks with other running requests."""
        released = list(map(self.pool.ref.__getitem__, seq.blocks)).count(1)
        return released - self.blocks_for(seq.num_computed, tier)

    def requantize(self, seq: BlockSeq, tier: int, now: int) -> int:
        """Move a running request's KV to ``tier`` (> its tier): release its blocks
        (tail first, as a free: its cached full blocks stay in the prefix cache,
        evictable, as the full-precision version other requests may still hit) and
        take ``blocks_for(num_computed, tier)`` private blocks from the pool's free
        order. Returns the net change of free blocks (may be <= 0, see
        :meth:`compress_gain`). The caller checked that the new blocks fit."""
        before = self.pool.num_free
        self.free(seq, now)
        n = self.blocks_for(seq.num_computed, tier)
        seq.blocks = self.pool.allocate(n, now)
        seq.nblocks = n
        seq.num_cached_blocks = 0
        self.tier[seq.idx] = tier
        return self.pool.num_free - before

    def restore(self, seq: BlockSeq, tier: int, now: int) -> None:
        """Give a swapped-in request ``blocks_for(num_computed, tier)`` blocks. At tier
        0 its full blocks are cached again under their keys (the content is back on the
        GPU, as when a step fills a block); above tier 0 they stay private."""
        n = self.blocks_for(seq.num_computed, tier)
        seq.blocks = self.pool.allocate(n, now)
        seq.nblocks = n
        seq.num_cached_blocks = 0
        if tier:
            self.tier[seq.idx] = tier
        else:
            self._cache(seq, seq.num_computed, now)
