"""TTL: pin the blocks of long-lived prefixes (retention rank <= ``pin_rank``,
by default system prompts and tool definitions) for ``ttl`` ticks after they
were last freed; everything else is LRU.

Pins are soft: when only pinned blocks are left, the one whose pin ends first
goes, so the cache never deadlocks.
"""

from __future__ import annotations

from collections import OrderedDict

from kvlab.sim.policies.base import PolicyBase


class TTL(PolicyBase):
    """Invariants: ``_pinned`` holds evictable pinned blocks in free order (hence in
    expiry order, since expiry = free time + ttl); ``_lru`` the other evictable
    blocks in LRU order. Victim order: expired pinned, then LRU, then pinned.
    """

    name = "ttl"
    uses_retention = True

    def __init__(self, ttl: int, pin_rank: int = 0) -> None:
        if ttl < 0:
            raise ValueError("ttl must be >= 0")
        self.ttl = ttl
        self.pin_rank = pin_rank
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._pinned: OrderedDict[int, int] = OrderedDict()
        self._rank: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._lru) + len(self._pinned)

    def set_retention(self, block_id: int, rank: int) -> None:
        self._rank[block_id] = rank

    def insert(self, block_id: int, now: int) -> None:
        if self._rank.get(block_id, 1) <= self.pin_rank:
            self._pinned[block_id] = now + self.ttl
        else:
            self._lru[block_id] = None

    def remove(self, block_id: int) -> None:
        if self._lru.pop(block_id, 0) is not None:
            del self._pinned[block_id]

    def pop_victim(self, now: int) -> int:
        if self._pinned:
            b, expires = next(iter(self._pinned.items()))
            if expires <= now or not self._lru:
                del self._pinned[b]
                self._rank.pop(b, None)
                return b
        b = self._lru.popitem(last=False)[0]
        self._rank.pop(b, None)
        return b

    def order(self) -> list[int]:
        return list(self._lru) + list(self._pinned)
