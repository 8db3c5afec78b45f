"""S3-FIFO (Yang et al., SOSP 2023): a small probationary FIFO, a main FIFO and
a ghost list of recently evicted keys. One-hit blocks (a scan) leave through
the small queue without disturbing the blocks that were reused.

Adapted to a paged KV cache: only evictable blocks (ref count 0) sit in the
queues; a block that was hit since it was cached, or whose key is a ghost,
enters the main queue when freed, others the small queue. So a block in the
small queue was never hit since it was cached (a hit takes it off the queues,
and it comes back to the main one), and every victim taken from the small
queue leaves a ghost.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Any

from kvlab.sim.hashing import OFFSET_BITS
from kvlab.sim.policies.base import PolicyBase, Splitter, Sweep
from kvlab.sim.policies.ring import Ring

#: ``qtag`` of an extent in the main queue (in the small one: 0).
MAIN = 1


class S3FIFO(PolicyBase):
    """Invariants: every evictable block is in exactly one of ``_small``/``_main``;
    ``_freq[b]`` (0..3) counts hits since caching; ``_ghost`` holds at most
    ``ghost_size`` keys of blocks evicted from the small queue, oldest first.
    """

    name = "s3fifo"
    uses_access = True
    supports_extents = True
    no_extents_reason = ""

    def __init__(self, small_fraction: float = 0.1, ghost_size: int = 4096) -> None:
        if ghost_size < 0:
            raise ValueError("ghost_size must be >= 0")
        self.small_fraction = small_fraction
        self.ghost_size = ghost_size
        self._small: OrderedDict[int, None] = OrderedDict()
        self._main: OrderedDict[int, None] = OrderedDict()
        self._ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._freq: dict[int, int] = {}
        self._key: dict[int, Hashable] = {}

    def __len__(self) -> int:
        return len(self._small) + len(self._main)

    def on_access(self, block_id: int, key: Hashable, now: int) -> None:
        if self._key.get(block_id) != key:
            self._key[block_id] = key
            self._freq[block_id] = 0
        else:
            self._freq[block_id] = min(3, self._freq[block_id] + 1)

    def insert(self, block_id: int, now: int) -> None:
        key = self._key[block_id]
        if self._freq[block_id] > 0 or key in self._ghost:
            self._ghost.pop(key, None)
            self._main[block_id] = None
        else:
            self._small[block_id] = None

    def remove(self, block_id: int) -> None:
        if self._small.pop(block_id, 0) is not None:
            self._main.pop(block_id)

    def pop_victim(self, now: int) -> int:
        while True:
            if self._small and (
                len(self._small) >= self.small_fraction * len(self) or not self._main
            ):
                b = self._small.popitem(last=False)[0]
                if self._freq[b] > 0:
                    self._main[b] = None
                    continue
                key = self._key.pop(b)
                self._ghost[key] = None
                if len(self._ghost) > self.ghost_size:
                    self._ghost.popitem(last=False)
                return b
            b = self._main.popitem(last=False)[0]
            if self._freq[b] > 0:
                self._freq[b] -= 1
                self._main[b] = None
                continue
            del self._key[b]
            return b

    def order(self) -> list[int]:
        """Queue order (small first); the actual victim also depends on hit counts."""
        return list(self._small) + list(self._main)

    def extent_queue(self, block_size: int, split: Splitter) -> S3FIFOQueue:
        return S3FIFOQueue(self.small_fraction, GhostKeys(self.ghost_size, block_size), split)


class S3FIFOQueue:
    """S3-FIFO over extents: the small and main queues are rings (``qtag``: 0 or
    :data:`MAIN`), an extent's ``hits`` is its blocks' 2-bit frequency, the ghost list
    is key ranges (:class:`GhostKeys`).

    Invariants: ``num_small`` / ``num_main`` count the blocks in each ring. The
    per-block policy decides victim by victim between the queues; the decision only
    changes as the counts do, so a batch takes, in closed form, how many victims in
    a row come from one queue (:meth:`_small_run`, :meth:`_main_run`). A main extent
    that was hit moves to the main tail whole, its blocks' frequency one lower, as
    its blocks would one by one.
    """

    by_caching_order = False

    def __init__(self, small_fraction: float, ghost: GhostKeys, split: Splitter) -> None:
        self.frac = small_fraction
        self.ghost = ghost
        self.split_at = split
        self.bs = ghost.bs
        self.small = Ring()
        self.main = Ring()
        self.num_small = 0
        self.num_main = 0

    def push(self, e: Any, now: int) -> None:
        lo = e.key
        hi = lo + (e.n - 1) * self.bs
        if e.hits:
            self.ghost.take(lo, hi)
            self._to_main(e)
            return
        ghosts = self.ghost.take(lo, hi)
        if not ghosts:
            e.qtag = 0
            self.small.append(e)
            self.num_small += e.n
            return
        # blocks whose key was a ghost go to the main queue, the others to the small one
        bs = self.bs
        cuts = set()
        for a, b in ghosts:
            cuts.add((a - lo) // bs)
            cuts.add((b - lo) // bs + 1)
        cuts.discard(0)
        cuts.discard(e.n)
        pieces = [self.split_at(e, j) for j in sorted(cuts, reverse=True)]
        pieces.append(e)  # tail first, as the blocks are freed
        for p in pieces:
            if any(a <= p.key <= b for a, b in ghosts):
                self._to_main(p)
            else:
                p.qtag = 0
                self.small.append(p)
                self.num_small += p.n

    def _to_main(self, e: Any) -> None:
        e.qtag = MAIN
        self.main.append(e)
        self.num_main += e.n

    def remove(self, e: Any) -> None:
        if e.qtag == MAIN:
            self.num_main -= e.n
        else:
            self.num_small -= e.n
        Ring.unlink(e)

    def split(self, e: Any, h: Any) -> None:
        h.qtag = e.qtag
        Ring.insert_before(e, h)

    def hit(self, e: Any) -> None:
        if e.hits < 3:
            e.hits += 1

    def next_victims(self, limit: int, q: int, sweep: Sweep) -> tuple[Any, int]:
        while True:
            s, m = self.num_small, self.num_main
            if s and (s >= self.frac * (s + m) or not m):
                e = self.small.head.qnext
                if e.hits:
                    raise RuntimeError("a block in the small queue was hit")
                x = self._small_run(s, m, e.n if e.n <= limit else limit)
                n = e.n
                hi = e.key + (n - 1) * self.bs
                self.ghost.add(hi, hi - (x - 1) * self.bs)
                self.num_small = s - x
                if x == n:
                    Ring.unlink(e)
                return e, x
            e = self.main.head.qnext
            if e.hits:  # a second chance for all its blocks
                e.hits -= 1
                Ring.unlink(e)
                self.main.append(e)
                continue
            x = self._main_run(s, m, e.n if e.n <= limit else limit)
            self.num_main = m - x
            if x == e.n:
                Ring.unlink(e)
            return e, x

    def _small_run(self, s: int, m: int, cap: int) -> int:
        """Victims in a row from the small queue, at most ``cap`` (<= s): victim j comes
        from it while ``s - j >= frac * (s - j + m)`` or the main queue is empty (the
        per-block test, in the same float arithmetic; it holds at j = 0)."""
        if not m:
            return cap
        frac = self.frac
        lo, hi = 1, cap  # the test holds for victims < lo; find the first j that fails
        while lo <= hi:
            mid = (lo + hi) // 2
            if s - mid >= frac * (s - mid + m):
                lo = mid + 1
            else:
                hi = mid - 1
        return lo if lo < cap else cap

    def _main_run(self, s: int, m: int, cap: int) -> int:
        """Victims in a row from the main queue, at most ``cap`` (<= m): victim j comes
        from it until ``s >= frac * (s + m - j)`` (false at j = 0)."""
        if not s:
            return cap
        frac = self.frac
        lo, hi = 1, cap
        while lo <= hi:
            mid = (lo + hi) // 2
            if s >= frac * (s + m - mid):
                hi = mid - 1
            else:
                lo = mid + 1
        return lo if lo < cap else cap

    def close(self) -> None:
        self.small.close()
        self.main.close()
        self.split_at = _closed  # (the pool's bound method: a reference cycle)


def _closed(e: Any, j: int) -> Any:
    raise RuntimeError("the extent pool is closed")


class _Seg:
    """Keys added to the ghost list together: intervals ``[lo, hi]`` of one key run
    (keys step by the block size), highest first (the order they were added)."""

    __slots__ = ("ivs", "run")

    def __init__(self, run: int, lo: int, hi: int) -> None:
        self.run = run
        self.ivs = [[lo, hi]]


class GhostKeys:
    """S3-FIFO's ghost list over block keys as key ranges: at most ``size`` keys,
    oldest first; adding a present key changes nothing, and each key added beyond
    ``size`` drops the oldest (an ``OrderedDict`` of keys, a range at a time).

    Invariants: ``segs`` holds the segments oldest first (some may be empty),
    ``by_run[run]`` the non-empty ones of a key run, ``n`` the keys in all of them.
    """

    def __init__(self, size: int, block_size: int) -> None:
        self.size = size
        self.bs = block_size
        self.segs: deque[_Seg] = deque()
        self.by_run: dict[int, list[_Seg]] = {}
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def keys(self) -> list[int]:
        """Every key, oldest first (tests)."""
        return [k for seg in self.segs for lo, hi in seg.ivs for k in range(hi, lo - 1, -self.bs)]

    def take(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Remove the keys in ``[lo, hi]`` (one run); return the intervals removed."""
        run = lo >> OFFSET_BITS
        segs = self.by_run.get(run)
        if segs is None:
            return []
        out: list[tuple[int, int]] = []
        bs = self.bs
        for seg in segs:
            ivs = []
            for iv in seg.ivs:
                a, b = iv
                if a > hi or b < lo:
                    ivs.append(iv)
                    continue
                ca = a if a > lo else lo
                cb = b if b < hi else hi
                out.append((ca, cb))
                self.n -= (cb - ca) // bs + 1
                if cb < b:
                    ivs.append([cb + bs, b])
                if a < ca:
                    ivs.append([a, ca - bs])
            seg.ivs = ivs
        if out:
            live = [seg for seg in segs if seg.ivs]
            if live:
                self.by_run[run] = live
            else:
                del self.by_run[run]
            if len(self.segs) > 2 * self.n + 64:  # drop the emptied segments now and then
                self.segs = deque(seg for seg in self.segs if seg.ivs)
        return out

    def add(self, hi: int, lo: int) -> None:
        """Add the keys ``hi, hi - B, ..., lo`` (one run) in that order."""
        bs, run = self.bs, hi >> OFFSET_BITS
        pos = hi
        while pos >= lo:
            top = lo - bs  # the highest present key in [lo, pos], if any
            bottom = 0
            for seg in self.by_run.get(run, ()):
                for a, b in seg.ivs:
                    if a <= pos and b >= lo and (b if b < pos else pos) > top:
                        top = b if b < pos else pos
                        bottom = a if a > lo else lo
            if top == pos:  # present: stays where it is
                pos = bottom - bs
                continue
            newest = self.segs[-1] if self.segs else None
            if (
                newest is not None
                and newest.run == run
                and newest.ivs
                and newest.ivs[-1][0] == pos + bs
            ):
                newest.ivs[-1][0] = top + bs  # the keys right below the newest: one interval
            else:
                seg = _Seg(run, top + bs, pos)
                self.segs.append(seg)
                self.by_run.setdefault(run, []).append(seg)
            self.n += (pos - top) // bs
            if self.n > self.size:
                self._trim()
            pos = top

    def _trim(self) -> None:
        bs, segs = self.bs, self.segs
        while self.n > self.size:
            seg = segs[0]
            if seg.ivs:
                iv = seg.ivs[0]
                cnt = (iv[1] - iv[0]) // bs + 1
                k = cnt if cnt <= self.n - self.size else self.n - self.size
                if k == cnt:
                    del seg.ivs[0]
                else:
                    iv[1] -= k * bs
                self.n -= k
                if seg.ivs:
                    continue
                live = self.by_run[seg.run]
                live.remove(seg)
                if not live:
                    del self.by_run[seg.run]
            segs.popleft()
