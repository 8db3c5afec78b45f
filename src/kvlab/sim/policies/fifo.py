"""FIFO: evict the block that was cached first, whatever its hits since."""

from __future__ import annotations

import heapq
from collections.abc import Hashable

from kvlab.sim.policies.base import PolicyBase


class FIFO(PolicyBase):
    """Evict in order of caching time.

    Invariants: ``_seq[b]`` is the order in which block b got its current key;
    ``_heap`` holds ``(seq, b)`` for at least every evictable block (stale
    entries are skipped lazily); ``_free`` is the evictable set.
    """

    name = "fifo"

    def __init__(self) -> None:
        self._seq: dict[int, int] = {}
        self._key: dict[int, Hashable] = {}
        self._heap: list[tuple[int, int]] = []
        self._free: set[int] = set()
        self._n = 0

    def __len__(self) -> int:
        return len(self._free)

    def on_access(self, block_id: int, key: Hashable, now: int) -> None:
        if self._key.get(block_id) != key:
            self._key[block_id] = key
            self._n += 1
            self._seq[block_id] = self._n

    def insert(self, block_id: int, now: int) -> None:
        self._free.add(block_id)
        heapq.heappush(self._heap, (self._seq[block_id], block_id))

    def remove(self, block_id: int) -> None:
        self._free.discard(block_id)

    def pop_victim(self, now: int) -> int:
        while True:
            seq, b = heapq.heappop(self._heap)
            if b in self._free and self._seq[b] == seq:
                self._free.discard(b)
                del self._key[b]
                return b

    def order(self) -> list[int]:
        return sorted(self._free, key=lambda b: self._seq[b])
