"""Hybrid KV cache groups: full-attention, sliding-window and Mamba state groups over one
block pool.

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

Mamba / linear-attention state groups (vLLM ``MambaManager``; every recurrent layer
has a ``MambaSpec``) follow vLLM's two cache modes, set by prefix caching:

* **"align"** (prefix caching on, vLLM's default for these models; no speculative or
  prefill-checkpoint blocks): the state block has the attention block size and the
  table is position-indexed: block ``i`` holds the state after ``(i + 1) * block``
  tokens. A chunk ending in block ``i`` fills the positions before it with the null
  block and takes one new block there (at most one a step). Before each allocation
  the blocks wholly before ``num_computed - 1`` tokens not yet retired are freed
  (newest first, over null gaps), then the previous step's state block once the
  state moved past it. Every full block's state is keyed when scheduled, as for
  attention. Lookup scans from the right for the last cached state within the
  candidate length (the blocks before it are null); admission takes that one block.
  A hit whose last state was cached in the same step is refused (vLLM schedules it
  a step later), counted only where the step is known (:meth:`HybridKV.admit`).
  The scheduler clips prefill chunks so states fall on block boundaries
  (:meth:`HybridKV.clip_chunk`, vLLM ``Scheduler._mamba_block_aligned_split``).
* **"none"** (prefix caching off): one state block of ``max_model_len`` tokens per
  request, taken at admission and freed with the request.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from kvlab.errors import ConfigError
from kvlab.sim.block_pool import BlockPool
from kvlab.sim.kv_manager import extend_events
from kvlab.sim.sequence import Seq

NULL = 0  # the pool's permanent null block


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class GroupRule:
    """One KV cache group's rule: ``kind`` "full" (full attention, MLA), "sliding"
    (``window`` tokens, >= 2) or "mamba" (recurrent state: Mamba, linear attention)."""

    kind: str
    window: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("full", "sliding", "mamba"):
            raise ConfigError(f"hybrid KV groups: unknown group kind {self.kind!r}")
        if self.kind == "sliding" and (self.window is None or self.window < 2):
            raise ConfigError(
                f"hybrid KV groups: a sliding window needs >= 2 tokens, got {self.window}"
            )

    def skipped_tokens(self, num_computed: int) -> int:
        """Tokens before the window of the next token (vLLM ``get_num_skipped_tokens``;
        a state group needs only the last computed token's state)."""
        if self.kind == "mamba":
            return max(0, num_computed - 1)
        if self.window is None:
            return 0
        return max(0, num_computed - self.window + 1)


class HybridSeq(Seq):
    """A request over :class:`HybridKV`: ``tables[g]`` is group g's block table (the
    null block where a window skipped), ``cached[g]`` its count of leading cached or
    skipped blocks, ``admitted`` whether it holds blocks (vLLM's running fast path).
    ``nblocks`` is the first attention table's length. State groups ("align" mode)
    share ``state_last`` (the previous state block's index, or None) and
    ``state_retired`` (positions before it already freed); ``junction`` is the
    admitting lookup's :attr:`HybridHit.junction`."""

    __slots__ = ("admitted", "cached", "junction", "state_last", "state_retired", "tables")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.tables: list[list[int]] = []
        self.cached: list[int] = []
        self.admitted = False
        self.state_last: int | None = None
        self.state_retired = 0
        self.junction = 0


class HybridHit:
    """A lookup's result: per-group hit blocks (null blocks included), the hit
    length in blocks (``len``) and ``junction``: the longest hit of one group, in
    tokens, where it is longer than the hit (a shared prefix a state group has not
    cached; vLLM ``shared_prefix_boundary``), else 0."""

    __slots__ = ("blocks", "junction", "num_blocks")

    def __init__(self, blocks: list[list[int]], num_blocks: int, junction: int = 0) -> None:
        self.blocks = blocks
        self.num_blocks = num_blocks
        self.junction = junction

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
        #: state groups: "align" mode (position-indexed state blocks) with caching,
        #: else one block of max_model_len tokens per request ("none")
        self.align = pool.enable_caching
        self.has_state = any(r.kind == "mamba" for r in self.groups)
        #: the table that gives a request's length in blocks
        self.first_attention = next((g for g, r in enumerate(self.groups) if r.kind != "mamba"), 0)
        #: the tick of the last state caching and the state keys cached at it
        #: (vLLM ``cached_blocks_this_step``)
        self._step_tick: int | None = None
        self._step_keys: set[Hashable] = set()
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

    def _state_hit(
        self, keys: Sequence[Hashable], max_len: int, gids: list[int]
    ) -> list[list[int]]:
        """vLLM ``MambaManager.find_longest_cache_hit``: the last cached state within
        ``max_len`` tokens, the null block before it."""
        for i in range(min(max_len // self.block_size, len(keys)) - 1, -1, -1):
            row = self._cached(keys[i], gids)
            if row is not None:
                return [[NULL] * i + [b] for b in row]
        return [[] for _ in gids]

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
        longest = 0
        while True:
            cur = hit_len
            for rule, gids in self.lookup_order:
                first = gids[0]
                if rule.kind == "full" and per_group[first] is not None:
                    cur = min(cur, full_len[first])
                    continue
                if rule.kind == "full":
                    found = self._full_hit(keys, cur, gids)
                elif rule.kind == "mamba":
                    found = self._state_hit(keys, cur, gids)
                else:
                    assert rule.window is not None
                    found = self._sliding_hit(keys, cur, gids, rule.window)
                cur = len(found[0]) * bs
                for g, col in zip(gids, found, strict=True):
                    per_group[g] = col
                    full_len[g] = cur
                longest = max(longest, cur)
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
        return HybridHit(out, n, longest if longest > n * bs else 0)

    # -- admission and growth ----------------------------------------------------
    def _demand(
        self,
        seq: HybridSeq,
        num_tokens: int,
        hit: HybridHit | None,
        total_computed: int,
        capped: bool,
        now: int | None = None,
    ) -> int:
        """Blocks to take from the pool (vLLM ``get_num_blocks_to_allocate``, summed);
        more than the pool holds for a state hit cached in step ``now``."""
        bs, ref = self.block_size, self.pool.ref
        total = 0
        for g, rule in enumerate(self.groups):
            if rule.kind == "mamba":
                hit_blocks = hit.blocks[g] if hit is not None else []
                held = len(seq.tables[g]) if seq.admitted else 0
                if not self.align:
                    required = cdiv(num_tokens, self.max_model_len)
                    total += max(required - held, 0)
                    continue
                if (
                    hit_blocks
                    and now is not None
                    and now == self._step_tick
                    and (seq.keys[len(hit_blocks) - 1], g) in self._step_keys
                ):
                    return self.pool.num_blocks + 1
                new = cdiv(num_tokens, bs) - len(hit_blocks) - held
                total += min(new, 1) + sum(1 for b in hit_blocks if b != NULL and ref[b] == 0)
                continue
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
        *,
        now: int | None = None,
    ) -> bool:
        """Whether :meth:`admit` would succeed (no side effects); ``now`` (the step's
        tick) also refuses a state hit cached in that step."""
        if num_external_tokens:
            raise ConfigError("hybrid KV groups: external (offloaded) hits are not modelled")
        mml = self.max_model_len
        computed = min(len(hit) * self.block_size, mml)
        wm = self.watermark_blocks if has_running else 0
        free = self.pool.num_free
        if self.reserve_full_prompt:
            need = self._demand(seq, min(seq.num_tokens, mml), hit, computed, True, now)
            if need + wm > free:
                return False
        slot = min(computed + num_new_tokens, mml)
        return self._demand(seq, slot, hit, computed, False, now) + wm <= free

    def surely_fits(self, num_tokens: int, has_running: bool) -> bool:
        """Every group's blocks for the whole request fit (a hit only lowers that)."""
        need = cdiv(min(num_tokens, self.max_model_len), self.block_size) * len(self.groups)
        return need + (self.watermark_blocks if has_running else 0) <= self.pool.num_free

    def clip_chunk(
        self,
        seq: HybridSeq,
        start: int,
        num_new_tokens: int,
        max_chunk_tokens: int,
        hit: HybridHit | None = None,
    ) -> int:
        """The tokens to schedule of ``num_new_tokens`` from ``start`` (vLLM
        ``Scheduler._mamba_block_aligned_split``, "align" mode only): a prefill chunk
        ends on a block boundary (where a state is kept) unless it ends the prefill
        or a block is wider than ``max_chunk_tokens``; it never runs past the next
        boundary from inside a block, the last boundary before the last token, or
        the shared-prefix junction (``hit``'s for an admission, else the
        request's). 0: nothing this step."""
        if not (self.align and self.has_state):
            return num_new_tokens
        bs = self.block_size
        prefill_end = max(seq.prompt_len, seq.num_tokens - 1)
        if start >= prefill_end:
            return num_new_tokens
        end = start + num_new_tokens
        if end < prefill_end:
            aligned = end // bs * bs
            if aligned > start or bs <= max_chunk_tokens:
                end = aligned
        junction = hit.junction if hit is not None else seq.junction
        stops = (
            (start // bs + 1) * bs if start % bs else 0,
            max((seq.num_tokens - 1) // bs * bs, 0),
            start + (junction - start) // bs * bs if start < junction < end else 0,
        )
        end = min((x for x in stops if start < x < end), default=end)
        return max(end - start, 0)

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
        if not self.fits(seq, num_new_tokens, hit, num_external_tokens, has_running, now=now):
            return None
        bs, pool = self.block_size, self.pool
        computed = min(len(hit) * bs, self.max_model_len)
        seq.tables, seq.cached = [], []
        seq.state_last, seq.state_retired = None, 0
        seq.junction = hit.junction
        for g, rule in enumerate(self.groups):
            skipped = rule.skipped_tokens(computed) // bs
            kept = hit.blocks[g][skipped:]
            pool.touch([b for b in kept if b != NULL], now)
            table = [NULL] * skipped + kept
            seq.tables.append(table)
            seq.cached.append(len(table))
        seq.admitted = True
        seq.num_cached_blocks = len(hit)
        slot = computed + num_new_tokens
        self._grow(seq, min(slot, self.max_model_len), now, slot)
        self._cache(seq, min(slot, seq.num_tokens), now)
        return []

    def extend(self, seq: HybridSeq, num_new_tokens: int, now: int = 0) -> bool:
        """Allocate a running request's next ``num_new_tokens``; False if full (the
        window's blocks are freed either way, as in vLLM)."""
        computed = min(seq.num_computed, self.max_model_len)
        self._free_skipped(seq, computed, now)
        need_slot = min(computed + num_new_tokens, self.max_model_len)
        if self._demand(seq, need_slot, None, computed, False) > self.pool.num_free:
            return False
        self._grow(seq, need_slot, now, computed + num_new_tokens)
        self._cache(seq, min(computed + num_new_tokens, seq.num_tokens), now)
        return True

    def cache_upto(self, seq: HybridSeq, num_tokens: int, now: int) -> None:
        self._cache(seq, num_tokens, now)

    def extend_window(
        self, running: Sequence[Any], events: Sequence[int], starts: Sequence[int]
    ) -> bool:
        return extend_events(self, running, events, starts)

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
                self._grow(s, min(computed + 1, self.max_model_len), t, computed + 1)
                self._cache(s, min(computed + 1, s.num_tokens + i), t)

    def free(self, seq: HybridSeq, now: int = 0, *, final: bool = False) -> None:
        """Release every group's blocks, group by group, each tail first."""
        for table in seq.tables:
            self.pool.free([b for b in reversed(table) if b != NULL], now)
        seq.tables, seq.cached = [], []
        seq.admitted = False
        seq.state_last, seq.state_retired = None, 0
        seq.nblocks = 0
        seq.num_cached_blocks = 0

    # -- internals ---------------------------------------------------------------
    def _free_skipped(self, seq: HybridSeq, computed: int, now: int) -> None:
        """vLLM ``remove_skipped_blocks``: a sliding group frees its blocks wholly
        before the window, newest first, up to one already freed; a state group
        ("align") its blocks before the last computed token not yet retired, then
        the previous state block once the state moved past it."""
        bs = self.block_size
        retired = None
        for g, rule in enumerate(self.groups):
            if rule.kind == "mamba":
                if self.align:
                    retired = self._free_states(seq, g, computed, now)
                continue
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
        if retired is not None:
            seq.state_retired = retired

    def _free_states(self, seq: HybridSeq, g: int, computed: int, now: int) -> int:
        """One state group's frees (:meth:`_free_skipped`); the retired count after."""
        table, pool = seq.tables[g], self.pool
        first, retired = seq.state_retired, seq.state_retired
        last = min(self.groups[g].skipped_tokens(computed) // self.block_size, len(table))
        if first < last:
            freed = []
            for i in range(last - 1, first - 1, -1):
                if table[i] != NULL:
                    freed.append(table[i])
                    table[i] = NULL
            if freed:
                pool.free(freed, now)
            retired = last
        prev = seq.state_last
        if prev is not None and prev < cdiv(computed, self.block_size) - 1 and table[prev] != NULL:
            pool.free([table[prev]], now)
            table[prev] = NULL
        return retired

    def _grow(self, seq: HybridSeq, need_slot: int, now: int, num_tokens: int) -> None:
        """Blocks for ``need_slot`` token slots (``num_tokens``: the same, uncapped by
        ``max_model_len``, which positions a state block)."""
        bs = self.block_size
        want = cdiv(need_slot, bs)
        for g, table in enumerate(seq.tables):
            if self.groups[g].kind != "mamba":
                if want > len(table):
                    table.extend(self.pool.allocate(want - len(table), now))
            elif not self.align:
                if not table:
                    table.extend(self.pool.allocate(cdiv(need_slot, self.max_model_len), now))
            else:
                required = cdiv(num_tokens, bs)
                prev = len(table)
                if required <= prev:
                    continue
                if prev > 0:
                    seq.state_last = prev - 1
                if prev < required - 1:
                    table.extend([NULL] * (required - 1 - prev))
                table.extend(self.pool.allocate(required - len(table), now))
        seq.nblocks = len(seq.tables[self.first_attention])

    def _cache(self, seq: HybridSeq, num_tokens: int, now: int) -> None:
        if not self.pool.enable_caching:
            return
        n_full = num_tokens // self.block_size
        seq.ensure_keys(n_full)
        keys, cache = seq.keys, self.pool.cache
        # the prompt's last block boundary before its last token: a state there is
        # keyed again (and counts as cached this step) while its block is held
        tail = (seq.prompt_len - 1) // self.block_size
        for g, table in enumerate(seq.tables):
            state = self.groups[g].kind == "mamba"
            if state:
                if now != self._step_tick:
                    self._step_tick = now
                    self._step_keys.clear()
                if n_full == tail > 0 and n_full <= len(table) and table[n_full - 1] != NULL:
                    cache(table[n_full - 1], (keys[n_full - 1], g), now)
                    self._step_keys.add((keys[n_full - 1], g))
            start = seq.cached[g]
            if start >= n_full:
                continue
            for i in range(start, n_full):
                if table[i] != NULL:
                    cache(table[i], (keys[i], g), now)
                    if state:
                        self._step_keys.add((keys[i], g))
            seq.cached[g] = n_full
        seq.num_cached_blocks = min(seq.cached)


def group_rules(
    model: Any, *, kv_dtype: str | None, tp: int, block_size: int
) -> tuple[tuple[GroupRule, ...] | None, str | None]:
    """The model's KV cache groups as :class:`GroupRule` s, in vLLM's group order
    (:func:`kvlab.plan.groups.group_layers`), and why they cannot be used.

    ``(rules, None)`` when the model has sliding-window or state (Mamba, linear
    attention) groups this cache models; ``(None, None)`` when every group is full
    attention (the attention-only pools apply exactly); ``(None, reason)`` for groups
    it does not model (differing block sizes or windows within a group, a block size
    other than ``block_size``: see :func:`state_block_size`).
    """
    from kvlab.plan.groups import group_layers, layer_caches

    groups = group_layers(layer_caches(model, kv_dtype=kv_dtype, tp=tp, block_size=block_size))
    kinds = {g.kind for g in groups}
    if kinds <= {"full", "mla"}:
        return None, None
    if any(g.block_size != block_size for g in groups):
        return None, (
            f"vLLM runs this model's KV cache groups with {groups[0].block_size}-token "
            f"blocks, not {block_size}: every attention layer is simulated as full "
            "attention and Mamba state is not simulated"
        )
    if len({g.block_size for g in groups}) > 1 or any(
        len({x.window for x in g.layers}) > 1 for g in groups
    ):
        return None, (
            "KV cache groups with differing block sizes or windows are not modelled: "
            "every attention layer is simulated as full attention"
        )
    rules = tuple(
        GroupRule("sliding", g.layers[0].window)
        if g.kind == "sliding"
        else GroupRule("mamba")
        if g.kind == "mamba"
        else GroupRule("full")
        for g in groups
    )
    return rules, None


def state_block_size(model: Any, *, kv_dtype: str | None, tp: int, block_size: int) -> int:
    """The block size vLLM runs a model with: ``block_size``, raised for a model with
    attention and Mamba / linear-attention layers until an attention page holds a
    state page (``Platform._align_hybrid_block_size``, as
    :func:`kvlab.plan.groups.layer_caches`)."""
    from kvlab.models.spec import RECURRENT_KINDS
    from kvlab.plan.groups import layer_caches

    if not any(x.kind in RECURRENT_KINDS for x in model.layers):
        return block_size
    caches = layer_caches(model, kv_dtype=kv_dtype, tp=tp, block_size=block_size)
    return max(x.block_size for x in caches)


__all__ = ["GroupRule", "HybridHit", "HybridKV", "HybridSeq", "group_rules", "state_block_size"]
