"""The paged KV block pool, with vLLM v1 semantics (``vllm/v1/core/block_pool.py``).

Blocks are ints ``0 .. num_blocks-1``; block 0 is the permanent null block and
is never handed out, so ``num_blocks - 1`` are usable. A block key is any
hashable that identifies the whole prefix up to the end of a full block (the
simulator uses segment chain ids, the differential test vLLM-style token hashes).

The pool also keeps vLLM's opt-in block residency metrics (lifetime, idle time
before eviction, reuse gap), unsampled, in power-of-two tick bins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from itertools import repeat
from typing import Protocol

from kvlab.sim.policies.base import EvictionPolicy
from kvlab.sim.policies.lru import LRU

#: Residency histogram bins: bin i counts durations d (ticks) with d.bit_length() == i.
NUM_BINS = 80


def _add_ages(hist: Counter[int], now: int, stamps: Counter[int]) -> None:
    """Add ``now - t`` for every stamp t (counted; blocks handed out together share one)."""
    for t, c in stamps.items():
        hist[(now - t).bit_length()] += c


class LowerTier(Protocol):
    """Where evicted (or freshly cached) keys can go: the offload tier."""

    def on_gpu_evict(self, key: Hashable, now: int) -> None: ...

    def on_gpu_cache(self, key: Hashable, now: int) -> None: ...


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
    * ``num_multi`` is the number of list entries in ``cached``;
    * ``num_evicted`` counts keyed blocks whose key was dropped to reuse them;
    * ``born[b]`` / ``used[b]``: tick block b was handed out / last handed out or hit;
      ``hist[name][i]`` counts durations whose ``bit_length()`` is i.
    """

    def __init__(
        self,
        num_blocks: int,
        *,
        enable_caching: bool = True,
        policy: EvictionPolicy | None = None,
        tier: LowerTier | None = None,
    ) -> None:
        if num_blocks < 2:
            raise ValueError("a block pool needs at least 2 blocks (one is the null block)")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.policy: EvictionPolicy = policy if policy is not None else LRU()
        self.policy_uses_retention = self.policy.uses_retention
        #: whether the policy wants :meth:`EvictionPolicy.on_access` calls
        self.policy_uses_access = self.policy.uses_access
        self.tier = tier
        self.ref = [0] * num_blocks
        self.key: list[Hashable | None] = [None] * num_blocks
        self.cached: dict[Hashable, int | list[int]] = {}
        self.num_multi = 0  # entries of ``cached`` that are lists
        self.clean: list[int] = list(range(num_blocks - 1, 0, -1))
        self.ref[0] = 1  # the null block is never free
        self.num_evicted = 0
        self.born = [0] * num_blocks
        self.used = [0] * num_blocks
        self.lifetime: Counter[int] = Counter()
        self.idle: Counter[int] = Counter()
        self.reuse_gap: Counter[int] = Counter()

    # -- queries ---------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self.clean) + len(self.policy)

    @property
    def num_clean(self) -> int:
        """Free blocks without a key (handed out before any eviction)."""
        return len(self.clean)

    def usage(self) -> float:
        """vLLM ``kv_cache_usage_perc``: cached free blocks count as free."""
        return 1.0 - self.num_free / (self.num_blocks - 1)

    def num_cached_free(self) -> int:
        return len(self.policy)

    def free_order(self) -> list[int]:
        """Free blocks in the order they will be handed out (vLLM free queue order)."""
        return self.clean[::-1] + list(self.policy.order())

    def get(self, key: Hashable) -> int | None:
        b = self.cached.get(key)
        if b is None or isinstance(b, int):
            return b
        return b[0]

    def longest_hit(self, keys: Sequence[Hashable], max_blocks: int) -> list[int]:
        """Blocks of the longest cached run of ``keys[:max_blocks]`` (vLLM phase 1)."""
        out: list[int] = []
        if not self.enable_caching:
            return out
        get = self.cached.get
        found: list[int | list[int] | None] = []
        max_blocks = min(max_blocks, len(keys))
        lo, step = 0, 8
        while lo < max_blocks:  # growing chunks, in C, until the first miss
            hi = min(lo + step, max_blocks)
            chunk = list(map(get, keys[lo:hi]))
            if None in chunk:
                found += chunk[: chunk.index(None)]
                break
            found += chunk
            lo, step = hi, step * 2
        if self.num_multi and not all(map(isinstance, found, repeat(int))):
            return [b if isinstance(b, int) else b[0] for b in found]  # type: ignore[index]
        return found  # type: ignore[return-value]  # all ints: checked, or no lists exist

    def num_evictable(self, blocks: Iterable[int]) -> int:
        ref = self.ref
        return sum(1 for b in blocks if ref[b] == 0)

    # -- mutations -------------------------------------------------------
    def touch(self, blocks: Iterable[int], now: int = 0) -> None:
        """A request hit ``blocks``: take them off the free list, ref += 1."""
        ref, policy, key, used, gap = self.ref, self.policy, self.key, self.used, self.reuse_gap
        if not self.policy_uses_access:  # (LRU) the free ones leave the policy in one batch
            freed: list[int] = []
            for b in blocks:
                if ref[b] == 0:
                    freed.append(b)
                ref[b] += 1
                gap[(now - used[b]).bit_length()] += 1
                used[b] = now
            if freed:
                policy.remove_many(freed)
            return
        for b in blocks:
            if ref[b] == 0:
                policy.remove(b)
            ref[b] += 1
            policy.on_access(b, key[b], now)
            gap[(now - used[b]).bit_length()] += 1
            used[b] = now

    def allocate(self, n: int, now: int = 0) -> list[int]:
        """Hand out ``n`` blocks: clean ones first, then evict cached free ones."""
        if n > self.num_free:
            raise ValueError(f"cannot allocate {n} blocks, {self.num_free} free")
        clean = self.clean
        k = min(n, len(clean))
        if k:
            out = clean[-k:]
            out.reverse()
            del clean[-k:]
        else:
            out = []
        if n > k:
            out.extend(self._evict_n(n - k, now))
        ref, born, used = self.ref, self.born, self.used
        for b in out:  # plain loops beat map(list.__setitem__, ...) on CPython 3.11+
            ref[b] = 1
            born[b] = now
            used[b] = now
        return out

    def _evict_n(self, n: int, now: int) -> list[int]:
        """Take the policy's next ``n`` victims and drop their keys."""
        key, cached, born, used = self.key, self.cached, self.born, self.used
        victims = self.policy.pop_victims(n, now)
        _add_ages(self.lifetime, now, Counter([born[b] for b in victims]))
        _add_ages(self.idle, now, Counter([used[b] for b in victims]))
        self.num_evicted += n
        keys = [key[b] for b in victims]
        for b in victims:
            key[b] = None
        if not self.num_multi:  # every key is held by one block
            for k in keys:
                del cached[k]
        else:
            for b, k in zip(victims, keys, strict=True):
                e = cached.pop(k)
                if e.__class__ is not int:
                    self._put_back(k, e, b)
        tier = self.tier
        if tier is not None:
            for k in keys:
                tier.on_gpu_evict(k, now)
        return victims

    def _put_back(self, k: Hashable, entry: int | list[int], b: int) -> None:
        """Keep the other blocks that hold the same content as evicted block b."""
        if not isinstance(entry, list):
            return
        rest = [x for x in entry if x != b]
        if len(rest) > 1:
            self.cached[k] = rest
        else:
            self.num_multi -= 1
            if rest:
                self.cached[k] = rest[0]

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
            self.num_multi += 1
        else:
            entry.append(block_id)
        if self.policy_uses_access:
            self.policy.on_access(block_id, key, now)
        if self.tier is not None:
            self.tier.on_gpu_cache(key, now)

    def cache_run(self, blocks: Sequence[int], keys: Sequence[Hashable], now: int) -> None:
        """:meth:`cache` for consecutive blocks of one request (fast when neither the
        policy nor a tier needs to hear of each block)."""
        if self.policy_uses_access or self.tier is not None:
            for b, k in zip(blocks, keys, strict=True):
                self.cache(b, k, now)
            return
        key, cached = self.key, self.cached
        if [key[b] for b in blocks].count(None) == len(blocks) and cached.keys().isdisjoint(
            keys
        ):  # fresh blocks, new contents (keys within one request are distinct)
            for b, k in zip(blocks, keys, strict=True):
                key[b] = k
            cached.update(zip(keys, blocks, strict=True))
            return
        for b, k in zip(blocks, keys, strict=True):
            if key[b] is not None:
                continue
            key[b] = k
            entry = cached.setdefault(k, b)
            if entry != b or not isinstance(entry, int):
                if isinstance(entry, int):
                    cached[k] = [entry, b]
                    self.num_multi += 1
                else:
                    entry.append(b)

    def free(self, blocks_tail_first: Iterable[int], now: int = 0) -> None:
        """Drop one reference to each block, given in eviction order (tail first).

        Blocks reaching 0 without a key go to the head of the free list (in the
        given order), keyed ones to the policy, in one batch (vLLM ``free_blocks``).
        """
        ref, key = self.ref, self.key
        unkeyed: list[int] = []
        keyed: list[int] = []
        if self.enable_caching:
            for b in blocks_tail_first:
                r = ref[b] - 1
                ref[b] = r
                if r == 0:
                    if key[b] is None:
                        unkeyed.append(b)
                    else:
                        keyed.append(b)
        else:
            for b in blocks_tail_first:
                r = ref[b] - 1
                ref[b] = r
                if r == 0:
                    unkeyed.append(b)
        if keyed:
            self.policy.insert_many(keyed, now)
        if unkeyed:
            unkeyed.reverse()
            self.clean.extend(unkeyed)

    def histograms(self, ticks_per_s: int) -> dict[str, dict[str, object]]:
        """The residency histograms; bin i spans [2**(i-1), 2**i) ticks (bin 0: zero)."""
        return residency_histograms(self.lifetime, self.idle, self.reuse_gap, ticks_per_s)


def residency_histograms(
    lifetime: Counter[int] | list[int],
    idle: Counter[int] | list[int],
    reuse_gap: Counter[int] | list[int],
    ticks_per_s: int,
) -> dict[str, dict[str, object]]:
    """Block lifetime, idle time before eviction and reuse gap as histograms in seconds;
    bin i spans [2**(i-1), 2**i) ticks (bin 0: zero). Each count is by bin, as a
    Counter or a list."""
    edges = [0.0] + [2 ** (i - 1) / ticks_per_s for i in range(1, NUM_BINS + 1)]
    return {
        name: {
            "unit": "s",
            "edges": edges,
            "counts": c[:NUM_BINS]
            if isinstance(c, list)
            else [c.get(i, 0) for i in range(NUM_BINS)],
        }
        for name, c in (
            ("block_lifetime_s", lifetime),
            ("block_idle_before_evict_s", idle),
            ("block_reuse_gap_s", reuse_gap),
        )
    }
