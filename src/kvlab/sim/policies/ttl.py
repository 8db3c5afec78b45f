"""TTL: pin the blocks of long-lived prefixes (retention rank <= ``pin_rank``,
by default system prompts and tool definitions) for ``ttl`` ticks after they
were last freed; everything else is LRU.

Pins are soft: when only pinned blocks are left, the one whose pin ends first
goes, so the cache never deadlocks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from kvlab.sim.policies.base import PolicyBase, Splitter, Sweep
from kvlab.sim.policies.keyed import DEFAULT_RANK
from kvlab.sim.policies.ring import Ring


class TTL(PolicyBase):
    """Invariants: ``_pinned`` holds evictable pinned blocks in free order (hence in
    expiry order, since expiry = free time + ttl); ``_lru`` the other evictable
    blocks in LRU order. Victim order: expired pinned, then LRU, then pinned.
    """

    name = "ttl"
    uses_retention = True
    supports_extents = True
    no_extents_reason = ""

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
        if self._rank.get(block_id, DEFAULT_RANK) <= self.pin_rank:
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

    def extent_queue(self, block_size: int, split: Splitter) -> TTLQueue:
        return TTLQueue(self.ttl, self.pin_rank)


class TTLQueue:
    """TTL over extents: a ring of pinned extents (``qtag``: the tick their pin ends,
    nondecreasing along the ring) and an LRU ring of the others. A pin's blocks all
    end together, so a batch of evictions takes LRU blocks up to the victim whose
    tick reaches the first pin's end, then that pin's blocks."""

    by_caching_order = False

    def __init__(self, ttl: int, pin_rank: int) -> None:
        self.ttl = ttl
        self.pin_rank = pin_rank
        self.pinned = Ring()
        self.lru = Ring()

    def push(self, e: Any, now: int) -> None:
        if e.rank <= self.pin_rank:
            e.qtag = now + self.ttl
            self.pinned.append(e)
        else:
            self.lru.append(e)

    def remove(self, e: Any) -> None:
        Ring.unlink(e)

    def split(self, e: Any, h: Any) -> None:
        h.qtag = e.qtag
        Ring.insert_before(e, h)

    def hit(self, e: Any) -> None:
        return None

    def next_victims(self, limit: int, q: int, sweep: Sweep) -> tuple[Any, int]:
        lru = self.lru.head
        e = lru.qnext
        pinned = self.pinned.head
        p = pinned.qnext
        if p is not pinned:
            if e is lru or p.qtag <= sweep.tick(q):
                e = p
            else:  # LRU blocks until the victim whose tick reaches the pin's end
                until = sweep.first_at(p.qtag, q) - q
                if until < limit:
                    limit = until
        x = e.n if e.n <= limit else limit
        if x == e.n:
            Ring.unlink(e)
        return e, x

    def close(self) -> None:
        self.pinned.close()
        self.lru.close()
