"""A FIFO of extents as a doubly linked ring: the building block of the extent queues.

An extent (:class:`kvlab.sim.extents.Extent`) carries its own links ``qprev`` /
``qnext``, so appending, unlinking and inserting next to a known extent are O(1)
with no allocation, and a queue of a million blocks is a few thousand links.
"""

from __future__ import annotations

from typing import Any


class _Head:
    """The sentinel of a ring (it holds no blocks)."""

    __slots__ = ("n", "qnext", "qprev")

    def __init__(self) -> None:
        self.n = 0
        self.qprev: Any = self
        self.qnext: Any = self


class Ring:
    """Extents in a ring through the sentinel ``head``: ``head.qnext`` comes first,
    ``head.qprev`` last. Invariant: an extent is in at most one ring, and its links
    are None while it is in none (so a dropped pool leaves no reference cycle).
    """

    __slots__ = ("head",)

    def __init__(self) -> None:
        self.head = _Head()

    def empty(self) -> bool:
        return self.head.qnext is self.head

    def append(self, e: Any) -> None:
        head = self.head
        last = head.qprev
        e.qprev = last
        e.qnext = head
        last.qnext = e
        head.qprev = e

    @staticmethod
    def unlink(e: Any) -> None:
        p, q = e.qprev, e.qnext
        p.qnext = q
        q.qprev = p
        e.qprev = e.qnext = None

    @staticmethod
    def insert_before(e: Any, h: Any) -> None:
        """Link ``h`` right before ``e`` (in ``e``'s ring)."""
        p = e.qprev
        h.qprev = p
        h.qnext = e
        p.qnext = h
        e.qprev = h

    def items(self) -> list[Any]:
        """The extents, first first (tests)."""
        out = []
        e = self.head.qnext
        while e is not self.head:
            out.append(e)
            e = e.qnext
        return out

    def close(self) -> None:
        """Unlink every extent and the sentinel; the ring is unusable afterwards."""
        head = self.head
        e = head.qnext
        while e is not head:
            q = e.qnext
            e.qprev = e.qnext = None
            e = q
        head.qprev = head.qnext = None
