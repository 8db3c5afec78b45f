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
blocks get keys; a trailing partial block is not cacheable.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvlab.workload.records import Request, Segment

#: One piece of a block: tokens ``[start, end)`` of the stream ``content_id``.
Piece = tuple[str, int, int]


class BlockKeyTable:
    """Interns block contents into dense integer keys.

    Invariant: ``intern(parent, pieces)`` returns the same key for the same
    ``(parent, pieces)`` and a new key, counting up from 0 in first-seen order,
    otherwise. ``parent`` is the key of the previous block of the prompt, or
    None for the first block. Keys are only comparable within one table.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[tuple[int | None, tuple[Piece, ...]], int] = {}

    def intern(self, parent: int | None, pieces: tuple[Piece, ...]) -> int:
        k = (parent, pieces)
        key = self._keys.get(k)
        if key is None:
            key = len(self._keys)
            self._keys[k] = key
        return key

    def __len__(self) -> int:
        return len(self._keys)


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
    keys: list[int] = []
    parent: int | None = None
    for pieces in block_pieces(segments, block_size):
        parent = table.intern(parent, pieces)
        keys.append(parent)
    return keys


__all__ = ["BlockKeyTable", "Piece", "block_keys", "block_pieces"]
