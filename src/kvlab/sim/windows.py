"""Decode windows: how many decode steps can run with no event in between.

A window exists when every running request is decoding (one token per step)
and the next step would admit nobody. It ends (exclusive) before the step
that would start at or after the next arrival, at the step that completes a
request, before the step whose allocations would not fit (that step preempts,
and is taken exactly), and, while requests wait, before a step that fills a
block of shared output (it could become the waiting request's hit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kvlab.sim.cost_model import StepCost
from kvlab.sim.sequence import Seq


def window_len(
    running: Sequence[Seq],
    *,
    block_size: int,
    token_budget: int,
    free_blocks: int,
    cost: StepCost,
    until_arrival: int | None,
    waiting: bool,
    head_admissible: Callable[[], bool],
    caching: bool = True,
) -> int:
    """Steps of the window starting now (0: take one exact step instead)."""
    n = len(running)
    if n == 0 or n > token_budget:
        return 0
    k = 1 << 62
    for s in running:
        if s.num_computed != s.num_tokens - 1 or s.rec.first_token_s is None:
            return 0  # still in prefill (one prompt token left is no decode: it sets TTFT)
        left = s.max_out - s.num_out
        if left < k:
            k = left
    if waiting:
        if head_admissible():
            return 0
        bs = block_size
        for s in running:  # a shared output block filling could turn into a hit
            if caching and s.req.output_content_id is not None:
                k = min(k, (bs - 1 - s.num_computed) % bs)
    if k <= 0:
        return 0
    if until_arrival is not None:
        s0 = sum(s.num_computed + 1 for s in running)
        k = min(k, steps_before(cost, until_arrival, n, s0, k))
    return fit_allocations(running, k, block_size, free_blocks)


def steps_before(cost: StepCost, deadline: int, n: int, s0: int, kmax: int) -> int:
    """Steps to take so that no step after the first starts at or after ``deadline``."""
    lo, hi = 0, kmax - 1  # largest j in [0, kmax-1] with window_ticks(j) < deadline
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost.window_ticks(n, s0, mid) < deadline:
            lo = mid
        else:
            hi = mid - 1
    return lo + 1


def allocations(running: Sequence[Seq], k: int, block_size: int) -> int:
    """Blocks the first ``k`` decode steps allocate."""
    total = 0
    for s in running:
        first = s.nblocks * block_size - s.num_computed  # step of the next allocation
        if first < k:
            total += (k - 1 - first) // block_size + 1
    return total


def fit_allocations(running: Sequence[Seq], k: int, block_size: int, free_blocks: int) -> int:
    """The largest window length <= k whose allocations fit in ``free_blocks``."""
    if allocations(running, k, block_size) <= free_blocks:
        return k
    lo, hi = 0, k - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if allocations(running, mid, block_size) <= free_blocks:
            lo = mid
        else:
            hi = mid - 1
    return lo
