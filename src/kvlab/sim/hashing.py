"""Block keys from prompt segments, without hashing token ids.

A prompt is a sequence of segments ``(content, tokens)``; a segment of n tokens
is the first n tokens of its content's deterministic stream. So the tokens
``[0, x)`` of a request are described canonically by the segments wholly
before the one holding token ``x - 1`` plus a piece ``(content, offset)`` of
that one. The simulator names the wholly covered segments by a node of a trie
(``(parent_node, content, tokens) -> node``, sequential ints), places each
``(node, content)`` part at an offset of a sequential int ``run`` and packs
``(run, offset)`` into one int: equal keys mean equal prefixes, and nothing
depends on Python's salted ``hash()``. :meth:`ChainInterner.prompt_keys` gives
every part a run of its own; :meth:`ChainInterner.walk` (the engine's naming) lets
a part continue the run of the part before it (see there).

This plays the role of vLLM's chained block hash (``hash_block_tokens``:
hash(parent hash, block tokens, extra keys)) at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Offsets (tokens into one run) take the low bits of a key.
OFFSET_BITS = 24
_LIMIT = 1 << OFFSET_BITS
_MASK = _LIMIT - 1


def _stretch(line: int, start: int, end: int, bs: int, firsts: list[int], ends: list[int]) -> None:
    """Append the key run of the full blocks ending in (start, end] (key = line + end
    position) to ``firsts`` / ``ends``, if there is one."""
    first = (start // bs + 1) * bs
    if first <= end:
        firsts.append(line + first)
        ends.append((ends[-1] if ends else 0) + (end - first) // bs + 1)


class ChainInterner:
    """Interns content ids and segment-trie nodes; owns no global state.

    Invariants: node 0 is the empty prefix; node and content ids are dense ints
    given in first-seen order, so the same workload always gets the same keys.
    Two namings: :meth:`walk` with :meth:`part` (the engine: parts by content id
    strings, continuing runs) and :meth:`prompt_keys` (interned content ints, a run
    per part); use one of them per interner.
    """

    def __init__(self) -> None:
        self._content: dict[str, int] = {}
        self._nodes: dict[tuple[int, int, int], int] = {}
        self._runs: dict[tuple[int, int | str], int] = {}
        self._next_content = 0
        self._next_node = 0
        self._next_run = 0
        #: the walk's naming (see :meth:`walk`): (node, content id, tokens) -> (child
        #: node, key of the segment's token 0), cached; (node, content id) -> that key
        self._steps: dict[tuple[int, str, int], tuple[int, int]] = {}
        self._parts: dict[tuple[int, str], int] = {}
        #: per content id, the most tokens any segment or named output of it has
        #: (:meth:`reserve`); None: every part gets a run of its own
        self._reserve: dict[str, int] | None = None
        #: node -> key where a part after it would start, for the one node per run
        #: that may continue it (the end of the whole last part of the run)
        self._open: dict[int, int] = {}

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

    def reserve(self, lengths: dict[str, int]) -> None:
        """Give :meth:`walk` the most tokens each content id ever has (every segment and
        named output the walk will see); with it, parts continue each other's runs."""
        self._reserve = lengths

    def part(self, node: int, content_id: str) -> int:
        """The key of token 0 of content ``content_id`` after prefix ``node`` (the walk's
        naming; for a named output: ``part(prompt node, output content id)``)."""
        base = self._parts.get((node, content_id))
        if base is None:
            base = self._parts[(node, content_id)] = self.fresh_run() << OFFSET_BITS
        return base

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
        """A request's prompt keys from its segments (objects with ``content_id`` and
        ``tokens``), as runs of keys: the first key of each run (the keys of one run
        step by ``block_size``), with ``ends`` the block index where each ends; each
        segment's step through the trie is cached. ``runs`` gets ``(key of token 0,
        tokens)`` per stretch of segments on one key line. Returns the first keys
        and the end node.

        Naming: content ``c`` after prefix node ``X`` is a *part*: the keys ``base +
        o`` for token offsets ``o``, in a region as long as the longest ``c`` (see
        :meth:`reserve`). A new part takes a run of its own, except right after the
        whole of the last part of a run: then it continues that run, so a chain of
        segments first seen together (a conversation's turns, a trace's 512-token
        hash blocks) is one run of consecutive keys. Equal keys still mean equal
        prefixes: a run's keys lie on one path of the trie.
        """
        firsts: list[int] = []
        node = start = 0
        line = None  # key - token position along the current stretch of segments
        lstart = lbase = 0  # where the stretch starts (token position, key)
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
            node, base = v
            if base - start != line:
                if line is not None:
                    _stretch(line, lstart, start, block_size, firsts, ends)
                    runs.append((lbase, start - lstart))
                line, lstart, lbase = base - start, start, base
            start += n
        if line is not None:
            _stretch(line, lstart, start, block_size, firsts, ends)
            runs.append((lbase, start - lstart))
        return firsts, node

    def walk_unique(
        self, n: int, block_size: int, ends: list[int], runs: list[tuple[int, int]]
    ) -> tuple[list[int], int]:
        """:meth:`walk` of a prompt of one segment of ``n`` > 0 tokens whose content id
        no other segment or named output has (given to :meth:`reserve`): the same keys,
        node and runs, without caching the step, the part or the open end, which no
        later walk could look up."""
        if n >= _LIMIT:
            raise ValueError(f"a segment of more than {_LIMIT} tokens")
        base = self.fresh_run() << OFFSET_BITS  # a new part at the root: a run of its own
        self._next_node += 1
        firsts: list[int] = []
        _stretch(base, 0, n, block_size, firsts, ends)
        runs.append((base, n))
        return firsts, self._next_node

    def _step(self, node: int, content_id: str, n: int) -> tuple[int, int]:
        """(child node, key of token 0) of ``n`` tokens of ``content_id`` after ``node``:
        a new node per new step, the part of ``(node, content_id)`` (see :meth:`walk`)."""
        if n >= _LIMIT:
            raise ValueError(f"a segment of more than {_LIMIT} tokens")
        room = self._reserve.get(content_id) if self._reserve is not None else None
        if room is not None and room < n:
            raise ValueError(f"content {content_id!r} has {n} tokens, more than reserved")
        k = (node, content_id)
        base = self._parts.get(k)
        if base is None:
            after = self._open.pop(node, None)
            if after is not None and room is not None and (after & _MASK) + room < _LIMIT:
                base = after  # right after the whole last part of a run: continue it
            else:
                base = self.fresh_run() << OFFSET_BITS
            self._parts[k] = base
        self._next_node += 1
        if n == room:
            # The whole part. It is the last of its run: parts are placed last, and
            # only after a node opened here (never one of a part of fewer tokens).
            self._open[self._next_node] = base + n
        return self._next_node, base

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
