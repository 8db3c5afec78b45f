"""The policies' extent queues, narrated on tiny pools (exact queue order, which blocks
go, ghost keys), and their closed forms against the one-block-at-a-time rules."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sim_helpers import ExtentSeq, admit, chain

from kvlab.sim.extents import ExtentKV, ExtentPool, _Sweep
from kvlab.sim.policies.fifo import FIFO
from kvlab.sim.policies.lfu import LFU
from kvlab.sim.policies.retention import Retention
from kvlab.sim.policies.s3fifo import S3FIFO, GhostKeys, S3FIFOQueue
from kvlab.sim.policies.ttl import TTL

NEVER = 1 << 62


def blocks(exts: list[Any]) -> list[tuple[int, int, int]]:
    """(run, first block, blocks) of extents over 4-token blocks keyed as :func:`chain`."""
    return [(e.key >> 24, (e.key & 0xFFFFFF) // 4 - 1, e.n) for e in exts]


def keys(ks: list[int]) -> list[tuple[int, int]]:
    return [(k >> 24, (k & 0xFFFFFF) // 4 - 1) for k in ks]


def test_lfu_evicts_the_fewest_hits_first_each_extent_from_its_end() -> None:
    pool = ExtentPool(13, 4, policy=LFU())  # 12 usable blocks
    kv = ExtentKV(pool, 4, 1000)
    a = ExtentSeq(chain(1, 3), [3, NEVER])
    admit(kv, a, 0)
    kv.free(a, 1)
    b = ExtentSeq(chain(2, 2), [2, NEVER])
    admit(kv, b, 2)
    kv.free(b, 3)
    c = ExtentSeq(chain(1, 2) + chain(3, 1), [2, 3, NEVER])
    assert admit(kv, c, 4) == 2  # a's first two blocks: a hit splits a's extent
    kv.free(c, 5)
    rings = pool.queue.rings  # type: ignore[attr-defined]
    # no hits: the rest of a's extent (kept its place), b's, c's own; then the hit ones
    assert {level: blocks(r.items()) for level, r in rings.items()} == {
        0: [(1, 2, 1), (2, 0, 2), (3, 0, 1)],
        1: [(1, 0, 2)],
    }
    pool.take(pool.clean + 4, 6)
    assert blocks(rings[1].items()) == [(1, 0, 2)] and rings[0].empty()
    assert list(pool.by_run) == [1] and pool.queued == 2
    pool.take(1, 7)  # from the end of the hit extent
    assert blocks(pool.by_run[1]) == [(1, 0, 1)]


def test_s3fifo_one_hit_blocks_leave_through_the_small_queue_and_ghosts_return_to_main() -> None:
    pool = ExtentPool(17, 4, policy=S3FIFO(small_fraction=0.5, ghost_size=8))
    kv = ExtentKV(pool, 4, 1000)
    q: S3FIFOQueue = pool.queue  # type: ignore[assignment]
    a = ExtentSeq(chain(1, 4), [4, NEVER])
    admit(kv, a, 0)
    kv.free(a, 1)
    b = ExtentSeq(chain(2, 4), [4, NEVER])
    admit(kv, b, 2)
    kv.free(b, 3)
    c = ExtentSeq(chain(2, 2) + chain(4, 2), [2, 4, NEVER])
    assert admit(kv, c, 4) == 2
    kv.free(c, 5)
    # the hit part of b's extent is in the main queue, the rest of it kept its place
    assert blocks(q.small.items()) == [(1, 0, 4), (2, 2, 2), (4, 0, 2)]
    assert blocks(q.main.items()) == [(2, 0, 2)] and (q.num_small, q.num_main) == (8, 2)
    # 8 of 10 queued blocks are small (>= half): small victims while 8 - j >= (10 - j) / 2
    pool.take(pool.clean + 7, 6)
    assert blocks(q.small.items()) == [(4, 0, 1)] and blocks(q.main.items()) == [(2, 0, 2)]
    assert keys(q.ghost.keys()) == [(1, 3), (1, 2), (1, 1), (1, 0), (2, 3), (2, 2), (4, 1)]
    pool.take(1, 7)  # 1 small < 3 / 2: the main queue; its head was hit: second chance
    assert blocks(q.main.items()) == [(2, 0, 1)] and q.main.items()[0].hits == 0
    pool.take(1, 8)  # 1 >= 2 / 2: small again
    assert len(q.ghost) == 8 and q.small.empty()
    pool.take(1, 9)
    assert pool.queued == 0 and not pool.by_run
    pool.clean += 8  # (blocks handed back unkeyed)
    d = ExtentSeq(chain(1, 6), [6, NEVER])  # a's 4 blocks (ghosts) and 2 more
    assert admit(kv, d, 10) == 0
    kv.free(d, 11)
    assert blocks(q.main.items()) == [(1, 0, 4)] and blocks(q.small.items()) == [(1, 4, 2)]
    assert keys(q.ghost.keys()) == [(2, 3), (2, 2), (4, 1), (4, 0)]
    pool.take(pool.clean + 3, 12)  # 2 < 6 / 2: main until 2 >= (6 - j) / 2, then small
    assert blocks(q.main.items()) == [(1, 0, 2)] and blocks(q.small.items()) == [(1, 4, 1)]
    assert keys(q.ghost.keys())[-1] == (1, 5)


def test_fifo_evicts_extents_from_their_first_block_and_a_hit_can_take_one_twice() -> None:
    pool = ExtentPool(21, 4, policy=FIFO())
    kv = ExtentKV(pool, 4, 1000)
    a = ExtentSeq(chain(1, 4), [4, NEVER])
    admit(kv, a, 0)
    kv.free(a, 1)
    b = ExtentSeq(chain(2, 3), [3, NEVER])
    admit(kv, b, 2)
    kv.free(b, 3)
    pool.take(pool.clean + 2, 4)  # the two blocks cached first: a's first two
    assert blocks(pool.by_run[1]) == [(1, 2, 2)] and pool.by_run[1][0].cached == 3
    pool.clean += 10  # (blocks handed back unkeyed)
    c = ExtentSeq(chain(1, 6), [6, NEVER])
    assert admit(kv, c, 5) == 0  # block 0 is gone: c caches all six again
    kv.free(c, 6)
    assert blocks(pool.by_run[1]) == [(1, 2, 2), (1, 0, 6)]
    d = ExtentSeq(chain(1, 6), [6, NEVER])
    hit = kv.lookup_seq(d)
    # blocks 2 and 3 from a's copy (cached first), the others from c's
    assert [(blocks([e])[0], j, t) for e, j, t in hit.pieces] == [
        ((1, 0, 6), 0, 2),
        ((1, 2, 2), 0, 2),
        ((1, 0, 6), 4, 2),
    ]
    assert admit(kv, d, 7) == 6
    assert [(blocks([e])[0], m, e.ref) for e, m in d.table] == [
        ((1, 0, 2), 2, 1),
        ((1, 2, 2), 2, 1),
        ((1, 4, 2), 2, 1),
    ]
    assert blocks(pool.by_run[1]) == [(1, 2, 2), (1, 0, 2), (1, 2, 2), (1, 4, 2)]
    assert pool.queued == 5  # b's 3 and c's unhit middle
    kv.free(d, 8)
    pool.take(pool.clean + 3, 9)  # a's copy (cached first), then b's first block
    assert blocks(pool.by_run[1]) == [(1, 0, 2), (1, 2, 2), (1, 4, 2)]
    assert blocks(pool.by_run[2]) == [(2, 1, 2)]


def test_ttl_pins_expire_inside_a_decode_window() -> None:
    pool = ExtentPool(9, 4, policy=TTL(ttl=100, pin_rank=0))
    kv = ExtentKV(pool, 4, 1000)
    a = ExtentSeq(chain(1, 2), [2, NEVER], segments=[(9, 0)])  # a system prompt
    admit(kv, a, 0)
    kv.free(a, 0)  # pinned until tick 100
    b = ExtentSeq(chain(2, 3), [3, NEVER])
    admit(kv, b, 5)
    kv.free(b, 10)
    pool.take(pool.clean, 20)
    # one block per step, steps at ticks 50, 80, 110, 140: the pin ends before the third
    pool.take_steps([1, 2, 3, 4], 50, [80, 110, 140, 170])
    assert blocks(pool.by_run[2]) == [(2, 0, 1)] and 1 not in pool.by_run
    assert pool.num_evicted == 4


def test_retention_cuts_extents_where_the_class_changes_and_evicts_short_lived_first() -> None:
    pool = ExtentPool(13, 4, policy=Retention())
    kv = ExtentKV(pool, 4, 1000)
    # one key run over a system segment (tokens 0-7) and a reasoning one
    a = ExtentSeq(chain(1, 5), [5, NEVER], segments=[(8, 0), (21, 3)])
    admit(kv, a, 0)
    assert [(e.n, e.rank) for e in pool.by_run[1]] == [(2, 0), (3, 3)]
    kv.free(a, 1)
    b = ExtentSeq(chain(2, 2), [2, NEVER])  # rank 1 (context)
    admit(kv, b, 2)
    kv.free(b, 3)
    pool.take(pool.clean + 4, 4)  # the reasoning blocks from the end, then context
    assert blocks(pool.by_run[1]) == [(1, 0, 2)] and blocks(pool.by_run[2]) == [(2, 0, 1)]


Op = tuple[str, int, int, int]  # add / take, key run, first block, blocks


def _ghost_ref(ops: list[Op], size: int) -> tuple[list[int], list[list[int]]]:
    """The per-block ghost list (an OrderedDict of keys) under the same operations."""
    d: OrderedDict[int, None] = OrderedDict()
    taken = []
    for op, run, first, n in ops:
        ks = [(run << 24) + 4 * (first + i) for i in range(n)]
        if op == "add":
            for k in reversed(ks):  # evicted from the end: the highest key first
                if k not in d:
                    d[k] = None
                    if len(d) > size:
                        d.popitem(last=False)
        else:
            taken.append([k for k in ks if d.pop(k, 0) is None])
    return list(d), taken


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "add", "take"]),
            st.integers(0, 1),  # the key run
            st.integers(0, 24),  # first block
            st.integers(1, 10),  # blocks
        ),
        max_size=40,
    ),
    st.integers(0, 20),
)
def test_ghost_key_ranges_equal_an_ordered_dict_of_keys(ops: list[Op], size: int) -> None:
    g = GhostKeys(size, 4)
    taken = []
    for op, run, first, n in ops:
        lo, hi = (run << 24) + 4 * first, (run << 24) + 4 * (first + n - 1)
        if op == "add":
            g.add(hi, lo)
        else:
            taken.append(sorted(k for a, b in g.take(lo, hi) for k in range(a, b + 1, 4)))
    want_keys, want_taken = _ghost_ref(ops, size)
    assert g.keys() == want_keys and len(g) == len(want_keys)
    assert taken == want_taken


FRACS = st.one_of(st.sampled_from([0.0, 0.1, 0.3, 0.5, 1.0, 1.5]), st.floats(0, 1))


@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 60), FRACS)
def test_s3fifo_runs_equal_the_victim_by_victim_test(s: int, m: int, cap: int, frac: float) -> None:
    q = S3FIFOQueue(frac, GhostKeys(0, 4), lambda e, j: None)
    if s and (s >= frac * (s + m) or not m):  # the small queue goes next
        cap = min(cap, s)
        n = 0
        while n < cap and (not m or s - n >= frac * (s - n + m)):
            n += 1
        assert q._small_run(s, m, cap) == n
    elif m:
        cap = min(cap, m)
        n = 0
        while n < cap and not (s and s >= frac * (s + m - n)):
            n += 1
        assert q._main_run(s, m, cap) == n


@given(st.lists(st.integers(0, 3), min_size=1, max_size=8), st.data())
def test_sweep_ticks_and_first_victim_at_a_tick(per_step: list[int], data: st.DataObject) -> None:
    cum = [sum(per_step[: i + 1]) for i in range(len(per_step))]
    if cum[-1] == 0:
        return
    c = data.draw(st.integers(0, cum[-1] - 1))  # clean blocks first
    t_lo = 100
    ends = [t_lo + 10 * (i + 1) for i in range(len(cum))]
    num = cum[-1] - c
    sw = _Sweep(num, cum, c, t_lo, ends)
    want = []
    for step, total in enumerate(cum):
        start = t_lo if step == 0 else ends[step - 1]
        want += [start] * (total - (cum[step - 1] if step else 0))
    want = want[c:]
    assert [sw.tick(q) for q in range(num)] == want
    t = data.draw(st.integers(90, t_lo + 10 * len(cum) + 10))
    q = data.draw(st.integers(0, num - 1))
    first = next((i for i in range(q, num) if want[i] >= t), num)
    assert sw.first_at(t, q) == first
