"""Block keys from prompt segments, without hashing token ids.

A prompt is a sequence of segments ``(content, tokens)``; a segment of n tokens
is the first n tokens of its content's deterministic stream. So the tokens
``[0, x)`` of a request are described canonically by the segments wholly
before the one holding token ``x - 1`` plus a piece ``(content, offset)`` of
that one. The simulator names the wholly covered segments by a node of a trie
(``(parent_node, content, tokens) -> node``, sequential ints), interns each
``(node, content)`` run to a sequential int ``run`` and packs ``(run, offset)``
into one int: equal keys mean equal prefixes, and nothing depends on Python's
salted ``hash()``.

This plays the role of vLLM's chained block hash (``hash_block_tokens``:
hash(parent hash, block tokens, extra keys)) at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Offsets (tokens into one segment) take the low bits of a key.
OFFSET_BITS = 24


class ChainInterner:
    """Interns content ids and segment-trie nodes; owns no global state.

    Invariants: node 0 is the empty prefix; node and content ids are dense ints
    given in first-seen order, so the same workload always gets the same keys.
    Two namings: :meth:`walk` (the engine: runs keyed by content id strings) and
    :meth:`prompt_keys` (interned content ints); use one of them per interner.
    """

    def __init__(self) -> None:
        self._content: dict[str, int] = {}
        self._nodes: dict[tuple[int, int, int], int] = {}
        self._runs: dict[tuple[int, int | str], int] = {}
        self._next_content = 0
        self._next_node = 0
        self._next_run = 0
        #: (node, content id, tokens) -> (child node, run << OFFSET_BITS): the walk cache
        self._steps: dict[tuple[int, str, int], tuple[int, int]] = {}

    def content(self, content_id: str) -> int:
        c = self._content.get(content_id)
        if c is None:
            c = self._content[content_id] = self._next_content
            self._next_content += 1
        return c

    def node(self, parent: int, content: int, tokens: int) -> int:
        k = (parent, content, tokens)
        n = self._nodes.get(k)
        if n is None:
            self._next_node += 1
            n = self._nodes[k] = self._next_node
        return n

    def run(self, node: int, content: int | str) -> int:
        """The id of content ``content`` following the prefix ``node``."""
        k = (node, content)
        r = self._runs.get(k)
        if r is None:
            r = self._runs[k] = self._next_run
            self._next_run += 1
        return r

    def fresh_run(self) -> int:
        """A run id no segment has (a request's fresh output: nobody else looks it up)."""
        self._next_run += 1
        return self._next_run - 1

    def key(self, node: int, content: int | str, offset: int) -> int:
        if offset >= 1 << OFFSET_BITS:
            raise ValueError(f"a segment of more than {1 << OFFSET_BITS} tokens")
        return (self.run(node, content) << OFFSET_BITS) | offset

    @staticmethod
    def split(key: int) -> tuple[int, int]:
        """(run id, offset) of a key."""
        return key >> OFFSET_BITS, key & ((1 << OFFSET_BITS) - 1)

    def walk(
        self,
        segments: Iterable[Any],
        block_size: int,
        ends: list[int],
        runs: list[tuple[int, int]],
    ) -> tuple[list[int], int]:
        """:meth:`prompt_keys` of a request's segments (objects with ``content_id`` and
        ``tokens``) as runs of keys: the first key of each run (the keys of one run
        step by ``block_size``), with ``ends`` the block index where each run ends;
        each segment's step through the trie is cached. ``runs`` gets ``(run,
        tokens)`` per non-empty segment. Returns the first keys and the end node."""
        firsts: list[int] = []
        num_keys = 0
        node = start = 0
        steps = self._steps
        get = steps.get
        for seg in segments:
            n = seg.tokens
            if n <= 0:
                continue
            k = (node, seg.content_id, n)
            v = get(k)
            if v is None:
                v = steps[k] = self._step(node, seg.content_id, n)
            child, rbase = v
            end = start + n
            first = (start // block_size + 1) * block_size
            if first <= end:
                firsts.append(rbase - start + first)
                num_keys += (end - first) // block_size + 1
                ends.append(num_keys)
            runs.append((rbase >> OFFSET_BITS, n))
            node = child
            start = end
        return firsts, node

    def _step(self, node: int, content_id: str, n: int) -> tuple[int, int]:
        """(child node, run << OFFSET_BITS) of ``n`` tokens of ``content_id`` after ``node``
        (the walk's naming: runs by content id string, a new node per new step)."""
        if n >= 1 << OFFSET_BITS:
            raise ValueError(f"a segment of more than {1 << OFFSET_BITS} tokens")
        runs = self._runs
        k = (node, content_id)
        r = runs.get(k)
        if r is None:
            r = runs[k] = self._next_run
            self._next_run += 1
        self._next_node += 1
        return self._next_node, r << OFFSET_BITS

    def prompt_keys(
        self, segments: list[tuple[int, int]], block_size: int
    ) -> tuple[list[int], int]:
        """Keys of the full blocks of a prompt, and the trie node after all its segments."""
        keys: list[int] = []
        node = 0
        start = 0
        for content, n in segments:
            if n <= 0:
                continue
            end = start + n
            first = (start // block_size + 1) * block_size
            if first <= end:
                base = self.key(node, content, n) - n - start
                keys.extend(range(base + first, base + end + 1, block_size))
            node = self.node(node, content, n)
            start = end
        return keys, node
