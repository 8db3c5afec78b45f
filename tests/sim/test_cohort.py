"""The decode cohort: phase counts, completions and lazy syncing, on a tiny example."""

from __future__ import annotations

from types import SimpleNamespace

from kvlab.sim.cohort import Cohort
from kvlab.sim.prepare import NEVER


def member(computed: int, nblocks: int, out: int, max_out: int, run_seq: int) -> SimpleNamespace:
    """A decoding request's state (block size 4): ``computed`` tokens have KV."""
    return SimpleNamespace(
        num_computed=computed,
        num_tokens=computed + 1,
        num_out=out,
        max_out=max_out,
        nblocks=nblocks,
        num_cached_blocks=computed // 4,
        dstamps=[],
        pending=[],
        lazy_from=2,
        rec=SimpleNamespace(first_token_s=0.0),
        run_seq=run_seq,
    )


def test_phases_completions_and_sync() -> None:
    co = Cohort(4, caching=True)
    co.start(now=100)
    a = member(computed=6, nblocks=2, out=1, max_out=10, run_seq=1)  # next block at step 2
    b = member(computed=8, nblocks=2, out=3, max_out=5, run_seq=2)  # at step 0; last step 1
    assert co.eligible(a) and co.eligible(b)
    for s in (a, b):
        co.enter(s)
    assert (a.da, b.da) == (2, 0) and co.cnt == [1, 0, 1, 0]
    assert co.ctx == 7 + 9 and co.steps_to_finish() == 2  # b emits its 2 last tokens
    assert co.taken(6) == [1, 1, 2, 2, 3, 3]  # blocks taken in the next 1..6 steps
    co.advance([110, 121])  # two steps, ending at ticks 110 and 121
    assert co.ctx == 16 + 2 * 2 and co.D == 2
    done = co.finishing()
    assert done == [b] and co.n == 1 and co.cnt == [0, 0, 1, 0]
    # b decoded 2 tokens, took its block at step 0 (tick 100)
    assert (b.num_computed, b.num_out, b.num_tokens) == (10, 5, 11)
    assert b.nblocks == 3 and b.dstamps == [100] and b.num_cached_blocks == 2
    assert co.ctx == 7 + 2  # a's context now
    co.advance([133, 146, 160])
    co.sync(a)  # a took its blocks at steps 2 (tick 121) and nothing since (next: step 6)
    assert (a.num_computed, a.num_out, a.nblocks, a.dstamps, a.da) == (11, 6, 3, [121], 6)
    co.dissolve([a])
    # (its stamps stay: the KV cache moves them to its pending groups when it needs to)
    assert co.n == 0 and co.heap == [] and a.pending == [] and a.dstamps == [121]


def test_shared_output_and_requests_in_prefill_stay_out() -> None:
    co = Cohort(4, caching=True)
    shared = member(computed=6, nblocks=2, out=1, max_out=10, run_seq=1)
    shared.lazy_from = NEVER  # its output has a content id: another request may hit it
    prefill = member(computed=6, nblocks=2, out=0, max_out=10, run_seq=2)
    prefill.rec.first_token_s = None  # one prompt token left: not decoding yet
    assert not co.eligible(shared) and not co.eligible(prefill)
    assert Cohort(4, caching=False).eligible(shared)  # nothing can hit without caching
