"""LRU: vLLM v1's eviction order, exactly (the default).

vLLM keeps cached free blocks in ``FreeKVCacheBlockQueue``: freed keyed blocks
are appended at the tail (a request's blocks tail first, so its last block is
evicted before its first), a hit removes a block from the middle, allocation
pops from the head. An ``OrderedDict`` gives the same O(1) operations, and the
pool drives it in batches (one call per release, hit or allocation).

Over extents the queue is one :class:`~kvlab.sim.policies.ring.Ring`, which the
extent pool walks itself when it evicts (:class:`LRUQueue`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from itertools import islice
from typing import Any

from kvlab.sim.policies.base import PolicyBase, Splitter, Sweep
from kvlab.sim.policies.ring import Ring


class LRU(PolicyBase):
    """Evict the block that became free longest ago (vLLM v1 order).

    Invariant: ``_queue`` is in eviction order, head first; it holds exactly the
    evictable blocks.
    """

    name = "lru"
    supports_extents = True
    no_extents_reason = ""

    def __init__(self) -> None:
        self._queue: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queue)

    def insert(self, block_id: int, now: int) -> None:
        self._queue[block_id] = None

    def insert_many(self, blocks: Iterable[int], now: int) -> None:
        q = self._queue
        for b in blocks:
            q[b] = None

    def remove(self, block_id: int) -> None:
        del self._queue[block_id]

    def remove_many(self, blocks: Iterable[int]) -> None:
        q = self._queue
        for b in blocks:
            del q[b]

    def pop_victim(self, now: int) -> int:
        return self._queue.popitem(last=False)[0]

    def pop_victims(self, n: int, now: int) -> list[int]:
        q = self._queue
        out = list(islice(q, n))  # the head, in order
        for b in out:
            del q[b]
        return out

    def order(self) -> list[int]:
        return list(self._queue)

    def extent_queue(self, block_size: int, split: Splitter) -> LRUQueue:
        return LRUQueue()


class LRUQueue(Ring):
    """LRU over extents: one ring in free order (the extent pool evicts from its
    head without calling :meth:`next_victims`)."""

    by_caching_order = False

    __slots__ = ()

    def push(self, e: Any, now: int) -> None:
        head = self.head  # (Ring.append, inline: the pool's most frequent call)
        last = head.qprev
        e.qprev = last
        e.qnext = head
        last.qnext = e
        head.qprev = e

    def remove(self, e: Any) -> None:
        p, q = e.qprev, e.qnext  # (Ring.unlink, inline)
        p.qnext = q
        q.qprev = p
        e.qprev = e.qnext = None

    def split(self, e: Any, h: Any) -> None:
        self.insert_before(e, h)

    def hit(self, e: Any) -> None:
        return None

    def next_victims(self, limit: int, q: int, sweep: Sweep) -> tuple[Any, int]:
        e = self.head.qnext
        x = e.n if e.n <= limit else limit
        if x == e.n:
            self.unlink(e)
        return e, x
