"""Private blocks: full blocks whose content key no other request can ever produce.

A block key names the whole prefix up to the block's end (:mod:`kvlab.sim.hashing`),
so once a block of a request is private, every later block of it is too. The
simulator keeps a request's private cached blocks without per-block identity
(one run entry in the free queue, see :class:`kvlab.sim.block_pool.BlockPool`);
only the request itself can hit them again, after a preemption.

A key ``(run, offset)`` occurs in every request that has the segment run ``run``
(same prefix node, same content) with at least ``offset`` tokens, in its prompt or
in its output when that output is re-sent by name (``Request.output_content_id``).
So block i of request A (ending at token e, inside A's occurrence of ``run`` that
starts at token s) is private iff ``e - s`` exceeds the longest occurrence of
``run`` in any other request. A fresh output (no content id) is private.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvlab.sim.hashing import ChainInterner
from kvlab.workload.records import Request

#: ``first_private`` value of a request without private blocks.
NO_PRIVATE = 1 << 62


def first_private_blocks(
    requests: Sequence[Request], block_size: int, max_model_len: int
) -> list[int]:
    """Per request, the index of its first private full block (:data:`NO_PRIVATE` if none)."""
    it = ChainInterner()  # own numbering: the engine's interner sees no extra ids
    occ: list[list[tuple[int, int, int]]] = []  # per request: (run, start, tokens)
    top: dict[int, tuple[int, int, int]] = {}  # run -> (longest, its request, second longest)
    for qi, q in enumerate(requests):
        mine: list[tuple[int, int, int]] = []
        node = start = 0
        for s in q.segments:
            if s.tokens <= 0:
                continue
            c = it.content(s.content_id)
            mine.append((it.run(node, c), start, s.tokens))
            node = it.node(node, c, s.tokens)
            start += s.tokens
        if q.output_content_id is not None:
            max_out = max(0, min(q.output_tokens, max_model_len - q.prompt_tokens))
            mine.append((it.run(node, it.content(q.output_content_id)), start, max_out))
        for r, _, n in mine:
            t = top.get(r)
            if t is None:
                top[r] = (n, qi, 0)
            elif n > t[0]:
                top[r] = (n, qi, t[0])
            elif n > t[2]:
                top[r] = (t[0], t[1], n)
        occ.append(mine)
    out: list[int] = []
    bs = block_size
    for qi, q in enumerate(requests):
        first = NO_PRIVATE
        for r, at, n in occ[qi]:
            longest, who, second = top[r]
            other = second if who == qi else longest
            e = ((at + other) // bs + 1) * bs  # first block end beyond the others
            if e <= at + n:
                first = e // bs - 1
                break
        if first == NO_PRIVATE and q.output_content_id is None:
            first = q.prompt_tokens // bs  # the first block ending in fresh output
        out.append(first)
    return out
