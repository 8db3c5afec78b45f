"""A CPU (host memory) tier below the GPU prefix cache.

Blocks reach the tier when the GPU evicts them (``evict``) or as soon as they
are cached on the GPU (``write_through``). A store occupies the device-to-host
link for ``bytes / bandwidth`` and is readable ``latency`` after it ends. At
admission, the blocks following the GPU hit that the tier holds are reloaded
synchronously: ``latency + bytes / bandwidth`` host-to-device, added to the
step that admits the request (vLLM's KV connector, ``external_prefix_cache_*``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

from kvlab.sim.cost_model import TICKS_PER_S


class OffloadTier:
    """LRU store of block keys.

    Invariants: ``len(_ready) <= capacity_blocks``; ``_ready[key]`` is the tick
    the copy becomes readable; ``_d2h_free`` is when the store link is idle.
    """

    def __init__(
        self,
        capacity_blocks: int,
        block_bytes: float,
        bw_bytes_per_s: float,
        latency_s: float,
        mode: str = "evict",
    ) -> None:
        self.capacity_blocks = capacity_blocks
        self.mode = mode
        self.block_ticks = round(block_bytes / bw_bytes_per_s * TICKS_PER_S)
        self.latency = round(latency_s * TICKS_PER_S)
        self.block_bytes = block_bytes
        self._ready: OrderedDict[Hashable, int] = OrderedDict()
        self._d2h_free = 0
        self.num_stored = 0
        self.num_loaded = 0
        self.num_evicted = 0
        self.queries = 0
        self.hits = 0
        self.load_ticks = 0

    def _store(self, key: Hashable, now: int) -> None:
        if self.capacity_blocks <= 0:
            return
        if key in self._ready:
            self._ready.move_to_end(key)
            return
        start = max(now, self._d2h_free)
        self._d2h_free = start + self.block_ticks
        self._ready[key] = self._d2h_free + self.latency
        self.num_stored += 1
        if len(self._ready) > self.capacity_blocks:
            self._ready.popitem(last=False)
            self.num_evicted += 1

    def on_gpu_evict(self, key: Hashable, now: int) -> None:
        if self.mode == "evict":
            self._store(key, now)

    def on_gpu_cache(self, key: Hashable, now: int) -> None:
        if self.mode == "write_through":
            self._store(key, now)

    def lookup(
        self, keys: Sequence[Hashable], start: int, stop: int, now: int, reserve: bool = False
    ) -> int:
        """How many of ``keys[start:stop]`` the tier can serve, from ``start`` on.

        ``reserve`` moves them to the LRU tail so the admission's own stores
        do not push them out.
        """
        n = 0
        ready = self._ready
        for k in keys[start:stop]:
            t = ready.get(k)
            if t is None or t > now:
                break
            n += 1
        if reserve:
            for k in keys[start : start + n]:
                ready.move_to_end(k)
        return n

    def load(self, keys: Sequence[Hashable], start: int, n: int) -> int:
        """Mark ``n`` blocks reloaded; return the transfer ticks (latency + bytes / bw)."""
        if n <= 0:
            return 0
        ready = self._ready
        for k in keys[start : start + n]:
            if k in ready:  # else pushed out by this admission's own stores; data is in flight
                ready.move_to_end(k)
        self.num_loaded += n
        ticks = self.latency + n * self.block_ticks
        self.load_ticks += ticks
        return ticks

    def usage(self) -> float:
        return len(self._ready) / self.capacity_blocks if self.capacity_blocks else 0.0
