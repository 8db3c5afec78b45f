"""Hybrid KV cache groups: full-attention and sliding-window groups over one block pool.

vLLM v1 gives a hybrid model one block table per KV cache group, every group drawing
blocks of the same page size from one pool (``HybridKVCacheCoordinator`` over one
``SingleTypeKVCacheManager`` per group, vLLM 0.32). :class:`HybridKV` keeps the same
rules behind :class:`kvlab.sim.kv.KVCache`:

* **keys**: one group caches a block under ``(key, group)``; every group has the
  same block size, so block ``i`` of every table covers the same tokens;
* **lookup** (``find_longest_cache_hit``): groups with the same rule are looked up
  together (a block hits only where every one of them has it); full attention first,
  the longest cached run from the start; then each sliding rule scans from the right
  for ``cdiv(window - 1, block)`` contiguous cached blocks ending at or before the
  candidate length (blocks before the run are the null block), or, failing that, the
  cached run from the start; the candidate shrinks until every rule accepts it and
  the full-attention hit is cut to it;
* **admission** (``allocate_slots``): per group, ``cdiv(tokens, block)`` blocks less
  those the hit covers or the window skips; with ``reserve_full_prompt`` a sliding
  group's demand is capped at ``cdiv(min(window - 1 + in-flight tokens,
  max_model_len), block) + 1`` (``SlidingWindowSpec.max_admission_blocks_per_request``);
  hit blocks with no reference count against the free blocks;
* **sliding frees**: before each allocation a sliding group frees the blocks wholly
  before ``num_computed - window + 1`` (the null block takes their place), newest
  first, stopping at one already freed;
* **caching**: every full block of every group is keyed when the step that fills it is
  scheduled (null blocks are skipped);
* **free**: group by group, each table tail first.

Mamba / linear-attention state groups are not modelled here: a model with them runs on
the attention-only pools, and its provenance says so.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from kvlab.errors import ConfigError
from kvlab.sim.block_pool import BlockPool
from kvlab.sim.sequence import Seq

NULL = 0  # the pool's permanent null block


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class GroupRule:
    """One KV cache group's rule: ``kind`` "full" (full attention, MLA) or "sliding"
    (``window`` tokens, >= 2)."""

    kind: str
    window: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("full", "sliding"):
            raise ConfigError(f"hybrid KV groups: unknown group kind {self.kind!r}")
        if self.kind == "sliding" and (self.window is None or self.window < 2):
            raise ConfigError(
                f"hybrid KV groups: a sliding window needs >= 2 tokens, got {self.window}"
            )

    def skipped_tokens(self, num_computed: int) -> int:
        """Tokens before the window of the next token (vLLM ``get_num_skipped_tokens``)."""
        if self.window is None:
            return 0
        return max(0, num_computed - self.window + 1)


class HybridSeq(Seq):
    """A request over :class:`HybridKV`: ``tables[g]`` is group g's block table (the
    null block where a window skipped), ``cached[g]`` its count of leading cached or
    skipped blocks, ``admitted`` whether it holds blocks (vLLM's running fast path).
    ``nblocks`` is the table length (the same for every group)."""

    __slots__ = ("admitted", "cached", "tables")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.tables: list[list[int]] = []
        self.cached: list[int] = []
        self.admitted = False


class HybridHit:
    """A lookup's result: per-group hit blocks (null blocks included) and the hit
    length in blocks (``len``)."""

    __slots__ = ("blocks", "num_blocks")

    def __init__(self, blocks: list[list[int]], num_blocks: int) -> None:
        self.blocks = blocks
        self.num_blocks = num_blocks

    def __len__(self) -> int:
        return self.num_blocks


class HybridKV:
    """vLLM's hybrid KV cache manager for full-attention and sliding-window groups
    (module docstring); the :class:`kvlab.sim.kv.KVCache` protocol.

    ``num_free`` counts free block *positions*: the pool's free blocks divided by the
    number of groups (a new position of a table takes one block per group), so a decode
    window sized by it always fits; :attr:`pool` has the blocks themselves.
    """

    seq_class = HybridSeq
    #: every decode step goes through :meth:`extend` (vLLM calls ``allocate_slots``
    #: each step, and a sliding group frees the block its window just left)
    quiet_decode_steps = False

    def __init__(
        self,
        pool: BlockPool,
        block_size: int,
        max_model_len: int,
        groups: Sequence[GroupRule],
        *,
        reserve_full_prompt: bool = True,
        watermark_blocks: int = 0,
        in_flight_tokens: int = 0,
    ) -> None:
        if not groups:
            raise ConfigError("hybrid KV groups: at least one group is needed")
        self.pool = pool
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.groups = tuple(groups)
        self.reserve_full_prompt = reserve_full_prompt
        self.watermark_blocks = watermark_blocks
        #: group ids with the same rule, looked up together; full attention first
        rules: dict[GroupRule, list[int]] = {}
        for g, rule in enumerate(self.groups):
            rules.setdefault(rule, []).append(g)
        self.lookup_order = sorted(rules.items(), key=lambda kv: kv[0].kind != "full")
        self.simple = len(self.lookup_order) == 2 and self.lookup_order[0][0].kind == "full"
        #: a sliding group's admission cap in blocks (None: no cap)
        self.caps: list[int | None] = [
            None
            if r.window is None
            else cdiv(min(r.window - 1 + in_flight_tokens, max_model_len), block_size) + 1
            for r in self.groups
        ]

    # -- the pool's state ------------------------------------------------------
    @property
    def num_free(self) -> int:
        return self.pool.num_free // len(self.groups)

    @property
    def num_clean(self) -> int:
        return self.pool.num_clean

    @property
    def num_evicted(self) -> int:
        return self.pool.num_evicted

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    def usage(self) -> float:
        return self.pool.usage()

    def is_cached(self, key: Hashable) -> bool:
        """Whether every group has a block with this key."""
        return all(self.pool.get((key, g)) is not None for g in range(len(self.groups)))

    def histograms(self, ticks_per_s: int) -> dict[str, dict[str, object]]:
        return self.pool.histograms(ticks_per_s)

    def close(self) -> None:
        """Nothing to break: the pool holds no reference cycles."""

    # -- lookup ----------------------------------------------------------------
    def _cached(self, key: Hashable, gids: list[int]) -> list[int] | None:
        get = self.pool.get
        out = []
        for g in gids:
            b = get((key, g))
            if b is None:
                return None
            out.append(b)
        return out

    def _full_hit(self, keys: Sequence[Hashable], max_len: int, gids: list[int]) -> list[list[int]]:
        found: list[list[int]] = [[] for _ in gids]
        for i in range(min(max_len // self.block_size, len(keys))):
            row = self._cached(keys[i], gids)
            if row is None:
                break
            for col, b in zip(found, row, strict=True):
                col.append(b)
        return found

    def _sliding_hit(
        self, keys: Sequence[Hashable], max_len: int, gids: list[int], window: int
    ) -> list[list[int]]:
        bs = self.block_size
        need = cdiv(window - 1, bs)
        n = min(max_len // bs, len(keys))
        found = [[NULL] * n for _ in gids]
        run = 0
        for i in range(n - 1, -1, -1):
            row = self._cached(keys[i], gids)
            if row is None:
                run = 0
                continue
            for col, b in zip(found, row, strict=True):
                col[i] = b
            run += 1
            if run >= need:
                return [col[: i + run] for col in found]
        return [col[:run] for col in found]

    def lookup_seq(self, seq: HybridSeq) -> HybridHit:
        """vLLM ``HybridKVCacheCoordinator.find_longest_cache_hit`` over at most
        ``num_tokens - 1`` tokens."""
        ngroups = len(self.groups)
        if not self.pool.enable_caching:
            return HybridHit([[] for _ in range(ngroups)], 0)
        bs = self.block_size
        seq.ensure_keys((seq.num_tokens - 1) // bs)
        keys = seq.keys
        hit_len = seq.num_tokens - 1
        per_group: list[list[int] | None] = [None] * ngroups
        full_len: dict[int, int] = {}
        while True:
            cur = hit_len
            for rule, gids in self.lookup_order:
                first = gids[0]
                if rule.kind == "full" and per_group[first] is not None:
                    cur = min(cur, full_len[first])
                    continue
                if rule.kind == "full":
                    found = self._full_hit(keys, cur, gids)
                else:
                    assert rule.window is not None
                    found = self._sliding_hit(keys, cur, gids, rule.window)
                cur = len(found[0]) * bs
                for g, col in zip(gids, found, strict=True):
                    per_group[g] = col
                    full_len[g] = cur
            if cur >= hit_len:
                break
            hit_len = cur
            if self.simple:
                break
        n = hit_len // bs
        out: list[list[int]] = []
        for g, rule in enumerate(self.groups):
            col = per_group[g] or []
            out.append(col[:n] if rule.kind == "full" else col)
        return HybridHit(out, n)

    # -- admission and growth ----------------------------------------------------
    def _demand(
        self,
        seq: HybridSeq,
        num_tokens: int,
        hit: HybridHit | None,
        total_computed: int,
        capped: bool,
    ) -> int:
        """Blocks to take from the pool (vLLM ``get_num_blocks_to_allocate``, summed)."""
        bs, ref = self.block_size, self.pool.ref
        total = 0
        for g, rule in enumerate(self.groups):
            required = cdiv(num_tokens, bs)
            cap = self.caps[g]
            if capped and cap is not None:
                required = min(required, cap)
            if seq.admitted:
                total += max(required - len(seq.tables[g]), 0)
                continue
            hit_blocks = hit.blocks[g] if hit is not None else []
            skipped = rule.skipped_tokens(total_computed) // bs
            total += max(required - max(skipped, len(hit_blocks)), 0)
            total += sum(1 for b in hit_blocks[skipped:] if b != NULL and ref[b] == 0)
        return total

    def fits(
        self,
        seq: HybridSeq,
        num_new_tokens: int,
        hit: HybridHit,
        num_external_tokens: int = 0,
        has_running: bool = True,
    ) -> bool:
        """Whether :meth:`admit` would succeed (no side effects)."""
        if num_external_tokens:
            raise ConfigError("hybrid KV groups: external (offloaded) hits are not modelled")
        mml = self.max_model_len
        computed = min(len(hit) * self.block_size, mml)
        wm = self.watermark_blocks if has_running else 0
        free = self.pool.num_free
        if self.reserve_full_prompt:
            need = self._demand(seq, min(seq.num_tokens, mml), hit, computed, True)
            if need + wm > free:
                return False
        slot = min(computed + num_new_tokens, mml)
        return self._demand(seq, slot, hit, computed, False) + wm <= free

    def surely_fits(self, num_tokens: int, has_running: bool) -> bool:
        """Every group's blocks for the whole request fit (a hit only lowers that)."""
        need = cdiv(min(num_tokens, self.max_model_len), self.block_size) * len(self.groups)
        return need + (self.watermark_blocks if has_running else 0) <= self.pool.num_free

    def admit(
        self,
        seq: HybridSeq,
        num_new_tokens: int,
        hit: HybridHit,
        now: int = 0,
        *,
        num_external_tokens: int = 0,
        has_running: bool = True,
    ) -> list[int] | None:
        """Take the hit and allocate the first chunk; None if it does not fit."""
        if not self.fits(seq, num_new_tokens, hit, num_external_tokens, has_running):
            return None
        bs, pool = self.block_size, self.pool
        computed = min(len(hit) * bs, self.max_model_len)
        seq.tables, seq.cached = [], []
        for g, rule in enumerate(self.groups):
            skipped = rule.skipped_tokens(computed) // bs
            kept = hit.blocks[g][skipped:]
            pool.touch([b for b in kept if b != NULL], now)
            table = [NULL] * skipped + kept
            seq.tables.append(table)
            seq.cached.append(len(table))
        seq.admitted = True
        seq.num_cached_blocks = len(hit)
        self._grow(seq, min(computed + num_new_tokens, self.max_model_len), now)
        self._cache(seq, min(computed + num_new_tokens, seq.num_tokens), now)
        return []

    def extend(self, seq: HybridSeq, num_new_tokens: int, now: int = 0) -> bool:
        """Allocate a running request's next ``num_new_tokens``; False if full (the
        window's blocks are freed either way, as in vLLM)."""
        computed = min(seq.num_computed, self.max_model_len)
        self._free_skipped(seq, computed, now)
        need_slot = min(computed + num_new_tokens, self.max_model_len)
        if self._demand(seq, need_slot, None, computed, False) > self.pool.num_free:
            return False
        self._grow(seq, need_slot, now)
        self._cache(seq, min(computed + num_new_tokens, seq.num_tokens), now)
        return True

    def cache_upto(self, seq: HybridSeq, num_tokens: int, now: int) -> None:
        self._cache(seq, num_tokens, now)

    def decode_window(
        self, running: Sequence[Any], k: int, now: int, step_start: Callable[[int], int]
    ) -> None:
        """``k`` decode steps, step by step and request by request (each step frees
        the blocks its window left, allocates and caches, as :meth:`extend`)."""
        for i in range(k):
            t = step_start(i)
            for s in running:
                computed = s.num_computed + i
                self._free_skipped(s, computed, t)
                self._grow(s, min(computed + 1, self.max_model_len), t)
                self._cache(s, min(computed + 1, s.num_tokens + i), t)

    def free(self, seq: HybridSeq, now: int = 0, *, final: bool = False) -> None:
        """Release every group's blocks, group by group, each tail first."""
        for table in seq.tables:
            self.pool.free([b for b in reversed(table) if b != NULL], now)
        seq.tables, seq.cached = [], []
        seq.admitted = False
        seq.nblocks = 0
        seq.num_cached_blocks = 0

    # -- internals ---------------------------------------------------------------
    def _free_skipped(self, seq: HybridSeq, computed: int, now: int) -> None:
        """vLLM ``remove_skipped_blocks``: a sliding group frees its blocks wholly
        before the window, newest first, up to one already freed."""
        bs = self.block_size
        for g, rule in enumerate(self.groups):
            n = rule.skipped_tokens(computed) // bs
            if n <= 0:
                continue
            table = seq.tables[g]
            freed = []
            for i in range(min(n, len(table)) - 1, -1, -1):
                if table[i] == NULL:
                    break
                freed.append(table[i])
                table[i] = NULL
            if freed:
                self.pool.free(freed, now)

    def _grow(self, seq: HybridSeq, need_slot: int, now: int) -> None:
        want = cdiv(need_slot, self.block_size)
        for table in seq.tables:
            if want > len(table):
                table.extend(self.pool.allocate(want - len(table), now))
        seq.nblocks = len(seq.tables[0])

    def _cache(self, seq: HybridSeq, num_tokens: int, now: int) -> None:
        if not self.pool.enable_caching:
            return
        n_full = num_tokens // self.block_size
        seq.ensure_keys(n_full)
        keys, cache = seq.keys, self.pool.cache
        for g, table in enumerate(seq.tables):
            start = seq.cached[g]
            if start >= n_full:
                continue
            for i in range(start, n_full):
                if table[i] != NULL:
                    cache(table[i], (keys[i], g), now)
            seq.cached[g] = n_full
        seq.num_cached_blocks = min(seq.cached)


def group_rules(
    model: Any, *, kv_dtype: str | None, tp: int, block_size: int
) -> tuple[tuple[GroupRule, ...] | None, str | None]:
    """The model's KV cache groups as :class:`GroupRule` s, in vLLM's group order
    (:func:`kvlab.plan.groups.group_layers`), and why they cannot be used.

    ``(rules, None)`` when the model has sliding-window groups this cache models;
    ``(None, None)`` when every group is full attention (the attention-only pools
    apply exactly); ``(None, reason)`` for groups it does not model (Mamba or linear
    attention state, differing block sizes or windows within a group).
    """
    from kvlab.plan.groups import group_layers, layer_caches

    groups = group_layers(layer_caches(model, kv_dtype=kv_dtype, tp=tp, block_size=block_size))
    kinds = {g.kind for g in groups}
    if kinds <= {"full", "mla"}:
        return None, None
    if "mamba" in kinds:
        return None, (
            "Mamba / linear-attention state groups are not modelled by the hybrid KV "
            "cache: every attention layer is simulated as full attention"
        )
    if len({g.block_size for g in groups}) > 1 or any(
        len({x.window for x in g.layers}) > 1 for g in groups
    ):
        return None, (
            "KV cache groups with differing block sizes or windows are not modelled: "
            "every attention layer is simulated as full attention"
        )
    rules = tuple(
        GroupRule("sliding", g.layers[0].window) if g.kind == "sliding" else GroupRule("full")
        for g in groups
    )
    return rules, None


__all__ = ["GroupRule", "HybridHit", "HybridKV", "HybridSeq", "group_rules"]
