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
granularity of *runs* (consecutive blocks of one segment that are always
touched together) rather than blocks, which keeps a 12k-request Mooncake
trace at ``B = 16`` (9 million block touches) to about a second.
:func:`reference_cache_curve` replays block by block with an ``OrderedDict``;
tests check that both agree exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np

from kvlab._gc import paused_gc
from kvlab.errors import ConfigError
from kvlab.sim.block_keys import BlockKeyTable, block_keys
from kvlab.workload.records import Request, Segment

#: Eviction policies cache-curve can compute (a stack algorithm is required).
CURVE_POLICIES: tuple[str, ...] = ("lru",)


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
    with paused_gc():
        profile = lru_profile(ordered, block_size)
    if capacities is None:
        capacities = auto_capacities(profile.num_distinct_blocks)
    return _curve(ordered, block_size, capacities, policy, profile.hit_blocks, profile)


def auto_capacities(num_distinct_blocks: int, num_points: int = 12) -> list[int]:
    """Log-spaced capacities from ~1/2048 of the distinct blocks up to all of them."""
    top = max(1, num_distinct_blocks)
    low = max(1, top // 2048)
    grid = np.unique(np.geomspace(low, top, num_points).round().astype(np.int64))
    return [int(c) for c in grid]


def reference_cache_curve(
    requests: Iterable[Request], block_size: int, capacities: Sequence[int]
) -> CacheCurve:
    """The same curve by direct replay, one block at a time (slow; for tests)."""
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
        point_depths: np.ndarray,
        point_counts: np.ndarray,
        range_lo: np.ndarray,
        range_hi: np.ndarray,
        num_distinct_blocks: int,
    ) -> None:
        order = np.argsort(point_depths, kind="stable")
        self._pv = point_depths[order]
        self._pc = np.concatenate([[0], np.cumsum(point_counts[order])])
        self._lo = np.sort(range_lo)
        self._hi = np.sort(range_hi)
        self._lo_sum = np.concatenate([[0], np.cumsum(self._lo)])
        self._hi_sum = np.concatenate([[0], np.cumsum(self._hi)])
        self.num_distinct_blocks = num_distinct_blocks
        self.hit_blocks_infinite = int(self._pc[-1]) + int(np.sum(range_hi - range_lo))

    def hit_blocks(self, capacity_blocks: int | None) -> int:
        """Hit blocks over the trace with ``capacity_blocks`` (None: infinite)."""
        if capacity_blocks is None:
            return self.hit_blocks_infinite
        c = capacity_blocks
        n_pts = int(np.searchsorted(self._pv, c, side="right"))
        total = int(self._pc[n_pts])
        # a range [lo, hi) holds min(c + 1 - lo, hi - lo) depths <= c, when lo <= c
        n_lo = int(np.searchsorted(self._lo, c, side="right"))
        total += n_lo * (c + 1) - int(self._lo_sum[n_lo])
        n_hi = int(np.searchsorted(self._hi, c + 1, side="right"))
        total -= n_hi * (c + 1) - int(self._hi_sum[n_hi])
        return total


def lru_profile(ordered: Sequence[Request], block_size: int) -> LruProfile:
    """One pass over ``ordered`` (already in replay order) recording stack depths.

    Notation: request r's cacheable blocks k_0..k_{n-1} form a path from the
    root of the prefix trie. ``last(k)`` is the latest request that touched
    block k; along a path it never increases (whoever touched k_i touched
    k_0..k_{i-1}). Blocks whose last toucher is request q are q's blocks at
    depths ``[lam[q], n_q)``, where ``lam[q]`` is the longest prefix q shares
    with any later request; in the stack they sit in path order below every
    block touched after q. So block k_i with ``last = q`` has stack depth
    ``S(> q) + (i - lam[q]) + 1``, where ``S(> q)`` counts blocks whose last
    toucher came after q (a Fenwick tree over request index holds
    ``n_q - lam[q]`` per request).
    """
    runs_of = _Runs(block_size)
    n_req = len(ordered)
    fen = _Fenwick(n_req)
    lam = [0] * n_req
    state: dict[int, list[tuple[int, int]]] = {}
    pv: list[int] = []
    pc: list[int] = []
    lo: list[int] = []
    hi: list[int] = []
    for r, req in enumerate(ordered):
        path = _last_touch_pieces(runs_of.runs(req.segments), state, r)
        n_blocks = path[-1][1] if path else 0
        nh = (req.prompt_tokens - 1) // block_size
        _record_hits(path, nh, fen, lam, pv, pc, lo, hi)
        for _a, b, q in path:
            if q >= 0:
                fen.add(q, lam[q] - b)
                lam[q] = b
        fen.add(r, n_blocks)
    distinct = sum(st[-1][0] for st in state.values())
    i64 = np.int64
    return LruProfile(
        np.array(pv, dtype=i64),
        np.array(pc, dtype=i64),
        np.array(lo, dtype=i64),
        np.array(hi, dtype=i64),
        distinct,
    )


