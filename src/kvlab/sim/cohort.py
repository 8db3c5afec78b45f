"""The decoding requests of a run, kept lazily (the engine's fast path).

While every running request decodes (one token per step), a step changes each
of them the same way: one more computed token, one more output token, and a
new block every ``B`` steps at a fixed phase. The cohort keeps those requests
without touching them per step: their counters are valid as of the step they
were last synced, a global step counter ``D`` says how far the run is, and the
start tick of every step since the cohort formed is kept (``times``), so a
request's decode blocks get their exact hand-out ticks when it is synced (at
its finish, or when the cohort dissolves for an exact step). Block allocations
per step come from a per-phase count, completions from a heap.

Only for the extent pool, FCFS, and requests whose output nobody else can hit
(fresh output, or prefix caching off): their decode blocks are keyed lazily
(:class:`kvlab.sim.extents.ExtentKV`), so a step needs no per-request caching.
"""

from __future__ import annotations

import heapq
from itertools import accumulate, cycle, islice
from typing import Any

from kvlab.sim.extents import ExtentPool, ExtentSeq
from kvlab.sim.prepare import NEVER

#: Step ticks kept before the ones older than every member are dropped.
TRIM_STEPS = 1 << 16


def extent_pool(kv: Any, loop_name: str) -> ExtentPool:
    """The extent pool under ``kv``, which a cohort loop (``loop_name``) needs."""
    pool = kv.pool
    assert isinstance(pool, ExtentPool), f"the {loop_name} loop runs over the extent pool"
    return pool


class CohortSeq(ExtentSeq):
    """A request of a cohort run: ``dz`` the step its counters are valid at; ``da``
    the step of its next decode block (both set when it joins; read for members only)."""

    __slots__ = ("da", "dz")
    da: int
    dz: int


class Cohort:
    """Decoding requests advanced lazily.

    Invariants: the members are the first ``n`` running requests (they join in
    running order, after the members, and leave only by finishing or all at once);
    for a member ``s``: its counters
    (``num_computed``, ``num_out``, ``num_tokens``, ``nblocks``, ``dstamps``,
    ``num_cached_blocks``) are as of step ``s.dz``; it computed one token in each
    step since; it takes one block at steps ``s.da, s.da + B, ...``; ``cnt[p]``
    members have ``da % B == p``; ``heap`` holds ``(last step, run_seq, s)`` per
    member (the step that emits its last token); ``ctx`` = sum over members of
    ``num_computed + 1`` as of step ``D``; ``times[d - base]`` is the start tick of
    step ``d`` for ``base <= d <= D`` (the last one is now), ``base`` at most the
    oldest member's ``dz`` (older ticks are dropped now and then).
    """

    def __init__(self, block_size: int, caching: bool) -> None:
        self.bs = block_size
        self.caching = caching
        self.cnt = [0] * block_size
        self.heap: list[tuple[int, int, CohortSeq]] = []
        self.n = 0
        self.ctx = 0
        self.D = 0
        self.times: list[int] = [0]
        self.base = 0

    def eligible(self, s: CohortSeq) -> bool:
        """Whether a running request can join: it decodes and its output blocks are
        keyed lazily (nobody else can hit them)."""
        return (
            s.num_computed == s.num_tokens - 1
            and s.rec.first_token_s is not None
            and (s.lazy_from < NEVER or not self.caching)
        )

    def start(self, now: int) -> None:
        """Begin an empty cohort at tick ``now`` (step 0)."""
        self.D = 0
        self.times = [now]
        self.base = 0

    def enter(self, s: CohortSeq) -> None:
        d = self.D
        s.dz = d
        da = d + s.nblocks * self.bs - s.num_computed
        s.da = da
        self.cnt[da % self.bs] += 1
        heapq.heappush(self.heap, (d + s.max_out - s.num_out - 1, s.run_seq, s))
        self.n += 1
        self.ctx += s.num_computed + 1

    #: tokens of a synced member not cached yet (the async loop caches a member up to
    #: the token before its placeholder)
    uncached_tokens = 0

    def sync(self, s: CohortSeq) -> None:
        """Bring a member's counters and blocks up to step ``D``."""
        d = self.D - s.dz
        if not d:
            return
        s.num_computed += d
        s.num_out += d
        s.num_tokens += d
        self.take_blocks(s, self.D)
        if self.caching:
            s.num_cached_blocks = (s.num_computed - self.uncached_tokens) // self.bs
        s.dz = self.D

    def take_blocks(self, s: CohortSeq, step: int) -> None:
        """Give a member the decode blocks it took before ``step`` since it was synced,
        stamped with the ticks of the steps that took them."""
        da = s.da
        if da < step:
            bs = self.bs
            m = (step - 1 - da) // bs + 1
            b = self.base
            s.dstamps += self.times[da - b : step - b : bs]
            s.nblocks += m
            s.da = da + m * bs

    def leave(self, s: CohortSeq) -> None:
        """Sync a member that leaves (its heap entry is popped by the caller)."""
        self.sync(s)
        self.cnt[s.da % self.bs] -= 1
        self.n -= 1
        self.ctx -= s.num_computed + 1

    def dissolve(self, running: list[Any]) -> None:
        """Sync every member (the first ``n`` of ``running``) and empty the cohort (before
        an exact step). Their decode stamps stay: the KV cache moves them to the pending
        groups before it appends one."""
        for s in running[: self.n]:
            self.sync(s)
        self.clear()

    def clear(self) -> None:
        """Empty the cohort (its members already synced and out)."""
        self.cnt = [0] * self.bs
        self.heap = []
        self.n = 0
        self.ctx = 0

    def steps_to_finish(self) -> int:
        """Steps until (and including) the one that finishes the next member."""
        return self.heap[0][0] - self.D + 1

    def taken(self, k: int) -> list[int]:
        """Blocks the members take in the next 1, 2, ..., ``k`` steps (running totals)."""
        p = self.D % self.bs
        cnt = self.cnt
        if p + k <= self.bs:  # within one turn of the phases
            return list(accumulate(cnt[p : p + k]))
        return list(accumulate(islice(cycle(cnt[p:] + cnt[:p]), k)))

    def advance(self, end_times: list[int]) -> None:
        """Record ``len(end_times)`` decode steps ending at those ticks."""
        k = len(end_times)
        times = self.times
        times += end_times
        if len(times) > TRIM_STEPS:  # drop the ticks no member can need
            keep = min(e[2].dz for e in self.heap) if self.heap else self.D + k
            if keep - self.base > TRIM_STEPS // 2:
                del times[: keep - self.base]
                self.base = keep
        self.D += k
        self.ctx += self.n * k

    def finishing(self) -> list[CohortSeq]:
        """Pop the members whose last step is done, synced, in running order."""
        heap, out = self.heap, []
        while heap and heap[0][0] < self.D:
            s = heapq.heappop(heap)[2]
            self.leave(s)
            out.append(s)
        return out
