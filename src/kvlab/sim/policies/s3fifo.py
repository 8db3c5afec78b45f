"""S3-FIFO (Yang et al., SOSP 2023): a small probationary FIFO, a main FIFO and
a ghost list of recently evicted keys. One-hit blocks (a scan) leave through
the small queue without disturbing the blocks that were reused.

Adapted to a paged KV cache: only evictable blocks (ref count 0) sit in the
queues; a block that was hit since it was cached, or whose key is a ghost,
enters the main queue when freed, others the small queue.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from kvlab.sim.policies.base import PolicyBase


class S3FIFO(PolicyBase):
    """Invariants: every evictable block is in exactly one of ``_small``/``_main``;
    ``_freq[b]`` (0..3) counts hits since caching; ``_ghost`` holds at most
    ``ghost_size`` keys of blocks evicted from the small queue, oldest first.
    """

    name = "s3fifo"

    def __init__(self, small_fraction: float = 0.1, ghost_size: int = 4096) -> None:
        self.small_fraction = small_fraction
        self.ghost_size = ghost_size
        self._small: OrderedDict[int, None] = OrderedDict()
        self._main: OrderedDict[int, None] = OrderedDict()
        self._ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._freq: dict[int, int] = {}
        self._key: dict[int, Hashable] = {}

    def __len__(self) -> int:
        return len(self._small) + len(self._main)

    def on_access(self, block_id: int, key: Hashable, now: int) -> None:
        if self._key.get(block_id) != key:
            self._key[block_id] = key
            self._freq[block_id] = 0
        else:
            self._freq[block_id] = min(3, self._freq[block_id] + 1)

    def insert(self, block_id: int, now: int) -> None:
        key = self._key[block_id]
        if self._freq[block_id] > 0 or key in self._ghost:
            self._ghost.pop(key, None)
            self._main[block_id] = None
        else:
            self._small[block_id] = None

    def remove(self, block_id: int) -> None:
        if self._small.pop(block_id, 0) is not None:
            self._main.pop(block_id)

    def pop_victim(self, now: int) -> int:
        while True:
            if self._small and (
                len(self._small) >= self.small_fraction * len(self) or not self._main
            ):
                b = self._small.popitem(last=False)[0]
                if self._freq[b] > 0:
                    self._main[b] = None
                    continue
                key = self._key.pop(b)
                self._ghost[key] = None
                if len(self._ghost) > self.ghost_size:
                    self._ghost.popitem(last=False)
                return b
            b = self._main.popitem(last=False)[0]
            if self._freq[b] > 0:
                self._freq[b] -= 1
                self._main[b] = None
                continue
            del self._key[b]
            return b

    def order(self) -> list[int]:
        """Queue order (small first); the actual victim also depends on hit counts."""
        return list(self._small) + list(self._main)