# --------------------------------------------------------------------------- internals


def _last_touch_pieces(
    runs: list[tuple[int, int]], state: dict[int, list[tuple[int, int]]], r: int
) -> list[list[int]]:
    """Split request r's path into pieces ``[a, b, q]``: blocks a..b-1 last touched by q.

    ``q == -1`` marks blocks never seen. ``state[run]`` lists ``(end, q)``:
    blocks ``[previous end, end)`` of the run were last touched by q (ends
    increasing, q decreasing). It is updated to say request r touched them.
    """
    pieces: list[list[int]] = []
    pos = 0
    for key, length in runs:
        st = state.get(key)
        if st is None:
            _append(pieces, pos, pos + length, -1)
            state[key] = [(length, r)]
        else:
            j = 0
            for end, q in st:
                e = end if end < length else length
                _append(pieces, pos + j, pos + e, q)
                j = e
                if j >= length:
                    break
            if j < length:
                _append(pieces, pos + j, pos + length, -1)
            if st[-1][0] <= length:
                state[key] = [(length, r)]
            else:
                state[key] = [(length, r), *(t for t in st if t[0] > length)]
        pos += length
    return pieces


def _append(pieces: list[list[int]], a: int, b: int, q: int) -> None:
    if pieces:
        last = pieces[-1]
        if last[2] == q and last[1] == a:
            last[1] = b
            return
    pieces.append([a, b, q])


def _record_hits(
    path: list[list[int]],
    nh: int,
    fen: _Fenwick,
    lam: list[int],
    pv: list[int],
    pc: list[int],
    lo: list[int],
    hi: list[int],
) -> None:
    """Record the running stack depth of the request's first ``nh`` blocks."""
    running = 0
    for a, b, q in path:
        if a >= nh or q < 0:
            return
        b2 = b if b < nh else nh
        base = fen.total - fen.prefix(q) + 1 - lam[q]  # depth of block i is base + i
        i_star = max(a, running - base + 1)  # first block deeper than the running max
        if i_star > a:
            pv.append(running)
            pc.append(min(i_star, b2) - a)
        if i_star < b2:
            lo.append(base + i_star)
            hi.append(base + b2)
        running = max(running, base + b2 - 1)


class _Runs:
    """Splits a prompt's full blocks into runs with canonical keys.

    A run is a maximal stretch of blocks lying inside one segment, or one
    block straddling segments. Its key names the key of the block before it
    plus its first piece (straddling: all pieces), so block j of run K is the
    same block wherever ``(K, j)`` occurs, and two different ``(K, j)`` are
    different blocks (same equivalence as :func:`kvlab.sim.block_keys.block_keys`).
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._keys: dict[tuple[object, ...], int] = {}

    def runs(self, segments: Sequence[Segment]) -> list[tuple[int, int]]:
        """``(run key, number of blocks)`` for the prompt's full blocks, in order."""
        bs = self.block_size
        keys = self._keys
        out: list[tuple[int, int]] = []
        pk, pj = -1, 0  # the block before: block pj of run pk (-1: none yet)
        carry: list[tuple[str, int, int]] = []
        fill = 0
        for seg in segments:
            cid, t = seg.content_id, seg.tokens
            if t == 0:
                continue
            off = 0
            if fill:
                take = min(bs - fill, t)
                carry.append((cid, 0, take))
                fill += take
                off = take
                if fill < bs:
                    continue
                k: tuple[object, ...] = (pk, pj, tuple(carry))
                key = keys.get(k)
                if key is None:
                    key = keys[k] = len(keys)
                out.append((key, 1))
                pk, pj = key, 0
                carry = []
                fill = 0
            m = (t - off) // bs
            if m:
                k = (pk, pj, cid, off)
                key = keys.get(k)
                if key is None:
                    key = keys[k] = len(keys)
                out.append((key, m))
                pk, pj = key, m - 1
                off += m * bs
            if off < t:
                carry = [(cid, off, t)]
                fill = t - off
        return out


class _Fenwick:
    """Binary indexed tree of int counts over slots 0..n-1, with a running total."""

    __slots__ = ("_tree", "total")

    def __init__(self, n: int) -> None:
        self._tree = [0] * (n + 1)
        self.total = 0

    def add(self, i: int, delta: int) -> None:
        self.total += delta
        tree = self._tree
        i += 1
        n = len(tree)
        while i < n:
            tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        """Sum of slots 0..i."""
        tree = self._tree
        s = 0
        i += 1
        while i > 0:
            s += tree[i]
            i -= i & -i
        return s


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
    tokens = sum(r.prompt_tokens for r in ordered)
    hittable = sum((r.prompt_tokens - 1) // block_size for r in ordered)

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
    "auto_capacities",
    "cache_curve",
    "lru_profile",
    "reference_cache_curve",
    "replay_order",
]
