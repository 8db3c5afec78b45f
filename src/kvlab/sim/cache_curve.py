"""Prefix-cache hit rate against cache capacity, with infinitely fast compute.

For sizing a cache tier: how many prompt blocks would hit if a cache of C
blocks held the prefixes of a trace, for many C at once. Semantics (exact):

- Requests are replayed one at a time in stable arrival order (see
  :func:`replay_order`); compute is infinitely fast, so no two overlap.
- Only full blocks are cacheable: the first ``floor(L / B)`` blocks of a prompt
  of ``L`` tokens, keyed by content as in :mod:`kvlab.sim.block_keys`.
- At most ``floor((L - 1) / B)`` blocks can hit (the last prompt token is
  always recomputed, as in vLLM's ``find_longest_cache_hit``). The hit is the
  longest run of leading blocks present in the cache.
- Then the request's cacheable blocks are touched (or inserted) tail first, so
  its first block ends most recently used. The cache holds at most C blocks
  and evicts the least recently used.

``block_hit_rate`` = hit blocks / sum of ``floor((L - 1) / B)``;
``token_hit_rate`` = hit tokens / sum of ``L`` (hit tokens = B * hit blocks).

LRU is a stack algorithm (Mattson et al., "Evaluation techniques for storage
hierarchies", IBM Systems Journal 1970): a cache of C blocks holds exactly the
C most recently used blocks, so one pass that records each block's stack
depth answers every capacity. :func:`lru_profile` computes the depths at the
granularity of *units* rather than blocks: a unit is a stretch of blocks that
every request touching one of them touches all of (a chain of the prefix trie
of the whole trace, :class:`PrefixTrie`, without branches or request ends).
The shipped 12k-request Mooncake trace has about three units per request at
any block size, against 24 blocks per request at ``B = 512`` and 750 at
``B = 16``. :func:`reference_cache_curve` replays block by block with an
``OrderedDict``; tests check that both agree exactly.

Pure Python: numpy is imported only to pick default capacities.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress, repeat
from math import isqrt
from numbers import Integral
from operator import attrgetter, ne
from typing import Any

from kvlab.errors import ConfigError
from kvlab.workload.records import Request

#: Eviction policies cache-curve can compute (a stack algorithm is required).
CURVE_POLICIES: tuple[str, ...] = ("lru",)

_ARRIVAL = attrgetter("arrival_s")
_PROMPT_TOKENS = attrgetter("prompt_tokens")
_SEGMENTS = attrgetter("segments")
_TOKENS = attrgetter("tokens")
_CONTENT = attrgetter("content_id")


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """Hits of a cache of ``capacity_blocks`` blocks over a whole trace."""

    capacity_blocks: int
    hit_blocks: int
    hit_tokens: int
    block_hit_rate: float
    token_hit_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity_blocks": self.capacity_blocks,
            "hit_blocks": self.hit_blocks,
            "hit_tokens": self.hit_tokens,
            "block_hit_rate": self.block_hit_rate,
            "token_hit_rate": self.token_hit_rate,
        }


@dataclass(frozen=True, slots=True)
class CacheCurve:
    """Hit rates at several capacities, plus the infinite-capacity limit.

    ``infinite.capacity_blocks`` is the number of distinct cacheable blocks of
    the trace: from that capacity on nothing is ever evicted.
    """

    block_size: int
    policy: str
    num_requests: int
    num_prompt_tokens: int
    num_hittable_blocks: int
    points: tuple[CurvePoint, ...]
    infinite: CurvePoint

    def to_dict(self) -> dict[str, Any]:
        return {
            "block_size": self.block_size,
            "policy": self.policy,
            "num_requests": self.num_requests,
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_hittable_blocks": self.num_hittable_blocks,
            "points": [p.to_dict() for p in self.points],
            "infinite": self.infinite.to_dict(),
        }


# --------------------------------------------------------------------------- public API


def cache_curve(
    requests: Iterable[Request],
    block_size: int,
    capacities: Sequence[int] | None = None,
    policy: str = "lru",
) -> CacheCurve:
    """Prefix-cache hit rates of ``requests`` at each capacity (in blocks).

    ``capacities=None`` picks :func:`auto_capacities` of the trace's distinct blocks.
    """
    _check_args(block_size, capacities or (), policy)
    ordered = replay_order(requests)
    profile = lru_profile(ordered, block_size)
    if capacities is None:
        capacities = auto_capacities(profile.num_distinct_blocks)
    return _curve(ordered, block_size, capacities, policy, profile.hit_blocks, profile)


def auto_capacities(num_distinct_blocks: int, num_points: int = 12) -> list[int]:
    """Log-spaced capacities from ~1/2048 of the distinct blocks up to all of them."""
    import numpy as np

    top = max(1, num_distinct_blocks)
    low = max(1, top // 2048)
    grid = np.unique(np.geomspace(low, top, num_points).round().astype(np.int64))
    return [int(c) for c in grid]


def reference_cache_curve(
    requests: Iterable[Request], block_size: int, capacities: Sequence[int]
) -> CacheCurve:
    """The same curve by direct replay, one block at a time (slow; for tests)."""
    from kvlab.sim.block_keys import BlockKeyTable, block_keys

    _check_args(block_size, capacities, "lru")
    ordered = replay_order(requests)
    table = BlockKeyTable()
    keys = [block_keys(r, block_size, table) for r in ordered]
    hits = {c: _replay_lru(ordered, keys, block_size, c) for c in capacities}
    distinct = len(table)
    hits_inf = _replay_lru(ordered, keys, block_size, None)
    profile = _FixedProfile(hits, hits_inf, distinct)
    return _curve(ordered, block_size, capacities, "lru", profile.hit_blocks, profile)


def replay_order(requests: Iterable[Request]) -> list[Request]:
    """Requests in stable arrival order.

    A closed-loop request (``think_time_s``, no ``arrival_s``) arrives
    ``think_time_s`` after the previous request of its session arrived: with
    infinitely fast compute that request finished the moment it arrived.
    """
    reqs = list(requests)
    if None not in map(_ARRIVAL, reqs):  # open loop: by arrival (a stable sort)
        return sorted(reqs, key=_ARRIVAL)
    session_time: dict[str, float] = {}
    keyed: list[tuple[float, Request]] = []
    for r in reqs:
        if r.arrival_s is not None:
            t = r.arrival_s
        else:
            prev = session_time.get(r.session_id or "")
            t = (prev or 0.0) + (r.think_time_s or 0.0)
        if r.session_id is not None:
            session_time[r.session_id] = t
        keyed.append((t, r))
    keyed.sort(key=lambda tr: tr[0])
    return [r for _, r in keyed]


class LruProfile:
    """Hit blocks of an LRU prefix cache as a function of its capacity.

    Built in one pass by :func:`lru_profile`. Every hittable block that hits
    at some capacity contributes its *running stack depth*: the largest LRU
    stack depth among it and the blocks before it in its prompt; the block
    hits exactly when that depth is <= the capacity. Depths are stored
    compactly as point masses (``count`` blocks at one depth) and unit ranges
    (one block at each depth in ``[lo, hi)``).
    """

    def __init__(
        self,
        point_depths: Sequence[int],
        point_counts: Sequence[int],
        range_lo: Sequence[int],
        range_hi: Sequence[int],
        num_distinct_blocks: int,
    ) -> None:
        order = sorted(range(len(point_depths)), key=point_depths.__getitem__)
        self._pv = [int(point_depths[i]) for i in order]
        self._pc = [0, *accumulate(int(point_counts[i]) for i in order)]
        self._lo = sorted(map(int, range_lo))
        self._hi = sorted(map(int, range_hi))
        self._lo_sum = [0, *accumulate(self._lo)]
        self._hi_sum = [0, *accumulate(self._hi)]
        self.num_distinct_blocks = num_distinct_blocks
        self.hit_blocks_infinite = self._pc[-1] + self._hi_sum[-1] - self._lo_sum[-1]

    def hit_blocks(self, capacity_blocks: int | None) -> int:
        """Hit blocks over the trace with ``capacity_blocks`` (None: infinite)."""
        if capacity_blocks is None:
            return self.hit_blocks_infinite
        c = capacity_blocks
        total = self._pc[bisect_right(self._pv, c)]
        # a range [lo, hi) holds min(c + 1 - lo, hi - lo) depths <= c, when lo <= c
        n_lo = bisect_right(self._lo, c)
        total += n_lo * (c + 1) - self._lo_sum[n_lo]
        n_hi = bisect_right(self._hi, c + 1)
        total -= n_hi * (c + 1) - self._hi_sum[n_hi]
        return total


class PrefixTrie:
    """The prefix trie of a sequence of prompts, in tokens.

    Token i of a prompt is the pair (content id, offset in that stream), as in
    :mod:`kvlab.sim.block_keys`: two prompts share their first D tokens iff
    their paths pass through the same point at depth D, and then they share
    every full block in those tokens. Nodes are ints, 0 is the root.
    Invariants: ``depth[v]`` counts the tokens from the root to node v
    (``depth[parent[v]] < depth[v]``); the edge into v holds consecutive tokens
    of one content stream; prompt r ends at node ``ends[r]`` (its depth is the
    prompt's tokens); a node is where a prompt's segment ends or where two
    prompts part; ``num_children[v]`` counts the edges out of v.
    """

    __slots__ = ("depth", "ends", "num_children", "parent")

    def __init__(self, requests: Iterable[Request]) -> None:
        depth, parent, n_children = [0], [0], [0]
        ends: list[int] = []
        # The edge into node v holds the stream edge_content[v] from offset edge_offset[v]
        # on. The children of v: v + 1 when parent[v + 1] == v (the nodes of a new
        # prompt's tail form such a chain), and the others by edge in `child`: (parent,
        # content id, offset) -> node.
        edge_content, edge_offset = [""], [0]
        child: dict[tuple[int, str, int], int] = {}
        get = child.get
        for segs in map(_SEGMENTS, requests):
            tokens = list(map(_TOKENS, segs))
            contents = list(map(_CONTENT, segs))
            if 0 in tokens:  # an empty segment holds no tokens
                kept = [i for i, t in enumerate(tokens) if t]
                tokens, contents = [tokens[i] for i in kept], [contents[i] for i in kept]
            v = d = off = j = 0  # at node v (depth d), segment j's tokens from offset off on
            k = len(tokens)
            while j < k:
                t, cid = tokens[j], contents[j]
                c = v + 1
                if not (
                    c < len(depth)
                    and parent[c] == v
                    and edge_content[c] == cid
                    and edge_offset[c] == off
                ):
                    found = get((v, cid, off))
                    if found is None:
                        break
                    c = found
                d_c = depth[c]
                if d_c - d > t - off:  # the segment ends inside the edge into c: split it
                    w = len(depth)
                    d += t - off
                    depth.append(d)
                    parent.append(v)
                    n_children.append(1)
                    edge_content.append(cid)
                    edge_offset.append(off)
                    child[(v, cid, off)] = w
                    child[(w, cid, t)] = c
                    parent[c] = w
                    edge_offset[c] = t
                    v, off, j = w, 0, j + 1
                    continue
                v, off, d = c, off + d_c - d, d_c
                if off == t:
                    off, j = 0, j + 1
            if j < k:  # new tokens from v on: a chain of one node per segment left
                first = len(depth)
                m = k - j
                if first != v + 1:
                    child[(v, contents[j], off)] = first
                lengths = tokens[j:]
                lengths[0] -= off
                depths = accumulate(lengths, initial=d)
                next(depths)
                depth += depths
                parent.append(v)
                parent += range(first, first + m - 1)
                n_children[v] += 1
                n_children += repeat(1, m - 1)
                n_children.append(0)
                edge_content += contents[j:]
                edge_offset.append(off)
                edge_offset += repeat(0, m - 1)
                v = first + m - 1
            ends.append(v)
        self.depth = depth
        self.parent = parent
        self.num_children = n_children
        self.ends = ends

    def units(self, block_size: int) -> tuple[list[int], list[int]]:
        """The trie's units of blocks: ``(up, num_blocks)`` indexed by node.

        A unit ends at a node where a prompt ends or the trie branches; it holds
        the full blocks (block boundaries, at depths that are multiples of
        ``block_size``) below the nearest such node above it, ``up[v]`` (or the
        root), down to v: ``num_blocks[v]`` of them. Every prompt through one
        block of a unit goes through all of it. Nodes inside units get 0 blocks.
        """
        depth, parent = self.depth, self.parent
        is_end = list(map(ne, self.num_children, repeat(1)))
        for v in self.ends:
            is_end[v] = True
        is_end[0] = False
        up = [0] * len(depth)
        num_blocks = [0] * len(depth)
        is_end_or_root = is_end.copy()
        is_end_or_root[0] = True
        for v in compress(range(len(depth)), is_end):
            p = parent[v]
            while not is_end_or_root[p]:
                p = parent[p]
            up[v] = p
            num_blocks[v] = depth[v] // block_size - depth[p] // block_size
        return up, num_blocks


def lru_profile(ordered: Sequence[Request], block_size: int) -> LruProfile:
    """One pass over ``ordered`` (already in replay order) recording stack depths.

    Notation: request r's cacheable blocks k_0..k_{n-1} form a path from the
    root of the prefix trie. ``last(k)`` is the latest request that touched
    block k; along a path it never increases (whoever touched k_i touched
    k_0..k_{i-1}), and it is the same for all blocks of a unit
    (:meth:`PrefixTrie.units`). Blocks whose last toucher is request q are
    q's blocks at depths ``[lam[q], n_q)``, where ``lam[q]`` is the longest
    prefix q shares with any later request; in the stack they sit in path
    order below every block touched after q. So block k_i with ``last = q``
    has stack depth ``S(> q) + (i - lam[q]) + 1``, where ``S(> q)`` counts
    blocks whose last toucher came after q (:class:`_SuffixSums` over request
    index holds ``n_q - lam[q]`` per request).
    """
    trie = PrefixTrie(ordered)
    up, unit_blocks = trie.units(block_size)
    depth = trie.depth
    n_req = len(ordered)
    last = [-1] * len(depth)  # per unit (by its end node): the request that touched it last
    lam = [0] * n_req
    alive = _SuffixSums(n_req)
    pv: list[int] = []
    pc: list[int] = []
    lo: list[int] = []
    hi: list[int] = []
    for r, (v, n_tokens) in enumerate(zip(trie.ends, map(_PROMPT_TOKENS, ordered), strict=True)):
        # the path's units from its end up, merged into pieces [start, end) of one toucher
        n_blocks = pos = depth[v] // block_size
        starts: list[int] = []
        stops: list[int] = []
        touchers: list[int] = []
        while v:
            n = unit_blocks[v]
            if n:
                q = last[v]
                last[v] = r
                if touchers and touchers[-1] == q:
                    starts[-1] -= n
                else:
                    starts.append(pos - n)
                    stops.append(pos)
                    touchers.append(q)
                pos -= n
            v = up[v]
        # running stack depth of the first nh blocks, from the root down
        nh = (n_tokens - 1) // block_size
        running = 0
        for a, b, q in zip(reversed(starts), reversed(stops), reversed(touchers), strict=True):
            if a >= nh or q < 0:
                break
            b2 = b if b < nh else nh
            base = alive.after(q, r) + 1 - lam[q]  # depth of block i is base + i
            i_star = max(a, running - base + 1)  # first block deeper than the running max
            if i_star > a:
                pv.append(running)
                pc.append(min(i_star, b2) - a)
            if i_star < b2:
                lo.append(base + i_star)
                hi.append(base + b2)
            running = max(running, base + b2 - 1)
        for b, q in zip(stops, touchers, strict=True):
            if q >= 0:
                alive.add(q, lam[q] - b)
                lam[q] = b
        alive.add(r, n_blocks)
    return LruProfile(pv, pc, lo, hi, sum(unit_blocks))


class _SuffixSums:
    """Int counts over slots 0..n-1, with sums over the slots after a given one.

    Slots are grouped in chunks of about sqrt(n) with a running sum each, so an
    update is O(1) and :meth:`after` adds two short lists.
    """

    __slots__ = ("_chunk", "_chunk_sums", "_values")

    def __init__(self, n: int) -> None:
        self._chunk = max(16, isqrt(n))
        self._values = [0] * n
        self._chunk_sums = [0] * (n // self._chunk + 1)

    def add(self, i: int, delta: int) -> None:
        self._values[i] += delta
        self._chunk_sums[i // self._chunk] += delta

    def after(self, i: int, top: int) -> int:
        """Sum of slots ``i + 1 .. top`` (the slots after ``top`` are all 0)."""
        k = self._chunk
        c = i // k
        if c == top // k:
            return sum(self._values[i + 1 : top + 1])
        return sum(self._values[i + 1 : (c + 1) * k]) + sum(self._chunk_sums[c + 1 : top // k + 1])


class _FixedProfile:
    """Hit counts computed directly for a fixed set of capacities (reference path)."""

    def __init__(self, hits: dict[int, int], hits_inf: int, distinct: int) -> None:
        self._hits = hits
        self.hit_blocks_infinite = hits_inf
        self.num_distinct_blocks = distinct

    def hit_blocks(self, capacity_blocks: int | None) -> int:
        if capacity_blocks is None:
            return self.hit_blocks_infinite
        return self._hits[capacity_blocks]


def _replay_lru(
    ordered: Sequence[Request],
    keys: Sequence[list[int]],
    block_size: int,
    capacity: int | None,
) -> int:
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for req, ks in zip(ordered, keys, strict=True):
        nh = (req.prompt_tokens - 1) // block_size
        h = 0
        while h < nh and ks[h] in cache:
            h += 1
        hits += h
        for k in reversed(ks):
            if k in cache:
                cache.move_to_end(k)
            else:
                cache[k] = None
                if capacity is not None and len(cache) > capacity:
                    cache.popitem(last=False)
    return hits


def _check_args(block_size: int, capacities: Sequence[int], policy: str) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"block size must be a positive integer, got {block_size!r}")
    if policy not in CURVE_POLICIES:
        raise ConfigError(
            f"cache-curve supports only --policy lru (a stack algorithm: one pass gives "
            f"every capacity); got {policy!r}"
        )
    for c in capacities:
        if isinstance(c, bool) or not isinstance(c, Integral) or c < 0:
            raise ConfigError(f"capacities must be integers >= 0 (blocks), got {c!r}")


def _curve(
    ordered: Sequence[Request],
    block_size: int,
    capacities: Sequence[int],
    policy: str,
    hit_blocks: Any,
    profile: LruProfile | _FixedProfile,
) -> CacheCurve:
    prompt_tokens = list(map(_PROMPT_TOKENS, ordered))
    tokens = sum(prompt_tokens)
    hittable = sum([(n - 1) // block_size for n in prompt_tokens])

    def point(capacity: int | None) -> CurvePoint:
        h = hit_blocks(capacity)
        return CurvePoint(
            capacity_blocks=profile.num_distinct_blocks if capacity is None else capacity,
            hit_blocks=h,
            hit_tokens=h * block_size,
            block_hit_rate=h / hittable if hittable else 0.0,
            token_hit_rate=h * block_size / tokens if tokens else 0.0,
        )

    return CacheCurve(
        block_size=block_size,
        policy=policy,
        num_requests=len(ordered),
        num_prompt_tokens=tokens,
        num_hittable_blocks=hittable,
        points=tuple(point(int(c)) for c in capacities),
        infinite=point(None),
    )


__all__ = [
    "CURVE_POLICIES",
    "CacheCurve",
    "CurvePoint",
    "LruProfile",
    "PrefixTrie",
    "auto_capacities",
    "cache_curve",
    "lru_profile",
    "reference_cache_curve",
    "replay_order",
]
