"""LFU: evict the cached block hit least often; ties go to the least recently freed."""

from __future__ import annotations

import heapq
from collections.abc import Hashable

from kvlab.sim.policies.base import PolicyBase


class LFU(PolicyBase):
    """Evict the evictable block with the fewest hits since it was cached.

    Invariants: ``_freq[b]`` counts hits on block b under its current key;
    ``_heap`` holds ``(freq, free_seq, b)`` for every evictable block as of
    its last insert (entries of blocks hit or re-inserted since are stale).
    """

    name = "lfu"

    def __init__(self) -> None:
        self._freq: dict[int, int] = {}
        self._key: dict[int, Hashable] = {}
        self._entry: dict[int, tuple[int, int, int]] = {}
        self._heap: list[tuple[int, int, int]] = []
        self._n = 0

    def __len__(self) -> int:
        return len(self._entry)

    def on_access(self, block_id: int, key: Hashable, now: int) -> None:
        if self._key.get(block_id) != key:
            self._key[block_id] = key
            self._freq[block_id] = 0
        else:
            self._freq[block_id] += 1

    def insert(self, block_id: int, now: int) -> None:
        self._n += 1
        e = (self._freq[block_id], self._n, block_id)
        self._entry[block_id] = e
        heapq.heappush(self._heap, e)

    def remove(self, block_id: int) -> None:
        del self._entry[block_id]

    def pop_victim(self, now: int) -> int:
        while True:
            e = heapq.heappop(self._heap)
            b = e[2]
            if self._entry.get(b) == e:
                del self._entry[b]
                del self._key[b]
                return b

    def order(self) -> list[int]:
        return [e[2] for e in sorted(self._entry.values())]
