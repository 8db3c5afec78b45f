"""The KV block pool without block identities: runs of blocks (*extents*) instead.

The simulator's outputs never name a physical block: what vLLM's block pool
decides (which keys stay cached, which get evicted and when, usage, hits) depends
only on the order of the free queue and on reference counts. So the simulator
keeps consecutive full blocks of one chain run (:mod:`kvlab.sim.hashing`: keys
``key, key + B, key + 2B, ...``) that share their state as one :class:`Extent`,
and unkeyed free blocks as a count. A prompt of 12,000 tokens is then a few dozen
extents, not 750 blocks, and evicting or freeing it costs as much.

Same results as :class:`kvlab.sim.block_pool.BlockPool` block by block, for every
eviction policy that gives an extent queue (a differential test runs both on
randomized workloads and on the shipped traces):

* the free queue is unkeyed blocks (a count, handed out first: vLLM prepends
  them) followed by keyed blocks in the policy's order: the policy's
  :class:`~kvlab.sim.policies.base.ExtentQueue` (for vLLM's LRU, the default, one
  ring that the pool walks itself); an extent in the queue stands for its blocks
  from the last to the first (a request frees its blocks tail first), so
  eviction shortens an extent from its end (from its start under FIFO, whose
  order is by caching: :class:`~kvlab.sim.policies.fifo.FIFOQueue`);
* the blocks of an extent share the state a policy reads (hits since caching,
  retention rank): a hit on part of an extent splits it (its parts keep its queue
  place and order), extents are cut where the retention rank changes, and an
  extent grows only with blocks in its state; every holder reaches the parts of a
  split extent through ``nxt`` links;
* vLLM keeps duplicate blocks of one key (it does not deduplicate) and a hit
  takes the one cached first: ``by_run[run]`` lists a run's extents in caching
  order, and an extent only grows while it is the run's last one;
* residency histograms: an extent's blocks share their hand-out and last-use
  ticks, so an eviction or a hit adds one count per extent, not per block.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

from kvlab.sim.block_pool import residency_histograms
from kvlab.sim.hashing import OFFSET_BITS
from kvlab.sim.kv_manager import AdmissionRules, cdiv
from kvlab.sim.policies.base import EvictionPolicy, ExtentQueue
from kvlab.sim.policies.keyed import DEFAULT_RANK
from kvlab.sim.policies.lru import LRU, LRUQueue
from kvlab.sim.prepare import NEVER
from kvlab.sim.sequence import Seq

#: Histogram slots of the extent pool: bins of ages below 2**255 ticks (the engine
#: rejects times that could reach them).
HIST_SLOTS = 256


def _add_ages(hist: list[int], stamps: list[int], lo: int, hi: int, t: int) -> None:
    """``hist[(t - b).bit_length()] += 1`` for each ``b`` in ``stamps[lo:hi]`` (ascending,
    none after ``t``): one bisection per bin."""
    while lo < hi:
        bl = (t - stamps[lo]).bit_length()  # the oldest left: the highest bin
        if bl == 0:
            hist[0] += hi - lo
            return
        j = bisect_right(stamps, t - (1 << (bl - 1)), lo, hi)
        hist[bl] += j - lo
        lo = j


class Extent:
    """Consecutive full blocks of one chain run with the same state.

    Invariants: keys ``key + i * B`` for ``i < n`` (one run); ``ref`` requests hold
    all of them; ``ref == 0`` iff the extent is in the free queue (``qprev`` /
    ``qnext`` links, ``qtag``: the queue's mark); ``born`` / ``used``: tick they
    were handed out / last handed out or hit, either one int for all, or ``born`` a
    list (one tick per block) and ``used`` None (= ``born``, never hit since);
    ``hits``: hits on each of them since they were cached (as the policy counts
    them: :meth:`ExtentQueue.hit`); ``rank``: their retention rank; ``cached``: the
    caching order of the first (the others follow it: ``cached + i``; kept for a
    queue ``by_caching_order``); ``nxt``: the extent that took over this one's later
    blocks when it was split (holders walk it).
    """

    __slots__ = (
        "born",
        "cached",
        "hits",
        "key",
        "n",
        "nxt",
        "qnext",
        "qprev",
        "qtag",
        "rank",
        "ref",
        "used",
    )

    def __init__(
        self, key: int, n: int, ref: int, born: Any, used: int | None, rank: int = DEFAULT_RANK
    ) -> None:
        self.key = key
        self.n = n
        self.ref = ref
        self.born = born
        self.used = used
        self.hits = 0
        self.rank = rank
        self.cached = 0
        self.nxt: Extent | None = None
        self.qprev: Any = None  # free-queue links, None off the queue (no cycles left behind)
        self.qnext: Any = None
        self.qtag: Any = None


class _Sweep:
    """The ticks of one batch of evictions (see :meth:`ExtentPool._evict`): victim
    ``q`` is block ``c + q`` of the window, taken at the start of its step."""

    __slots__ = ("c", "cum", "ends", "num", "t_lo")

    def __init__(self, num: int, cum: list[int] | None, c: int, t_lo: int, ends: Any) -> None:
        self.num = num
        self.cum = cum
        self.c = c
        self.t_lo = t_lo
        self.ends = ends

    def tick(self, q: int) -> int:
        cum = self.cum
        if cum is None:
            return self.t_lo
        step = bisect_right(cum, self.c + q)
        return self.ends[step - 1] if step else self.t_lo

    def first_at(self, t: int, q: int) -> int:
        """The first victim index ``>= q`` taken at a tick ``>= t`` (``num`` if none)."""
        if self.t_lo >= t:
            return q
        cum = self.cum
        if cum is None:
            return self.num
        step = bisect_left(self.ends, t) + 1  # the first step starting at or after t
        if step >= len(cum):
            return self.num
        first = cum[step - 1] - self.c
        return first if first > q else q


class Hit:
    """A lookup's result: ``pieces`` (extent, first block in it, blocks), ``n`` blocks.

    An extent can give two pieces, apart: when a duplicate cached earlier lies inside
    it (the hit takes the blocks cached first), so the pieces in between are the
    duplicate's."""

    __slots__ = ("n", "pieces")

    def __init__(self, pieces: list[tuple[Extent, int, int]], n: int) -> None:
        self.pieces = pieces
        self.n = n

    def __len__(self) -> int:
        return self.n


class ExtentPool:
    """Free blocks (``clean`` unkeyed + ``queued`` in the policy's queue) and cached extents.

    Invariants: ``clean + queued + held == num_blocks - 1``; ``queue`` holds the
    free keyed extents (``queued`` blocks) in the eviction order of ``policy``
    (vLLM's LRU by default); ``ring`` is that queue when it is LRU's ring (the pool
    walks it inline: the common case, kept fast), else None; ``by_run[run]`` holds
    every extent of ``run`` with ``n > 0``, in caching order.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        *,
        enable_caching: bool = True,
        policy: EvictionPolicy | None = None,
    ) -> None:
        if num_blocks < 2:
            raise ValueError("a block pool needs at least 2 blocks (one is the null block)")
        self.num_blocks = num_blocks
        self.bs = block_size
        self.enable_caching = enable_caching
        self.policy: EvictionPolicy = policy if policy is not None else LRU()
        if not self.policy.supports_extents:
            raise ValueError(
                f"policy {self.policy.name!r} cannot run on extents: "
                f"{self.policy.no_extents_reason}"
            )
        self.queue: ExtentQueue = self.policy.extent_queue(block_size, self.split)
        self.ring = self.queue if type(self.queue) is LRUQueue else None
        #: whether extents need retention ranks / hit counts (the policy reads them)
        self.uses_rank = self.policy.uses_retention
        self.counts_hits = self.policy.uses_access
        #: whether the queue orders blocks by when they were cached (then victims are the
        #: first blocks of extents, and requests key their output as it fills)
        self.by_caching = self.queue.by_caching_order
        #: blocks cached so far, counted by_caching (the next one's caching order: + 1)
        self.num_cached = 0
        #: whether the policy reads none of the state above (LRU): any run grows
        self.plain = not (self.uses_rank or self.counts_hits or self.by_caching)
        self.clean = num_blocks - 1
        self.queued = 0
        self.by_run: dict[int, list[Extent]] = {}
        self.num_evicted = 0
        #: residency histograms, ``hist[bin]`` (bin: bit length of an age in ticks)
        self.lifetime = [0] * HIST_SLOTS
        self.idle = [0] * HIST_SLOTS
        self.reuse_gap = [0] * HIST_SLOTS

    # -- queries ---------------------------------------------------------
    @property
    def num_free(self) -> int:
        return self.clean + self.queued

    def usage(self) -> float:
        """vLLM ``kv_cache_usage_perc``: cached free blocks count as free."""
        return 1.0 - (self.clean + self.queued) / (self.num_blocks - 1)

    def num_cached_free(self) -> int:
        return self.queued

    @property
    def num_clean(self) -> int:
        """Free blocks without a key (handed out before any eviction)."""
        return self.clean

    def get(self, key: int) -> Extent | None:
        """The extent a hit on ``key`` would take (the first cached), if any."""
        exts = self.by_run.get(key >> OFFSET_BITS)
        if exts:
            span = self.bs
            for e in exts:
                d = key - e.key
                if 0 <= d < e.n * span:
                    return e
        return None

    def longest_hit(self, seq: Any, cap: int) -> Hit:
        """The longest cached run of a request's first ``cap`` block keys (vLLM phase
        1), as extent pieces. The request's keys come in runs (``seq.ends``: the
        block index where each ends; ``seq.pkey[p]``: the first key of run p),
        so a piece never leaves one of its runs.
        """
        ends, pkey = seq.ends, seq.pkey
        pieces: list[tuple[Extent, int, int]] = []
        i = 0
        if not self.enable_caching:
            return Hit(pieces, 0)
        by_run, bs = self.by_run, self.bs
        p = 0
        while i < cap:
            while ends[p] <= i:
                p += 1
            key = pkey[p] + (i - (ends[p - 1] if p else 0)) * bs
            exts = by_run.get(key >> OFFSET_BITS)
            if not exts:
                break
            found = None
            limit = -1
            for e in exts:
                d = key - e.key
                if d >= 0:
                    if d < e.n * bs:
                        found = e
                        break
                elif limit < 0 or e.key < limit:  # cached earlier, starts later
                    limit = e.key
            if found is None:
                break
            j = d // bs
            t = found.n - j
            if limit >= 0 and (limit - key) // bs < t:
                t = (limit - key) // bs
            if ends[p] - i < t:
                t = ends[p] - i
            if cap - i < t:
                t = cap - i
            if pieces and pieces[-1][0] is found and pieces[-1][1] + pieces[-1][2] == j:
                pieces[-1] = (found, pieces[-1][1], pieces[-1][2] + t)  # key runs that meet
            else:
                pieces.append((found, j, t))
            i += t
        return Hit(pieces, i)

    # -- queue -------------------------------------------------------------
    def same_state(self, e: Extent, rank: int) -> bool:
        """Whether blocks just cached with retention rank ``rank`` can join held extent
        ``e`` (the request's newest) as the policy sees them: the same rank, no hits,
        and by caching order nothing cached since ``e``'s last block."""
        return (
            e.rank == rank
            and not e.hits
            and (not self.by_caching or e.cached + e.n > self.num_cached)
        )

    def split(self, e: Extent, j: int) -> Extent:
        """Cut ``e`` after its first ``j`` blocks (0 < j < n); return the later part (in
        ``e``'s state; the caller links it in the free queue if ``e`` is there)."""
        bs = self.bs
        born = e.born
        if born.__class__ is list:
            h = Extent(e.key + j * bs, e.n - j, e.ref, born[j:], e.used, e.rank)
            del born[j:]
        else:
            h = Extent(e.key + j * bs, e.n - j, e.ref, born, e.used, e.rank)
        h.hits = e.hits
        h.cached = e.cached + j
        e.n = j
        h.nxt = e.nxt
        e.nxt = h
        exts = self.by_run[e.key >> OFFSET_BITS]
        exts.insert(exts.index(e) + 1, h)
        return h

    def _split_queued(self, e: Extent, j: int) -> Extent:
        """:meth:`split`, keeping a queued extent's place: the later blocks leave first."""
        h = self.split(e, j)
        if e.ref == 0:
            self.queue.split(e, h)
        return h

    # -- mutations -------------------------------------------------------
    def take(self, n: int, now: int) -> None:
        """Hand out ``n`` blocks (the caller checked :attr:`num_free`): unkeyed ones
        first, then evict from the queue head."""
        c = self.clean
        if n <= c:
            self.clean = c - n
        else:
            self.clean = 0
            self._evict(n - c, None, c, now, now, ())

    def take_steps(self, taken: list[int], now: int, ends: list[int]) -> None:
        """:meth:`take` blocks at the start of decode steps: ``taken[i]`` in steps 0..i
        together (running totals), step 0 starting at ``now``, step i at ``ends[i - 1]``."""
        total = taken[-1]
        c = self.clean
        if total <= c:
            self.clean = c - total
            return
        self.clean = 0
        if len(taken) == 1:
            self._evict(total - c, None, c, now, now, ends)
            return
        first = bisect_right(taken, c)  # the steps that evict: first .. last
        last = bisect_left(taken, total)
        self._evict(
            total - c,
            taken,
            c,
            ends[first - 1] if first else now,
            ends[last - 1] if last else now,
            ends,
        )

    def _evict(
        self, num: int, cum: list[int] | None, c: int, t_lo: int, t_hi: int, ends: Any
    ) -> None:
        """Evict ``num`` blocks in the queue's order, between ticks ``t_lo`` and ``t_hi``.

        Eviction ``q`` (0-based) happens at the start of the step that takes block
        ``c + q`` of the window (``cum``: running totals of its steps' blocks, None
        for a single tick; step i starts at ``ends[i - 1]``, step 0 at ``t_lo``).
        Histogram counts are added per extent when its blocks fall in one bin at
        both ends of the range (nearly always), step by step otherwise. LRU's ring
        is walked here (the default: its loop kept lean), other queues name their
        victims (:meth:`_evict_by_queue`).
        """
        self.queued -= num
        self.num_evicted += num
        if self.ring is None:
            self._evict_by_queue(num, cum, c, t_lo, t_hi, ends)
            return
        head, life, idle, by_run = self.ring.head, self.lifetime, self.idle, self.by_run
        one_tick = t_lo == t_hi  # (then a stamp's age is one bin for all its blocks)
        acc_l = acc_i = acc_n = 0  # pending count for the bins (acc_l, acc_i)
        q = 0
        while q < num:
            e = head.qnext
            en = e.n
            x = en if en <= num - q else num - q
            born, used = e.born, e.used
            if born.__class__ is list:  # evicted from the end: the last x stamps
                bl = (t_lo - born[-1]).bit_length()
                uniform = bl == (t_hi - born[en - x]).bit_length()
            else:
                bl = (t_lo - born).bit_length()
                uniform = one_tick or bl == (t_hi - born).bit_length()
            if used is None:
                bi = bl
            else:
                bi = (t_lo - used).bit_length()
                if not one_tick:
                    uniform = uniform and bi == (t_hi - used).bit_length()
            if uniform:
                if bl == acc_l and bi == acc_i:
                    acc_n += x
                else:
                    if acc_n:
                        life[acc_l] += acc_n
                        idle[acc_i] += acc_n
                    acc_l, acc_i, acc_n = bl, bi, x
            else:  # step by step (as _ages_by_step: inline, the loop is LRU's hot path)
                j = 0
                while j < x:
                    m = x - j
                    t = t_lo
                    if cum is not None:
                        step = bisect_right(cum, c + q + j)
                        if step:
                            t = ends[step - 1]
                        if cum[step] - (c + q + j) < m:
                            m = cum[step] - (c + q + j)
                    if born.__class__ is list:
                        _add_ages(life, born, en - j - m, en - j, t)
                        if used is None:
                            _add_ages(idle, born, en - j - m, en - j, t)
                    else:
                        life[(t - born).bit_length()] += m
                    if used is not None or born.__class__ is not list:
                        idle[(t - (born if used is None else used)).bit_length()] += m
                    j += m
            q += x
            if x < en:
                if born.__class__ is list:
                    del born[en - x :]
                e.n = en - x
                break
            nxt = e.qnext
            head.qnext = nxt
            nxt.qprev = head
            e.qprev = e.qnext = None
            run = e.key >> OFFSET_BITS  # forget the extent
            exts = by_run[run]
            if len(exts) == 1:
                del by_run[run]
            else:
                exts.remove(e)
            e.n = 0
        if acc_n:
            life[acc_l] += acc_n
            idle[acc_i] += acc_n

    def _evict_by_queue(
        self, num: int, cum: list[int] | None, c: int, t_lo: int, t_hi: int, ends: Any
    ) -> None:
        """:meth:`_evict` with the victims the policy's queue names
        (:meth:`ExtentQueue.next_victims`): the last blocks of an extent, or the first
        for a queue by caching order (FIFO)."""
        life, idle, by_run, bs = self.lifetime, self.idle, self.by_run, self.bs
        front, next_victims = self.by_caching, self.queue.next_victims
        sweep = _Sweep(num, cum, c, t_lo, ends)
        one_tick = t_lo == t_hi
        acc_l = acc_i = acc_n = 0
        q = 0
        while q < num:
            e, x = next_victims(num - q, q, sweep)  # (unlinked when all of it goes)
            en = e.n
            born, used = e.born, e.used
            if born.__class__ is list:  # the stamps of the victims: the last x or first x
                newest, oldest = (born[x - 1], born[0]) if front else (born[-1], born[en - x])
                bl = (t_lo - newest).bit_length()
                uniform = bl == (t_hi - oldest).bit_length()
            else:
                bl = (t_lo - born).bit_length()
                uniform = one_tick or bl == (t_hi - born).bit_length()
            if used is None:
                bi = bl
            else:
                bi = (t_lo - used).bit_length()
                if not one_tick:
                    uniform = uniform and bi == (t_hi - used).bit_length()
            if uniform:
                if bl == acc_l and bi == acc_i:
                    acc_n += x
                else:
                    if acc_n:
                        life[acc_l] += acc_n
                        idle[acc_i] += acc_n
                    acc_l, acc_i, acc_n = bl, bi, x
            else:
                self._ages_by_step(e, x, q, front, cum, c, t_lo, ends)
            q += x
            if x < en:
                if not front:
                    if born.__class__ is list:
                        del born[en - x :]
                else:
                    if born.__class__ is list:
                        del born[:x]
                    e.key += x * bs
                    e.cached += x
                e.n = en - x
                continue
            run = e.key >> OFFSET_BITS  # forget the extent
            exts = by_run[run]
            if len(exts) == 1:
                del by_run[run]
            else:
                exts.remove(e)
            e.n = 0
        if acc_n:
            life[acc_l] += acc_n
            idle[acc_i] += acc_n

    def _ages_by_step(
        self,
        e: Extent,
        x: int,
        q: int,
        front: bool,
        cum: list[int] | None,
        c: int,
        t_lo: int,
        ends: Any,
    ) -> None:
        """Histogram counts of victims ``q .. q + x - 1`` (the last x blocks of ``e``, or
        the first x when ``front``), step by step: the blocks each step evicts."""
        life, idle = self.lifetime, self.idle
        born, used, en = e.born, e.used, e.n
        j = 0
        while j < x:
            m = x - j
            t = t_lo
            if cum is not None:
                step = bisect_right(cum, c + q + j)
                if step:
                    t = ends[step - 1]
                if cum[step] - (c + q + j) < m:
                    m = cum[step] - (c + q + j)
            if born.__class__ is list:
                lo, hi = (j, j + m) if front else (en - j - m, en - j)
                _add_ages(life, born, lo, hi, t)
                if used is None:
                    _add_ages(idle, born, lo, hi, t)
            else:
                life[(t - born).bit_length()] += m
            if used is not None or born.__class__ is not list:
                idle[(t - (born if used is None else used)).bit_length()] += m
            j += m

    def touch(self, hit: Hit, now: int) -> list[list[Any]]:
        """A request takes the hit blocks: ref += 1 (off the queue when free).
        Returns its block-table entries ``[extent, blocks]``."""
        out: list[list[Any]] = []
        gap, queue, ring, counts_hits = self.reuse_gap, self.queue, self.ring, self.counts_hits
        for e, j, t in hit.pieces:
            while j >= e.n:  # an earlier piece of this hit split e: the blocks are in a part
                j -= e.n
                nxt = e.nxt
                assert nxt is not None
                e = nxt
            if j:
                e = self._split_queued(e, j)
            if t < e.n:
                self._split_queued(e, t)
            if e.ref == 0:
                if ring:  # (LRU: unlinked inline)
                    prev, nxt = e.qprev, e.qnext
                    prev.qnext = nxt
                    nxt.qprev = prev
                    e.qprev = e.qnext = None
                else:
                    queue.remove(e)
                self.queued -= e.n
            e.ref += 1
            if counts_hits:
                queue.hit(e)
            if e.used is None:
                for b in e.born:
                    gap[(now - b).bit_length()] += 1
            else:
                gap[(now - e.used).bit_length()] += t
            e.used = now
            out.append([e, t])
        return out

    def release(self, table: list[list[Any]], now: int = 0) -> None:
        """Drop one reference to every block of a block table, tail first (vLLM
        ``free_blocks``): extents reaching 0 join the free queue in that order."""
        freed: list[Extent] = []
        for entry in reversed(table):
            e, m = entry
            if e.n == m:
                r = e.ref - 1
                e.ref = r
                if r == 0:
                    freed.append(e)
                continue
            chain = []
            x: Extent | None = e
            while m > 0:
                assert x is not None
                chain.append(x)
                m -= x.n
                x = x.nxt
            for e in reversed(chain):
                r = e.ref - 1
                e.ref = r
                if r == 0:
                    freed.append(e)
        if not freed:
            return
        ring = self.ring
        if ring is None:
            push = self.queue.push
            for e in freed:
                self.queued += e.n
                push(e, now)
            return
        head = ring.head  # LRU: linked at the ring's tail in one pass
        last = head.qprev
        queued = self.queued
        for e in freed:
            e.qprev = last
            last.qnext = e
            last = e
            queued += e.n
        last.qnext = head
        head.qprev = last
        self.queued = queued

    def cache_stamped(self, key: int, borns: list[int], rank: int = DEFAULT_RANK) -> Extent:
        """Register blocks handed out at the ticks ``borns`` (one each) as one new
        extent of retention rank ``rank`` held by one request (its output, keyed when
        it is released)."""
        e = Extent(key, len(borns), 1, borns, None, rank)  # (never by caching order)
        run = key >> OFFSET_BITS
        exts = self.by_run.get(run)
        if exts is None:
            self.by_run[run] = [e]
        else:
            exts.append(e)
        return e

    def close(self) -> None:
        """Unlink the free queue (its rings are the pool's only reference cycles), so
        that reference counting frees the extents once the pool is dropped."""
        self.queue.close()
        self.by_run = {}

    def histograms(self, ticks_per_s: int) -> dict[str, dict[str, object]]:
        """The residency histograms (as :meth:`BlockPool.histograms`)."""
        return residency_histograms(self.lifetime, self.idle, self.reuse_gap, ticks_per_s)


class ExtentSeq(Seq):
    """A request over the extent pool: its block table as :class:`ExtentKV` keeps it.

    ``table``: ``[extent, blocks]`` entries in block order (hit extents, then its
    own cached ones: ``nkeyed`` blocks); ``pending``: ``[born, count]`` groups of its
    unkeyed blocks after them; ``dstamps``: hand-out ticks of the decode blocks it
    took as a cohort member (one each, after ``pending``); ``last_ext``: the extent
    it may still grow; ``lazy_from``: its first block of fresh output (keyed when
    released), NEVER for named output.
    """

    __slots__ = ("dstamps", "last_ext", "lazy_from", "nkeyed", "pending", "table")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lazy_from = self.nprompt if self.out_content is None else NEVER
        self.nkeyed = 0
        self.table: list[list[Any]] = []
        self.pending: list[list[int]] = []
        self.dstamps: list[int] = []
        self.last_ext: Any = None


def rank_run(seq: Any, i: int) -> tuple[int, int]:
    """The retention rank of a request's block ``i`` (:meth:`Seq.block_rank`) and the
    block where the run of blocks from ``i`` that surely share it ends: the first
    block whose last token lies in a later segment (output blocks: never)."""
    rank = seq.block_rank(i)
    last = (i + 1) * seq.block_size - 1
    if last >= seq.prompt_len:
        return rank, NEVER
    seg_ends = seq.seg_ends  # (made by block_rank)
    return rank, seg_ends[bisect_right(seg_ends, last)] // seq.block_size


class ExtentKV(AdmissionRules):
    """:class:`kvlab.sim.kv_manager.KVManager` over an :class:`ExtentPool`: the same
    allocation rules, with a request's block table as extents.

    Per request (see :class:`kvlab.sim.sequence.Seq`): ``table`` lists ``[extent,
    blocks]`` entries in block order (hit extents, then its own cached ones:
    ``nkeyed`` blocks), ``pending`` the ``[born, count]`` groups of its unkeyed
    blocks after them, then ``dstamps``: the hand-out ticks of the decode blocks
    it took as a cohort member (:mod:`kvlab.sim.cohort`), one each; ``nblocks``
    all of them, ``last_ext`` the extent it may still grow.

    Fresh output (no output content id: blocks ``lazy_from`` on) is a run no
    other request has, so only its owner could hit it, and only once it has
    released it (after a preemption). Its filled blocks are keyed when the owner
    releases them, as one extent stamped block by block: the same queue, hits
    and histograms as keying each block when it fills.
    """

    pool: ExtentPool
    seq_class = ExtentSeq

    def lookup_seq(self, seq: Any) -> Hit:
        """Cached blocks of the longest prefix hit, over at most num_tokens - 1 tokens."""
        cap = (seq.num_tokens - 1) // self.block_size
        if cap > seq.nknown:
            cap = seq.nknown
        return self.pool.longest_hit(seq, cap)

    def fits(
        self,
        seq: Any,
        num_new_tokens: int,
        hit: Hit,
        num_external_tokens: int = 0,
        has_running: bool = True,
    ) -> bool:
        """Whether :meth:`admit` would succeed (no side effects)."""
        evictable = 0
        for e, _, t in hit.pieces:
            if e.ref == 0:
                evictable += t
        return self.fits_counts(
            seq.num_tokens, num_new_tokens, hit.n, evictable, num_external_tokens, has_running
        )

    def admit(
        self,
        seq: Any,
        num_new_tokens: int,
        hit: Hit,
        now: int = 0,
        *,
        num_external_tokens: int = 0,
        has_running: bool = True,
    ) -> list[int] | None:
        """Take the hit and allocate the first chunk; None if it does not fit."""
        if num_external_tokens:
            raise ValueError("the extent pool has no lower tier")
        if not self.fits(seq, num_new_tokens, hit, 0, has_running):
            return None
        pool = self.pool
        if pool.by_caching:  # the queue needs each block's caching order: no lazy keying
            seq.lazy_from = NEVER
        seq.table = pool.touch(hit, now) if hit.pieces else []
        seq.pending = []
        seq.last_ext = None
        nh = hit.n
        seq.nblocks = seq.num_cached_blocks = seq.nkeyed = nh
        bs = self.block_size
        computed = nh * bs
        need = cdiv(min(computed + num_new_tokens, self.max_model_len), bs) - nh
        if need > 0:
            pool.take(need, now)
            seq.pending.append([now, need])
            seq.nblocks += need
        self._cache(seq, min(computed + num_new_tokens, seq.num_tokens), now)
        return []

    @staticmethod
    def flush_stamps(seq: Any) -> None:
        """Move a request's decode stamps to its pending groups (before appending)."""
        if seq.dstamps:
            seq.pending += [[t, 1] for t in seq.dstamps]
            seq.dstamps = []

    def extend(self, seq: Any, num_new_tokens: int, now: int = 0) -> bool:
        """Allocate slots for a running request's next ``num_new_tokens``; False if full."""
        if seq.dstamps:
            self.flush_stamps(seq)
        need_slot = min(seq.num_computed + num_new_tokens, self.max_model_len)
        need = cdiv(need_slot, self.block_size) - seq.nblocks
        if need > 0:
            pool = self.pool
            if need > pool.clean + pool.queued:
                return False
            pool.take(need, now)
            seq.pending.append([now, need])
            seq.nblocks += need
        self._cache(seq, min(seq.num_computed + num_new_tokens, seq.num_tokens), now)
        return True

    def cache_upto(self, seq: Any, num_tokens: int, now: int) -> None:
        """Cache the request's blocks filled by its first ``num_tokens`` tokens."""
        self._cache(seq, num_tokens, now)

    def extend_window(
        self, running: Sequence[Any], events: Sequence[int], starts: Sequence[int]
    ) -> bool:
        """(:meth:`kvlab.sim.kv.KVCache.extend_window`) The blocks of all batches
        handed out together (:meth:`ExtentPool.take_steps`: the blocks of one batch at
        its tick, evictions in batch order, as one take per event would make them),
        then the cachings in event order: they key held blocks only, which no
        allocation can evict (as :meth:`decode_window`)."""
        n, bs, mml = len(running), self.block_size, self.max_model_len
        counts = [0] * len(starts)
        for e in events:  # each request's counters as of its event's batch
            i = e // n
            s = running[e - i * n]
            if s.dstamps:
                self.flush_stamps(s)
            need_slot = s.num_computed + i + 1
            need = cdiv(need_slot if need_slot < mml else mml, bs) - s.nblocks
            if need > 0:
                s.pending.append([starts[i], need])
                s.nblocks += need
                counts[i] += need
        total = sum(counts)
        pool = self.pool
        if total > pool.clean + pool.queued:
            return False
        if total:
            taken = list(accumulate(counts))
            pool.take_steps(taken, starts[0], list(starts[1:]))
        if pool.enable_caching:
            cache = self._cache
            for e in events:
                i = e // n
                s = running[e - i * n]
                cache(s, s.num_computed + i, starts[i])
        return True

    def decode_window(
        self, running: Sequence[Any], k: int, now: int, step_start: Callable[[int], int]
    ) -> None:
        """Allocations and cachings of ``k`` decode steps, batched: the blocks one
        step hands out go together (one tick); cachings key held blocks only, which
        no allocation can evict, so they follow, in per-step order (it fixes which
        duplicate a hit takes). (:meth:`kvlab.sim.kv.KVCache.decode_window`)"""
        bs, pool, n = self.block_size, self.pool, len(running)
        events: list[int] = []  # step * n + position: sorts like (step, position)
        kn, bn = k * n, bs * n
        for pos, s in enumerate(running):
            if s.dstamps:  # (its pending groups take the next blocks)
                self.flush_stamps(s)
            first = s.nblocks * bs - s.num_computed
            if first < k:
                events.extend(range(first * n + pos, kn, bn))
        if events:
            events.sort()
            take = pool.take
            last_i = -1
            t = 0
            for e in events:
                i = e // n
                if i != last_i:
                    t = step_start(i)
                    last_i = i
                take(1, t)
                s = running[e - i * n]
                s.pending.append([t, 1])
                s.nblocks += 1
        if pool.enable_caching:
            fills: list[int] = []
            for pos, s in enumerate(running):
                first = (bs - 1 - s.num_computed) % bs
                if first < k:
                    if s.lazy_from < NEVER:  # fresh output: keyed when released
                        s.num_cached_blocks = (s.num_computed + k) // bs
                    else:
                        fills.extend(range(first * n + pos, kn, bn))
            if fills:
                fills.sort()
                cache = self._cache
                for e in fills:
                    i = e // n
                    s = running[e - i * n]
                    cache(s, s.num_computed + i + 1, now)

    def close(self) -> None:
        self.pool.close()

    def _cache(self, seq: Any, num_tokens: int, now: int) -> None:
        n_full = num_tokens // self.block_size
        if n_full <= seq.num_cached_blocks or not self.pool.enable_caching:
            return
        seq.num_cached_blocks = n_full
        i = seq.nkeyed
        if n_full > seq.lazy_from:  # fresh output blocks wait for the release
            n_full = seq.lazy_from
            if i >= n_full:
                return
        seq.ensure_keys(n_full)
        seq.nkeyed = n_full
        if seq.dstamps:
            self.flush_stamps(seq)
        ends, pending, table, pkey = seq.ends, seq.pending, seq.table, seq.pkey
        pool = self.pool
        by_run, bs, plain = pool.by_run, self.block_size, pool.plain
        uses_rank, by_caching = pool.uses_rank, pool.by_caching
        last = seq.last_ext
        p = bisect_right(ends, i)
        rank = DEFAULT_RANK
        rank_end = -1  # (blocks up to here share ``rank``)
        while i < n_full:  # key the pending blocks: grow the newest extent or add one
            group = pending[0]
            born, cnt = group
            t = ends[p] - i
            if cnt < t:
                t = cnt
            if n_full - i < t:
                t = n_full - i
            if not plain and uses_rank:  # an extent's blocks share their retention rank
                if i >= rank_end:
                    rank, rank_end = rank_run(seq, i)
                if rank_end - i < t:
                    t = rank_end - i
            key = pkey[p] + (i - (ends[p - 1] if p else 0)) * bs
            run = key >> OFFSET_BITS
            exts = by_run.get(run)
            if (
                exts is not None
                and exts[-1] is last
                and last.ref == 1
                and last.born == born
                and last.used == born
                and last.nxt is None
                and last.key + last.n * bs == key
                and (plain or pool.same_state(last, rank))
            ):  # the request's newest extent continues: grow it
                last.n += t
                table[-1][1] += t
                if by_caching:
                    pool.num_cached += t
            else:
                last = Extent(key, t, 1, born, born, rank)
                if exts is None:
                    by_run[run] = [last]
                else:
                    exts.append(last)
                table.append([last, t])
                if by_caching:
                    last.cached = pool.num_cached + 1
                    pool.num_cached += t
            if t == cnt:
                del pending[0]
            else:
                group[1] = cnt - t
            i += t
            if i >= ends[p]:
                p += 1
        seq.last_ext = last

    def free(self, seq: Any, now: int = 0, *, final: bool = False) -> None:
        """Release the request's blocks, tail first (vLLM ``free``)."""
        pool = self.pool
        pending, stamps = seq.pending, seq.dstamps
        lazy = seq.num_cached_blocks - seq.nkeyed
        if lazy > 0:
            borns: list[int] = []
            k = 0
            while lazy and k < len(pending):
                g = pending[k]
                b, c = g
                if c > lazy:
                    borns += [b] * lazy
                    g[1] = c - lazy
                    lazy = 0
                    break
                borns += [b] * c if c > 1 else (b,)
                lazy -= c
                k += 1
            del pending[:k]
            if lazy:
                borns += stamps[:lazy]
                del stamps[:lazy]
            seq.ensure_keys(seq.num_cached_blocks)
            rank = seq.block_rank(seq.nkeyed) if pool.uses_rank else DEFAULT_RANK
            e = pool.cache_stamped(seq.key_at(seq.nkeyed), borns, rank)  # (output: one rank)
            seq.table.append([e, len(borns)])
        for _, c in pending:
            pool.clean += c
        pool.clean += len(stamps)
        seq.dstamps = []
        pool.release(seq.table, now)
        seq.table = []
        seq.pending = []
        seq.last_ext = None
        seq.nblocks = seq.num_cached_blocks = seq.nkeyed = 0
