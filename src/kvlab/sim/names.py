"""Every request's block keys, named once per workload and block size.

A request's keys depend only on the workload and the block size, not on what
the engine does: its prompt's key runs (:meth:`kvlab.sim.hashing.ChainInterner.walk`)
and the key of its output's token 0 (the part of its named output after the
prompt, or a run of its own for fresh output). So they are named once, in
request order, by one interner (:func:`name_requests`), kept in a
:class:`KeyNameTable`, and read by every run on the workload
(:class:`kvlab.sim.prepare.PreparedWorkload`): a sweep, a stress search or RL
episodes name a workload once, not once per run.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

from kvlab.sim.hashing import OFFSET_BITS, ChainInterner
from kvlab.workload.records import Request

#: (first keys of the prompt's key runs, where each run ends (block index), the
#: (key of token 0, tokens) per stretch of segments, the prompt's trie node, the key
#: of output token 0) of one request.
KeyNames = tuple[list[int], list[int], list[tuple[int, int]], int, int]


def content_lengths(requests: Sequence[Request]) -> dict[str, int]:
    """The most tokens of each content id over every segment and named output."""
    most: dict[str, int] = {}
    get = most.get
    for q in requests:
        for seg in q.segments:
            if seg.tokens > get(seg.content_id, 0):
                most[seg.content_id] = seg.tokens
        out = q.output_content_id
        if out is not None and q.output_tokens > get(out, 0):
            most[out] = q.output_tokens
    return most


def name_requests(requests: Sequence[Request], block_size: int) -> Iterator[KeyNames]:
    """The key names of every request, in order (one interner, content lengths
    reserved, so parts continue each other's runs)."""
    it = ChainInterner()
    it.reserve(content_lengths(requests))
    walk = it.walk
    for q in requests:
        ends: list[int] = []
        runs: list[tuple[int, int]] = []
        firsts, node = walk(q.segments, block_size, ends, runs)
        out = q.output_content_id
        zero = it.fresh_run() << OFFSET_BITS if out is None else it.part(node, out)
        yield firsts, ends, runs, node, zero


class KeyNameTable:
    """Key names of a workload's requests by index, named in request order as far
    as asked and kept for later runs, packed in flat integer arrays (some 50 bytes
    a request instead of some 500 as Python lists).

    Invariants: requests ``0 .. len(self) - 1`` are named; request i's first keys
    and run ends are ``firsts[fo[i]:fo[i + 1]]`` / ``ends[fo[i]:fo[i + 1]]``, its
    ``(key, tokens)`` stretches ``runs[2 * ro[i]:2 * ro[i + 1]]`` flattened, its trie
    node and output key ``node[i]`` / ``zero[i]``. The rest are named by one
    generator, in order, so any error of the walk (a request it rejects) is raised
    when a run first reaches that request.
    """

    def __init__(self, requests: Sequence[Request], block_size: int) -> None:
        self.block_size = block_size
        self._num_requests = len(requests)
        #: the naming walk, dropped (with its interner) once every request is named
        self._gen: Iterator[KeyNames] | None = name_requests(requests, block_size)
        self.firsts = array("q")
        self.ends = array("q")
        self.fo = array("q", [0])
        self.runs = array("q")
        self.ro = array("q", [0])
        self.node = array("q")
        self.zero = array("q")

    def __len__(self) -> int:
        return len(self.node)

    def get(self, i: int) -> KeyNames:
        if i >= len(self.node):
            self._name_upto(i)
        a, b = self.fo[i], self.fo[i + 1]
        c, d = 2 * self.ro[i], 2 * self.ro[i + 1]
        runs = self.runs
        if d - c == 2:  # one stretch of segments (most requests)
            stretches = [(runs[c], runs[c + 1])]
        else:
            flat = runs[c:d].tolist()
            stretches = list(zip(flat[::2], flat[1::2], strict=True))
        if b - a == 1:
            return [self.firsts[a]], [self.ends[a]], stretches, self.node[i], self.zero[i]
        return (
            self.firsts[a:b].tolist(),
            self.ends[a:b].tolist(),
            stretches,
            self.node[i],
            self.zero[i],
        )

    def _name_upto(self, i: int) -> None:
        if self._gen is None or i >= self._num_requests:
            raise IndexError(f"request {i} of {self._num_requests}")
        gen = self._gen
        firsts, ends, fo, runs, ro = self.firsts, self.ends, self.fo, self.runs, self.ro
        for _ in range(i + 1 - len(self.node)):
            f, e, r, node, zero = next(gen)
            firsts.extend(f)
            ends.extend(e)
            fo.append(len(firsts))
            for key, n in r:
                runs.append(key)
                runs.append(n)
            ro.append(len(runs) // 2)
            self.node.append(node)
            self.zero.append(zero)
        if len(self.node) == self._num_requests:
            self._gen = None
