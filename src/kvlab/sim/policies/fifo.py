"""FIFO: evict the block that was cached first, whatever its hits since."""

from __future__ import annotations

import heapq
from typing import Any

from kvlab.sim.policies.base import Splitter, Sweep
from kvlab.sim.policies.keyed import BlockStats, KeyPolicy


class FIFO(KeyPolicy):
    """Key: the order in which blocks got their content (SGLang's FIFO by creation time)."""

    name = "fifo"

    def key(self, s: BlockStats) -> int:
        return s.cached

    def extent_queue(self, block_size: int, split: Splitter) -> FIFOQueue:
        return FIFOQueue()


class FIFOQueue:
    """FIFO over extents: a heap of the free extents by caching order.

    An extent's blocks were cached one after the other (the pool grows an extent
    only with the next blocks cached), so block i of ``e`` is ``e.cached + i`` and
    no other block comes between: an extent leaves from its first block, and stays
    first while it does. Invariant: ``heap`` holds ``(cached, token, e)`` for every
    queued ``e`` with ``e.qtag == token``, its caching order as of its push (only
    raised since, by evictions: still the smallest); other entries are stale.
    """

    by_caching_order = True

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Any]] = []
        self.num_pushed = 0

    def push(self, e: Any, now: int) -> None:
        self.num_pushed += 1
        e.qtag = self.num_pushed
        heapq.heappush(self.heap, (e.cached, self.num_pushed, e))

    def remove(self, e: Any) -> None:
        e.qtag = None

    def split(self, e: Any, h: Any) -> None:
        self.push(h, 0)

    def hit(self, e: Any) -> None:
        return None

    def next_victims(self, limit: int, q: int, sweep: Sweep) -> tuple[Any, int]:
        heap = self.heap
        while True:
            _, token, e = heap[0]
            if e.qtag == token:
                break
            heapq.heappop(heap)
        x = e.n if e.n <= limit else limit
        if x == e.n:
            heapq.heappop(heap)
            e.qtag = None
        return e, x

    def close(self) -> None:
        self.heap = []
