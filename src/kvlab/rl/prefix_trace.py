"""A workload's prefix-cache accesses as flat arrays, made once per workload and
block size and read by every replay and every RL episode on it.

Semantics are the cache curve's (:mod:`kvlab.sim.cache_curve`): requests one at
a time in stable arrival order (:func:`kvlab.sim.cache_curve.replay_order`),
infinitely fast compute; request ``r`` touches its ``floor(L / B)`` full blocks
and can hit at most its first ``floor((L - 1) / B)`` of them (the last prompt token
is always recomputed). The block keys come from the prepared workload's key names
(:meth:`kvlab.sim.prepare.PreparedWorkload.key_names`), renumbered densely.

Invariants: request ``r``'s blocks are ``keys[start[r]:start[r + 1]]`` in prompt
order, ``hittable[r] <= start[r + 1] - start[r]``; ``depth[j]`` is block j's index in
its prompt; ``rank[j]`` the retention rank of the segment holding its first token
(0 = system, see :data:`kvlab.workload.records.RETENTION_CLASSES`);
``next_hit[j]`` the first request after block j's request that can hit key
``keys[j]`` (at a hittable position), ``num_requests`` when none does.
"""

from __future__ import annotations

from array import array

from kvlab.sim.cache_curve import replay_order
from kvlab.sim.prepare import PreparedWorkload, prepare
from kvlab.workload.records import RETENTION_CLASSES, Workload

_RANK = {c: i for i, c in enumerate(RETENTION_CLASSES)}


class PrefixTrace:
    """The ordered block accesses of ``workload`` at ``block_size`` (see module doc)."""

    def __init__(self, workload: Workload | PreparedWorkload, block_size: int) -> None:
        prepared = prepare(workload, block_size)
        self.block_size = block_size
        self.name = prepared.workload.name
        reqs = prepared.workload.requests
        index = {id(q): i for i, q in enumerate(reqs)}
        ordered = replay_order(reqs)
        dense: dict[int, int] = {}
        keys = array("q")
        depth = array("q")
        rank = array("b")
        start = array("q", [0])
        hittable = array("q")
        prompt_tokens = 0
        for q in ordered:
            firsts, ends, _runs, _node, _zero = prepared.key_names(index[id(q)])
            n = q.prompt_tokens // block_size
            b = 0
            for first, end in zip(firsts, ends, strict=True):
                s = b
                while b < end and b < n:
                    k = first + (b - s) * block_size
                    d = dense.get(k)
                    if d is None:
                        d = dense[k] = len(dense)
                    keys.append(d)
                    depth.append(b)
                    b += 1
            if b != n:
                raise AssertionError(f"request {q.request_id!r}: {b} keys for {n} full blocks")
            # retention rank of each block: the segment holding its first token
            pos = 0
            seg_ranks: list[tuple[int, int]] = []
            for seg in q.segments:
                seg_ranks.append((pos, _RANK.get(seg.retention, 1)))
                pos += seg.tokens
            si = 0
            for j in range(n):
                t = j * block_size
                while si + 1 < len(seg_ranks) and seg_ranks[si + 1][0] <= t:
                    si += 1
                rank.append(seg_ranks[si][1] if seg_ranks else 1)
            start.append(len(keys))
            hittable.append((q.prompt_tokens - 1) // block_size if q.prompt_tokens else 0)
            prompt_tokens += q.prompt_tokens
        self.keys = keys
        self.depth = depth
        self.rank = rank
        self.start = start
        self.hittable = hittable
        self.num_requests = len(ordered)
        self.num_keys = len(dense)
        self.prompt_tokens = prompt_tokens
        self.next_hit = self._next_hits()

    def _next_hits(self) -> array:
        """``next_hit`` (see class doc), one backward pass."""
        nr = self.num_requests
        out = array("q", bytes(8 * len(self.keys)))
        upcoming = [nr] * self.num_keys  # next request (after the scan point) hitting key
        keys, start, hittable = self.keys, self.start, self.hittable
        for r in range(nr - 1, -1, -1):
            a, b = start[r], start[r + 1]
            for j in range(a, b):
                out[j] = upcoming[keys[j]]
            for j in range(a, a + hittable[r]):
                upcoming[keys[j]] = r
        return out

    @property
    def num_hittable_blocks(self) -> int:
        return sum(self.hittable)

    def window(self, first: int, count: int) -> tuple[int, int]:
        """Requests ``[first, first + count)`` clipped to the trace."""
        lo = max(0, min(first, self.num_requests))
        return lo, min(self.num_requests, lo + max(0, count))
