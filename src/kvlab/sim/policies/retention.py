"""Retention classes: system prompts and tool definitions outlive history, which
outlives generations and ephemeral reasoning (the idea of NVIDIA Dynamo's
agentic cache hints). Evict from the shortest-lived class first, LRU within it.
"""

from __future__ import annotations

from collections import OrderedDict

from kvlab.sim.policies.base import PolicyBase

#: Rank used for blocks whose class was never set.
DEFAULT_RANK = 1


class Retention(PolicyBase):
    """Invariants: ``_queues[r]`` holds, in LRU order, the evictable blocks of rank r
    (0 = longest-lived); the victim is the head of the highest non-empty rank.
    """

    name = "retention"
    uses_retention = True

    def __init__(self, num_ranks: int = 5) -> None:
        self._queues: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(num_ranks)]
        self._rank: dict[int, int] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def set_retention(self, block_id: int, rank: int) -> None:
        self._rank[block_id] = min(rank, len(self._queues) - 1)

    def insert(self, block_id: int, now: int) -> None:
        self._queues[self._rank.get(block_id, DEFAULT_RANK)][block_id] = None
        self._n += 1

    def remove(self, block_id: int) -> None:
        del self._queues[self._rank.get(block_id, DEFAULT_RANK)][block_id]
        self._n -= 1

    def pop_victim(self, now: int) -> int:
        for q in reversed(self._queues):
            if q:
                b = q.popitem(last=False)[0]
                self._rank.pop(b, None)
                self._n -= 1
                return b
        raise RuntimeError("pop_victim on an empty policy")

    def order(self) -> list[int]:
        return [b for q in reversed(self._queues) for b in q]
