"""A prefix cache of ``capacity`` blocks replayed over a :class:`PrefixTrace`, stopping
at every eviction so that something else (a policy, an RL agent, Belady's oracle)
chooses the victim.

Semantics are exactly :func:`kvlab.sim.cache_curve.reference_cache_curve`'s: per
request, the hit is the longest run of its first ``hittable`` blocks present in the
cache; then its blocks are touched tail first (a present block becomes most
recently used; a missing one is inserted, after one victim leaves when the cache is
full). Evicting the least recently used block (:meth:`PrefixCache.lru_order`'s
first) therefore reproduces the cache curve's LRU hit count.

Per cached key the cache keeps what a policy may read: ``last`` (request index of
its last touch), ``born`` (of its insertion), ``touches`` since insertion, ``gap``
(requests between its last two touches, 0 before a reuse), ``rank`` (retention),
``depth`` (block index in its prompt) and ``children`` (distinct child blocks seen so
far in the whole trace: how many prefixes share it).

Invariants: ``len(order) <= capacity``; ``order`` holds the cached keys, least
recently used first; ``pending`` is the key waiting for a victim (None when the
cache is not stopped at a decision); ``hit_blocks`` counts hits so far.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from itertools import islice

from kvlab.errors import ConfigError
from kvlab.rl.prefix_trace import PrefixTrace


class PrefixCache:
    """One replay of requests ``[first, last)`` of ``trace`` with ``capacity`` blocks."""

    def __init__(
        self, trace: PrefixTrace, capacity: int, first: int = 0, last: int | None = None
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"capacity must be an integer >= 1 block, got {capacity!r}")
        self.trace = trace
        self.capacity = capacity
        self.first = first
        self.last = trace.num_requests if last is None else last
        n = trace.num_keys
        self.order: OrderedDict[int, None] = OrderedDict()
        self.last_touch = [0] * n
        self.born = [0] * n
        self.touches = [0] * n
        self.gap = [0] * n
        self.rank = [1] * n
        self.depth = [0] * n
        self.children = [0] * n
        self._seen = bytearray(n)
        self.hit_blocks = 0
        self.decisions = 0
        self.evictions = 0
        self.pending: int | None = None
        self._pending_j = 0
        self.request = first  # request being served (== last when done)
        self._j = 0  # next block (index into trace.keys) to touch, tail first
        self._started = False  # whether the current request's hit is counted
        #: called with (key, block index in the trace, request) whenever a cached key is
        #: touched or inserted
        self.on_touch: Callable[[int, int, int], None] | None = None

    # ------------------------------------------------------------------ running

    @property
    def done(self) -> bool:
        return self.request >= self.last

    def advance(self) -> bool:
        """Replay until a victim is needed (True, ``pending`` set) or the end (False)."""
        if self.pending is not None:
            raise RuntimeError("choose a victim first (evict)")
        t = self.trace
        keys, start, hittable, rank_of = t.keys, t.start, t.hittable, t.rank
        order = self.order
        move = order.move_to_end
        last_touch, touches, gap = self.last_touch, self.touches, self.gap
        cap = self.capacity
        hook = self.on_touch
        r = self.request
        j = self._j
        started = self._started
        while r < self.last:
            a = start[r]
            if not started:  # request start: its hit
                started = True
                h, nh = 0, hittable[r]
                while h < nh and keys[a + h] in order:
                    h += 1
                self.hit_blocks += h
                j = start[r + 1] - 1
            while j >= a:
                k = keys[j]
                if k in order:
                    move(k)
                    touches[k] += 1
                    gap[k] = r - last_touch[k]
                    last_touch[k] = r
                    self.rank[k] = rank_of[j]
                    if hook is not None:
                        hook(k, j, r)
                else:
                    if len(order) >= cap:
                        self.request, self._j, self._started = r, j, True
                        self.pending, self._pending_j = k, j
                        self.decisions += 1
                        return True
                    self._insert(k, j, r)
                j -= 1
            r += 1
            started = False
        self.request, self._j, self._started = r, j, False
        return False

    def evict(self, victim: int) -> None:
        """Drop cached ``victim`` and insert the pending key (then call :meth:`advance`)."""
        k = self.pending
        if k is None:
            raise RuntimeError("no eviction is pending")
        if victim not in self.order:
            raise ValueError(f"key {victim} is not cached")
        del self.order[victim]
        self.evictions += 1
        self.pending = None
        j = self._pending_j
        self._insert(k, j, self.request)
        self._j = j - 1

    def _insert(self, k: int, j: int, r: int) -> None:
        t = self.trace
        self.order[k] = None
        self.last_touch[k] = self.born[k] = r
        self.touches[k] = 0
        self.gap[k] = 0
        self.rank[k] = t.rank[j]
        d = self.depth[k] = t.depth[j]
        if not self._seen[k]:
            self._seen[k] = 1
            if d > 0:
                self.children[t.keys[j - 1]] += 1
        if self.on_touch is not None:
            self.on_touch(k, j, r)

    def lru_order(self, n: int) -> list[int]:
        """The ``n`` least recently used cached keys, least recent first."""
        return list(islice(self.order, n))

    @property
    def hit_tokens(self) -> int:
        return self.hit_blocks * self.trace.block_size


def run_chooser(cache: PrefixCache, choose: Callable[[PrefixCache], int]) -> PrefixCache:
    """Replay to the end, ``choose(cache)`` naming each victim (any cached key)."""
    while cache.advance():
        cache.evict(choose(cache))
    return cache


def lru_hits(trace: PrefixTrace, capacity: int, first: int = 0, last: int | None = None) -> int:
    """Hit blocks of LRU (the cache curve's order)."""
    return run_chooser(
        PrefixCache(trace, capacity, first, last), lambda c: next(iter(c.order))
    ).hit_blocks


def belady_hits(trace: PrefixTrace, capacity: int, first: int = 0, last: int | None = None) -> int:
    """Hit blocks of Belady's offline rule on the same trace: evict the cached key whose
    next hittable use is farthest (never again first; the deeper block on a tie, so a
    prefix outlives its extensions). A request's hit is counted before its touches, so a
    cached key it is still to touch goes first (its touch re-inserts it: evicting it only
    postpones the choice), and a key is valued by its next hittable use after the request.
    The next uses are read exactly from the trace
    (:attr:`PrefixTrace.next_hit`). It is not the exact optimum of this problem (a hit
    needs the whole leading run, every touched block must be inserted): a brute-force
    search beats it on some tiny traces; tests check that it bounds every policy."""
    cache = PrefixCache(trace, capacity, first, last)
    end = cache.last
    keys, start, next_hit, depth = trace.keys, trace.start, trace.next_hit, cache.depth
    order = cache.order
    nxt = [end] * trace.num_keys
    heap: list[tuple[int, int, int]] = []
    push, pop = heapq.heappush, heapq.heappop
    cur = -1

    def begin(r: int) -> None:
        nonlocal cur
        cur = r
        for jj in range(start[r], start[r + 1]):
            kk = keys[jj]
            if kk in order:
                v = next_hit[jj]
                nxt[kk] = v = v if v < end else end
                push(heap, (-v, -depth[kk], kk))

    def touched(k: int, j: int, r: int) -> None:
        if r != cur:
            begin(r)
        v = next_hit[j]
        nxt[k] = v = v if v < end else end
        push(heap, (-v, -depth[k], k))

    def choose(c: PrefixCache) -> int:
        r = c.request
        if r != cur:
            begin(r)
        for jj in range(start[r], c._pending_j):  # still to be touched: evicting one is free
            if keys[jj] in order:
                return keys[jj]
        while True:
            negv, _, k = heap[0]
            if k in order and nxt[k] == -negv:
                return k
            pop(heap)

    cache.on_touch = touched
    return run_chooser(cache, choose).hit_blocks
