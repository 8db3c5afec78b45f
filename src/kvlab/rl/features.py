"""The per-candidate features of an eviction decision, one function for every
place that scores candidates: ``kvlab/PrefixEviction-v0``'s observation and the
``learned:FILE`` eviction policy the simulator runs (:mod:`kvlab.rl.learned`).

Per candidate (log1p-scaled unless said): ``age`` (time since its last touch),
``touches`` since it was cached, ``gap`` (time between its last two touches, 0 before
a reuse), ``rank`` (retention rank / 4: 0 = system ... 1 = ephemeral), ``depth``
(block index in its prompt), ``children`` (distinct child blocks seen so far),
``slot`` (``i / k``: its rank among the candidates, 0 = the LRU victim) and
``valid`` (1 for a real candidate; padding rows are all 0).

Time is whatever clock the caller keeps, as long as ``now`` and ``last`` use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import log1p
from typing import Protocol

FEATURES: tuple[str, ...] = ("age", "touches", "gap", "rank", "depth", "children", "slot", "valid")
NUM_FEATURES = len(FEATURES)


class Indexed(Protocol):
    """A per-candidate statistic: a list indexed by key or a dict by block id."""

    def __getitem__(self, i: int, /) -> int: ...


def candidate_rows(
    now: int,
    cands: Sequence[int],
    k: int,
    last: Indexed,
    touches: Indexed,
    gap: Indexed,
    rank: Indexed,
    depth: Indexed,
    children: Indexed,
) -> list[tuple[float, ...]]:
    """The feature rows of ``cands`` (at most ``k``, first = the LRU victim), in
    :data:`FEATURES` order; the caller pads to ``k`` rows with zeros."""
    return [
        (
            log1p(now - last[x]),
            log1p(touches[x]),
            log1p(gap[x]),
            rank[x] / 4.0,
            log1p(depth[x]),
            log1p(children[x]),
            i / k,
            1.0,
        )
        for i, x in enumerate(cands)
    ]
