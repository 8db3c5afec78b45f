"""LRU: vLLM v1's eviction order, exactly (the default).

vLLM keeps cached free blocks in ``FreeKVCacheBlockQueue``: freed keyed blocks
are appended at the tail (a request's blocks tail first, so its last block is
evicted before its first), a hit removes a block from the middle, allocation
pops from the head. An ``OrderedDict`` gives the same O(1) operations.
"""

from __future__ import annotations

from collections import OrderedDict

from kvlab.sim.policies.base import PolicyBase


class LRU(PolicyBase):
    """Evict the block that became free longest ago (vLLM v1 order).

    Invariant: ``_queue`` is in eviction order, head first; it holds exactly the
    evictable blocks.
    """

    name = "lru"
    #: the extent pool implements this order (kvlab.sim.extents)
    supports_extents = True

    def __init__(self) -> None:
        self._queue: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queue)

    def insert(self, block_id: int, now: int) -> None:
        self._queue[block_id] = None

    def remove(self, block_id: int) -> None:
        del self._queue[block_id]

    def pop_victim(self, now: int) -> int:
        return self._queue.popitem(last=False)[0]

    def order(self) -> list[int]:
        return list(self._queue)
