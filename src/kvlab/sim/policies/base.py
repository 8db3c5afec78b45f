"""The eviction-policy protocol the block pool drives.

A policy orders the *cached free* blocks: blocks whose reference count is 0
and that still hold a block key, so a later request can hit them. Unkeyed free
blocks never reach a policy: the pool always reuses them first (vLLM v1
``FreeKVCacheBlockQueue`` keeps them at the head of its queue).

Calls, in the pool's order of events:

``insert(block_id, now)``
    the block became evictable. A request's blocks arrive tail first.
``remove(block_id)``
    an evictable block was hit and is referenced again.
``pop_victim(now)``
    choose, remove and return the block to evict next.
``on_access(block_id, key, now)``
    a block was hit (touched) or freshly cached (any ref count).
``on_evict(key)``
    a victim's key left the cache (for ghost lists).
``set_retention(block_id, rank)``
    the retention rank of a just-cached block (0 = system prompt, longest-lived;
    see ``kvlab.workload.records.RETENTION_CLASSES``).
``order()``
    the current eviction order, first victim first (tests).

Times are integer simulation ticks (the engine's clock unit).

Policies are deterministic: no clock reads, no randomness.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol


class EvictionPolicy(Protocol):
    name: str

    def __len__(self) -> int: ...

    def insert(self, block_id: int, now: int) -> None: ...

    def remove(self, block_id: int) -> None: ...

    def pop_victim(self, now: int) -> int: ...

    def on_access(self, block_id: int, key: Hashable, now: int) -> None: ...

    def on_evict(self, key: Hashable) -> None: ...

    def order(self) -> list[int]: ...

    def set_retention(self, block_id: int, rank: int) -> None: ...


class PolicyBase:
    """No-op hooks shared by the simple policies."""

    name = "base"

    def on_access(self, block_id: int, key: Hashable, now: int) -> None:
        return None

    def on_evict(self, key: Hashable) -> None:
        return None

    def set_retention(self, block_id: int, rank: int) -> None:
        return None
