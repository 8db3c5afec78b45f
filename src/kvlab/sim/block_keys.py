"""Content keys of the full KV blocks of a prompt (prefix-cache identity).

A prompt is a sequence of segments; segment ``(content_id, n)`` is the first n
tokens of the token stream named ``content_id`` (see
:mod:`kvlab.workload.records`). Token t of a prompt is therefore the pair
(content id, offset in that stream). A full block of ``block_size`` tokens is
described by its *pieces*: the ``(content_id, start, end)`` stream ranges it
covers, in order. Like vLLM's block hash (``vllm/v1/core/kv_cache_utils.py``:
hash of the parent block hash and the block's token ids), a block's key names
its parent block's key and its own pieces, so equal keys mean equal prefixes.

Two blocks get the same key iff their whole prefixes are the same tokens in
this content model: equal content ids share, different ids never do. Only full
blocks get keys; a trailing partial block is not cacheable. The keys are the
simulator's (:mod:`kvlab.sim.hashing`), renumbered densely; :func:`block_pieces`
spells out what one key stands for.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvlab.sim.hashing import ChainInterner
from kvlab.workload.records import Request, Segment

#: One piece of a block: tokens ``[start, end)`` of the stream ``content_id``.
Piece = tuple[str, int, int]


class BlockKeyTable:
    """Dense integer names for block keys.

    The keys themselves come from the simulator's :class:`ChainInterner` (one
    keying for both the simulator and the cache curve); the table renumbers
    them densely. Invariant: the same prefix always gets the same key, a new
    prefix the next int counting up from 0 (first-seen order). Keys are only
    comparable within one table.
    """

    __slots__ = ("_dense", "interner")

    def __init__(self) -> None:
        self.interner = ChainInterner()
        self._dense: dict[int, int] = {}

    def dense(self, chain_keys: Iterable[int]) -> list[int]:
        """Dense keys of simulator chain keys, numbering new ones in order."""
        d = self._dense
        out: list[int] = []
        for k in chain_keys:
            v = d.get(k)
            if v is None:
                v = d[k] = len(d)
            out.append(v)
        return out

    def __len__(self) -> int:
        return len(self._dense)


def block_pieces(segments: Iterable[Segment], block_size: int) -> list[tuple[Piece, ...]]:
    """The pieces of every full block of a prompt, in order (partial tail dropped)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    blocks: list[tuple[Piece, ...]] = []
    current: list[Piece] = []
    fill = 0
    for seg in segments:
        start = 0
        while start < seg.tokens:
            take = min(block_size - fill, seg.tokens - start)
            current.append((seg.content_id, start, start + take))
            fill += take
            start += take
            if fill == block_size:
                blocks.append(tuple(current))
                current = []
                fill = 0
    return blocks


def block_keys(
    request: Request | Iterable[Segment], block_size: int, table: BlockKeyTable
) -> list[int]:
    """Chain keys of the full blocks of a prompt: ``floor(prompt_tokens / block_size)`` keys."""
    segments = request.segments if isinstance(request, Request) else request
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    it = table.interner
    segs = [(it.content(s.content_id), s.tokens) for s in segments]
    return table.dense(it.prompt_keys(segs, block_size)[0])


__all__ = ["BlockKeyTable", "Piece", "block_keys", "block_pieces"]
