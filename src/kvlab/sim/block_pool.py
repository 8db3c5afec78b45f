"""The paged KV block pool, with vLLM v1 semantics (``vllm/v1/core/block_pool.py``).

Blocks are ints ``0 .. num_blocks-1``; block 0 is the permanent null block and
is never handed out, so ``num_blocks - 1`` are usable. A block key is any
hashable that identifies the whole prefix up to the end of a full block (the
simulator uses segment chain ids, the differential test vLLM-style token hashes).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol

from kvlab.sim.policies.base import EvictionPolicy
from kvlab.sim.policies.lru import LRU


class PoolObserver(Protocol):
    def on_allocate(self, block_id: int, now: int) -> None: ...

    def on_hit(self, block_id: int, now: int) -> None: ...

    def on_evict(self, block_id: int, key: Hashable, now: int) -> None: ...

    def on_cache(self, block_id: int, key: Hashable, now: int) -> None: ...


class BlockPool:
    """Free blocks, reference counts and the key -> cached block map.

    Invariants:

    * the free blocks are ``clean`` (no key, reused first: vLLM prepends them
      to its free queue) followed by the policy's evictable keyed blocks; every
      block with ``ref == 0`` except the null block is in exactly one of them;
    * ``clean`` is a stack whose *last* element is the next block handed out;
      initially blocks 1, 2, ... in id order (vLLM's initial queue order);
    * ``cached[key]`` is one block id, or a list of ids in insertion order when
      several blocks hold the same content (vLLM does not deduplicate); a hit
      takes the first;
    * ``num_evicted`` counts keyed blocks whose key was dropped to reuse them.
    """

    def __init__(
        self,
        num_blocks: int,
        *,
        enable_caching: bool = True,
        policy: EvictionPolicy | None = None,
        observer: PoolObserver | None = None,
    ) -> None:
        if num_blocks < 2:
            raise ValueError("a block pool needs at least 2 blocks (one is the null block)")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.policy: EvictionPolicy = policy if policy is not None else LRU()
        self.observer = observer
        self.policy_uses_retention = getattr(self.policy, "uses_retention", False)
        self.ref = [0] * num_blocks
        self.key: list[Hashable | None] = [None] * num_blocks
        self.cached: dict[Hashable, int | list[int]] = {}
        self.clean: list[int] = list(range(num_blocks - 1, 0, -1))
        self.ref[0] = 1  # the null block is never free
        self.num_evicted = 0

    # -- queries ---------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self.clean) + len(self.policy)

    def usage(self) -> float:
        """vLLM ``kv_cache_usage_perc``: cached free blocks count as free."""
        return 1.0 - self.num_free / (self.num_blocks - 1)

    def num_cached_free(self) -> int:
        return len(self.policy)

    def free_order(self) -> list[int]:
        """Free blocks in the order they will be handed out (vLLM free queue order)."""
        return self.clean[::-1] + self.policy.order()

    def get(self, key: Hashable) -> int | None:
        b = self.cached.get(key)
        if b is None or type(b) is int:
            return b
        return b[0]  # type: ignore[index]

    def longest_hit(self, keys: Sequence[Hashable], max_blocks: int) -> list[int]:
        """Blocks of the longest cached run of ``keys[:max_blocks]`` (vLLM phase 1)."""
        out: list[int] = []
        if not self.enable_caching:
            return out
        cached = self.cached
        for k in keys[:max_blocks]:
            b = cached.get(k)
            if b is None:
                break
            out.append(b if type(b) is int else b[0])  # type: ignore[index]
        return out

    def num_evictable(self, blocks: Iterable[int]) -> int:
        ref = self.ref
        return sum(1 for b in blocks if ref[b] == 0)

    # -- mutations -------------------------------------------------------
    def touch(self, blocks: Iterable[int], now: int = 0) -> None:
        """A request hit ``blocks``: take them off the free list, ref += 1."""
        ref, policy, obs = self.ref, self.policy, self.observer
        for b in blocks:
            if ref[b] == 0:
                policy.remove(b)
            ref[b] += 1
            policy.on_access(b, self.key[b], now)
            if obs is not None:
                obs.on_hit(b, now)

    def allocate(self, n: int, now: int = 0) -> list[int]:
        """Hand out ``n`` blocks: clean ones first, then evict cached free ones."""
        if n > self.num_free:
            raise ValueError(f"cannot allocate {n} blocks, {self.num_free} free")
        clean = self.clean
        k = min(n, len(clean))
        if k:
            out = clean[-k:][::-1]
            del clean[-k:]
        else:
            out = []
        for _ in range(n - k):
            out.append(self._evict(self.policy.pop_victim(now), now))
        ref = self.ref
        for b in out:
            ref[b] = 1
        if self.observer is not None:
            for b in out:
                self.observer.on_allocate(b, now)
        return out

    def _evict(self, b: int, now: int) -> int:
        key = self.key[b]
        self.key[b] = None
        entry = self.cached.pop(key)
        if not isinstance(entry, int):
            rest = [x for x in entry if x != b]
            if rest:
                self.cached[key] = rest if len(rest) > 1 else rest[0]
        self.num_evicted += 1
        self.policy.on_evict(key)
        if self.observer is not None:
            self.observer.on_evict(b, key, now)
        return b

    def cache(self, block_id: int, key: Hashable, now: int = 0, rank: int | None = None) -> None:
        """Register a just-filled block under ``key`` (vLLM ``cache_full_blocks``).

        ``rank`` is the block's retention rank, for policies that use it.
        """
        if not self.enable_caching or self.key[block_id] is not None:
            return
        if rank is not None:
            self.policy.set_retention(block_id, rank)
        self.key[block_id] = key
        entry = self.cached.get(key)
        if entry is None:
            self.cached[key] = block_id
        elif isinstance(entry, int):
            self.cached[key] = [entry, block_id]
        else:
            entry.append(block_id)
        self.policy.on_access(block_id, key, now)
        if self.observer is not None:
            self.observer.on_cache(block_id, key, now)

    def free(self, blocks_tail_first: Iterable[int], now: int = 0) -> None:
        """Drop one reference to each block, given in eviction order (tail first).

        Blocks reaching 0 without a key go to the head of the free list (in the
        given order), keyed ones to the policy (vLLM ``free_blocks``).
        """
        ref, key, policy = self.ref, self.key, self.policy
        unkeyed: list[int] = []
        caching = self.enable_caching
        for b in blocks_tail_first:
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                if key[b] is None or not caching:
                    unkeyed.append(b)
                else:
                    policy.insert(b, now)
        if unkeyed:
            unkeyed.reverse()
            self.clean.extend(unkeyed)
