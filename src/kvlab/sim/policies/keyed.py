"""Policies that are a sort key: evict the free block with the smallest key, the least
recently freed first among equal keys (SGLang's eviction strategies are one
``get_priority(node)`` each, the same idea).

A subclass only writes :meth:`KeyPolicy.key` over a block's :class:`BlockStats`;
:class:`KeyPolicy` keeps the state and the order, per block (a heap) and over
extents (:class:`LevelQueue`: a ring per key value). A key that reads only
``hits`` and ``rank`` runs on extents as it is: both are the same for every block
of an extent (the pool splits extents where they would differ), and a key never
changes while a block is free, so an extent's blocks stay together, in free order.
A key that reads ``cached`` (FIFO) differs along an extent; FIFO gives its own
queue (:class:`kvlab.sim.policies.fifo.FIFOQueue`).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Any

from kvlab.sim.policies.base import ExtentQueue, PolicyBase, Splitter, Sweep
from kvlab.sim.policies.ring import Ring

#: Rank of blocks whose retention class was never set.
DEFAULT_RANK = 1


class BlockStats:
    """What a key may read of a cached block: ``hits`` since its content was cached,
    its retention ``rank`` (0 = longest-lived) and ``cached``, the order in which
    blocks got their content (1, 2, ...; per block only: the extent pool keys a
    request's fresh output when it is released, so it cannot know it)."""

    __slots__ = ("cached", "hits", "rank")

    def __init__(self, hits: int, rank: int, cached: int) -> None:
        self.hits = hits
        self.rank = rank
        self.cached = cached


class KeyPolicy(PolicyBase):
    """Evict the evictable block with the smallest ``(key(stats), free order)``.

    Invariants: ``_key[b]`` / ``_hits[b]`` / ``_cached[b]``: block b's key, hits since
    it was cached and caching order, for every keyed block the policy saw; ``_rank[b]``
    its retention rank if set; ``_entry[b] = (key, free order, b)`` for every evictable
    block, as of its insert (keys do not change while a block is free); ``_heap`` holds
    at least those entries (others are stale, skipped lazily).
    """

    name = "key"
    uses_access = True
    supports_extents = True
    no_extents_reason = ""

    def __init__(self) -> None:
        self._key: dict[int, Hashable] = {}
        self._hits: dict[int, int] = {}
        self._cached: dict[int, int] = {}
        self._rank: dict[int, int] = {}
        self._entry: dict[int, tuple[Any, int, int]] = {}
        self._heap: list[tuple[Any, int, int]] = []
        self._num_cached = 0
        self._num_freed = 0

    def key(self, s: BlockStats) -> Any:
        """The block's eviction key (smaller goes first); an int or a tuple of ints."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._entry)

    def on_access(self, block_id: int, key: Hashable, now: int) -> None:
        if self._key.get(block_id) != key:
            self._key[block_id] = key
            self._hits[block_id] = 0
            self._num_cached += 1
            self._cached[block_id] = self._num_cached
        else:
            self._hits[block_id] += 1

    def set_retention(self, block_id: int, rank: int) -> None:
        self._rank[block_id] = rank

    def insert(self, block_id: int, now: int) -> None:
        s = BlockStats(
            self._hits.get(block_id, 0),
            self._rank.get(block_id, DEFAULT_RANK),
            self._cached.get(block_id, 0),
        )
        self._num_freed += 1
        e = (self.key(s), self._num_freed, block_id)
        self._entry[block_id] = e
        heapq.heappush(self._heap, e)

    def remove(self, block_id: int) -> None:
        del self._entry[block_id]

    def pop_victim(self, now: int) -> int:
        heap, entry = self._heap, self._entry
        while True:
            e = heapq.heappop(heap)
            b = e[2]
            if entry.get(b) is e:
                del entry[b]
                self._key.pop(b, None)
                self._rank.pop(b, None)
                return b

    def order(self) -> list[int]:
        return [e[2] for e in sorted(self._entry.values())]

    def extent_queue(self, block_size: int, split: Splitter) -> ExtentQueue:
        """A ring per key value (:class:`LevelQueue`): right for keys of ``hits`` and
        ``rank``; a key that reads ``cached`` needs its own queue (FIFO's)."""
        if not self.supports_extents:
            raise NotImplementedError(f"policy {self.name!r}: {self.no_extents_reason}")
        return LevelQueue(self)


class LevelQueue:
    """A key policy over extents: a ring per key value (``level``), each in free order.

    Invariants: ``rings[level]`` holds the free extents whose key is ``level``
    (``e.qtag``), an extent's blocks from its last to its first; ``levels`` is a heap
    of exactly the keys of ``rings`` (a ring emptied stays until it reaches the top).
    """

    by_caching_order = False

    def __init__(self, policy: KeyPolicy) -> None:
        self.key = policy.key
        self.rings: dict[Any, Ring] = {}
        self.levels: list[Any] = []

    def push(self, e: Any, now: int) -> None:
        level = self.key(e)
        e.qtag = level
        ring = self.rings.get(level)
        if ring is None:
            ring = self.rings[level] = Ring()
            heapq.heappush(self.levels, level)
        ring.append(e)

    def remove(self, e: Any) -> None:
        Ring.unlink(e)

    def split(self, e: Any, h: Any) -> None:
        h.qtag = e.qtag
        Ring.insert_before(e, h)

    def hit(self, e: Any) -> None:
        e.hits += 1

    def next_victims(self, limit: int, q: int, sweep: Sweep) -> tuple[Any, int]:
        levels, rings = self.levels, self.rings
        while True:
            ring = rings[levels[0]]
            e = ring.head.qnext
            if e is not ring.head:
                break
            del rings[heapq.heappop(levels)]
        x = e.n if e.n <= limit else limit
        if x == e.n:
            Ring.unlink(e)
        return e, x

    def close(self) -> None:
        for ring in self.rings.values():
            ring.close()
        self.rings = {}
        self.levels = []
