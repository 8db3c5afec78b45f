"""The eviction-policy protocol both block pools drive.

A policy orders the *cached free* blocks: blocks whose reference count is 0
and that still hold a block key, so a later request can hit them. Unkeyed free
blocks never reach a policy: the pool always reuses them first (vLLM v1
``FreeKVCacheBlockQueue`` keeps them at the head of its queue).

Per block (:class:`kvlab.sim.block_pool.BlockPool`, the reference), in the
pool's order of events:

``insert_many(blocks, now)``
    the blocks became evictable, in this order (a request's blocks tail first).
``remove(block_id)`` / ``remove_many(blocks)``
    evictable blocks were hit and are referenced again.
``pop_victims(n, now)``
    choose, remove and return the next ``n`` blocks to evict, in order.
``on_access(block_id, key, now)``
    a block was hit (touched) or freshly cached (any ref count); the pool calls
    it only when the policy sets ``uses_access``.
``set_retention(block_id, rank)``
    the retention rank of a block about to be cached (0 = system prompt,
    longest-lived; see ``kvlab.workload.records.RETENTION_CLASSES``); the
    engine passes ranks only when the policy sets ``uses_retention``.
``order()``
    the current eviction order, first victim first (tests).

Over extents (:class:`kvlab.sim.extents.ExtentPool`: runs of blocks with the
same state, no block ids), a policy that sets ``supports_extents`` gives the pool
an :class:`ExtentQueue` from :meth:`~EvictionPolicy.extent_queue`; one that
cannot says why in ``no_extents_reason``.

Times are integer simulation ticks (the engine's clock unit).

Policies are deterministic: no clock reads, no randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

#: Cut an extent after its first ``j`` blocks; returns the later part (the pool's
#: :meth:`kvlab.sim.extents.ExtentPool.split`).
Splitter = Callable[[Any, int], Any]


class Sweep(Protocol):
    """The ticks of one batch of evictions: victim ``q`` (0-based) goes at ``tick(q)``,
    nondecreasing in ``q``."""

    def tick(self, q: int) -> int: ...

    def first_at(self, t: int, q: int) -> int:
        """The first victim index ``>= q`` whose tick is ``>= t`` (any index past the
        batch when there is none)."""
        ...


class ExtentQueue(Protocol):
    """The free queue of an extent pool: the evictable extents, in eviction order.

    An extent stands for its blocks from its last to its first (a request releases
    its blocks tail first), so blocks leave an extent from its end; every block of
    an extent has the same policy state (its hits since caching ``hits``, retention
    rank ``rank``); ``qtag`` and the links ``qprev`` / ``qnext`` are the queue's.

    A queue ``by_caching_order`` instead orders blocks by when they got their
    content (``e.cached + i`` for block i of ``e``): blocks leave an extent from its
    first, and the pool keys every request's output as it fills (not lazily).
    """

    by_caching_order: bool

    def push(self, e: Any, now: int) -> None:
        """Extent ``e`` became free (reference count 0): a release, tail first."""
        ...

    def remove(self, e: Any) -> None:
        """Free extent ``e`` was hit (whole: the pool split it first)."""
        ...

    def split(self, e: Any, h: Any) -> None:
        """Queued ``e`` was cut: ``h`` holds its later blocks (evicted before ``e``'s)."""
        ...

    def hit(self, e: Any) -> None:
        """The blocks of ``e`` were hit (after :meth:`remove` when they were free)."""
        ...

    def next_victims(self, limit: int, q: int, sweep: Sweep) -> tuple[Any, int]:
        """The extent whose last ``x`` blocks (``1 <= x <= limit``, ``x <= n``) are the
        next victims, starting with victim ``q`` of the batch; unlinked when ``x == n``."""
        ...

    def close(self) -> None:
        """Unlink everything (the rings are the pool's only reference cycles)."""
        ...


class EvictionPolicy(Protocol):
    name: str
    uses_access: bool
    uses_retention: bool
    supports_extents: bool
    no_extents_reason: str

    def __len__(self) -> int: ...

    def insert(self, block_id: int, now: int) -> None: ...

    def insert_many(self, blocks: Iterable[int], now: int) -> None: ...

    def remove(self, block_id: int) -> None: ...

    def remove_many(self, blocks: Iterable[int]) -> None: ...

    def pop_victim(self, now: int) -> int: ...

    def pop_victims(self, n: int, now: int) -> list[int]: ...

    def on_access(self, block_id: int, key: Hashable, now: int) -> None: ...

    def order(self) -> list[int]: ...

    def set_retention(self, block_id: int, rank: int) -> None: ...

    def extent_queue(self, block_size: int, split: Splitter) -> ExtentQueue: ...


class PolicyBase:
    """No-op hooks and one-block-at-a-time batches shared by the policies."""

    name = "base"
    #: whether the pool must call :meth:`on_access` (hits and cachings)
    uses_access: bool = False
    #: whether the engine must pass retention ranks (:meth:`set_retention`)
    uses_retention: bool = False
    #: whether :meth:`extent_queue` gives an order over extents with the same results
    supports_extents: bool = False
    #: why not, when it does not (recorded with a run that falls back to the block pool)
    no_extents_reason: str = "the policy has no extent queue"

    def insert(self, block_id: int, now: int) -> None:
        raise NotImplementedError

    def remove(self, block_id: int) -> None:
        raise NotImplementedError

    def pop_victim(self, now: int) -> int:
        raise NotImplementedError

    def insert_many(self, blocks: Iterable[int], now: int) -> None:
        for b in blocks:
            self.insert(b, now)

    def remove_many(self, blocks: Iterable[int]) -> None:
        for b in blocks:
            self.remove(b)

    def pop_victims(self, n: int, now: int) -> list[int]:
        return [self.pop_victim(now) for _ in range(n)]

    def on_access(self, block_id: int, key: Hashable, now: int) -> None:
        return None

    def set_retention(self, block_id: int, rank: int) -> None:
        return None

    def extent_queue(self, block_size: int, split: Splitter) -> ExtentQueue:
        raise NotImplementedError(f"policy {self.name!r}: {self.no_extents_reason}")
