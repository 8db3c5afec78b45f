"""Reference results on a :class:`~kvlab.rl.prefix_trace.PrefixTrace`: kvlab's own
eviction policies (:mod:`kvlab.sim.policies`) driving the same prefix cache, and
Belady's offline rule (:func:`kvlab.rl.prefix_cache.belady_hits`).

A policy sees the cache as the block pool shows it: a touched block is hit (removed
from the evictable set, ``on_access``) and freed at once (inserted again); a new block
gets a fresh block id (its retention rank first, when the policy reads ranks); a
victim is the policy's ``pop_victims(1)``.
"""

from __future__ import annotations

from kvlab.rl.prefix_cache import PrefixCache, belady_hits, run_chooser
from kvlab.rl.prefix_trace import PrefixTrace
from kvlab.sim.policies import make_policy

#: kvlab policies usable here (ttl needs wall-clock ages; the cache has request ticks only)
POLICY_NAMES: tuple[str, ...] = ("lru", "lfu", "fifo", "s3fifo", "retention")


def policy_hits(
    trace: PrefixTrace, capacity: int, policy: str, first: int = 0, last: int | None = None
) -> int:
    """Hit blocks of kvlab's eviction policy ``policy`` on the trace."""
    pol = make_policy(policy)
    cache = PrefixCache(trace, capacity, first, last)
    bid_of: dict[int, int] = {}
    key_of: dict[int, int] = {}
    uses_access, uses_retention = pol.uses_access, pol.uses_retention
    ranks = cache.rank
    counter = [0]

    def touched(k: int, j: int, r: int) -> None:
        b = bid_of.get(k)
        if b is not None:
            pol.remove(b)
        else:
            counter[0] += 1
            b = bid_of[k] = counter[0]
            key_of[b] = k
            if uses_retention:
                pol.set_retention(b, ranks[k])
        if uses_access:
            pol.on_access(b, k, r)
        pol.insert(b, r)

    def choose(c: PrefixCache) -> int:
        b = pol.pop_victims(1, c.request)[0]
        k = key_of.pop(b)
        del bid_of[k]
        return k

    cache.on_touch = touched
    return run_chooser(cache, choose).hit_blocks


def reference_hits(
    trace: PrefixTrace, capacity: int, first: int = 0, last: int | None = None
) -> dict[str, int]:
    """Hit blocks of every policy in :data:`POLICY_NAMES` and ``belady``."""
    out = {p: policy_hits(trace, capacity, p, first, last) for p in POLICY_NAMES}
    out["belady"] = belady_hits(trace, capacity, first, last)
    return out
