"""Every request's block keys, named once per workload and block size.

A request's keys depend only on the workload and the block size, not on what
the engine does: its prompt's key runs (:meth:`kvlab.sim.hashing.ChainInterner.walk`)
and the key of its output's token 0 (the part of its named output after the
prompt, or a run of its own for fresh output). So they are named once, kept in
a :class:`KeyNameTable`, and read by every run on the workload
(:class:`kvlab.sim.prepare.PreparedWorkload`): a sweep, a stress search or RL
episodes name a workload once, not once per run.

The reference naming is sequential: one interner walks the requests in order
(:func:`name_requests`). The table names the whole workload at once with numpy
instead (:func:`name_all`: the same ids, depth by depth of the segment trie,
in a third to a half of the time, leaving no objects for the garbage
collector; a trace without prefix information in plain Python,
:func:`name_unique_prompts`), and keeps the walk for a workload with a segment too long for a key,
whose error must surface when a run reaches that request, and for a small one
while numpy is not loaded (:func:`vectorize`). Naming is done in the calling
process: a second process walking the requests while the run starts was measured
slower than naming in process with numpy (docs/simulator.md).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from kvlab.sim.hashing import OFFSET_BITS, ChainInterner
from kvlab.workload.records import Request

#: Keys of one run: offsets below this (a segment has fewer tokens).
_LIMIT = 1 << OFFSET_BITS

#: (first keys of the prompt's key runs, where each run ends (block index), the
#: (key of token 0, tokens) per stretch of segments, the prompt's trie node, the key
#: of output token 0) of one request.
KeyNames = tuple[list[int], list[int], list[tuple[int, int]], int, int]


def content_lengths(
    requests: Sequence[Request], repeated: set[str] | None = None
) -> dict[str, int]:
    """The most tokens of each content id over every segment and named output; with
    ``repeated``, the ids of more than one non-empty segment or of a named output are
    added to it (the others occur once)."""
    most: dict[str, int] = {}
    get = most.get
    again = set() if repeated is None else repeated
    for q in requests:
        for seg in q.segments:
            n = seg.tokens
            if n > 0:
                c = seg.content_id
                t = get(c)
                if t is None:
                    most[c] = n
                else:
                    again.add(c)
                    if n > t:
                        most[c] = n
        out = q.output_content_id
        if out is not None:
            again.add(out)
            if q.output_tokens > get(out, 0):
                most[out] = q.output_tokens
    return most


def name_requests(requests: Sequence[Request], block_size: int) -> Iterator[KeyNames]:
    """The key names of every request, in order (one interner, content lengths
    reserved, so parts continue each other's runs). A prompt of one segment whose
    content occurs nowhere else (a trace without prefix information: every request)
    takes :meth:`~kvlab.sim.hashing.ChainInterner.walk_unique`, the same names."""
    it = ChainInterner()
    repeated: set[str] = set()
    it.reserve(content_lengths(requests, repeated))
    walk, walk_unique, fresh_run = it.walk, it.walk_unique, it.fresh_run
    for q in requests:
        ends: list[int] = []
        runs: list[tuple[int, int]] = []
        out = q.output_content_id
        segs = q.segments
        if out is None and len(segs) == 1 and segs[0].tokens > 0:
            seg = segs[0]
            if seg.content_id not in repeated:
                firsts, node = walk_unique(seg.tokens, block_size, ends, runs)
                yield firsts, ends, runs, node, fresh_run() << OFFSET_BITS
                continue
        firsts, node = walk(segs, block_size, ends, runs)
        zero = fresh_run() << OFFSET_BITS if out is None else it.part(node, out)
        yield firsts, ends, runs, node, zero


def _content_codes(requests: Sequence[Request]) -> tuple[Any, Any, Any, Any, int]:
    """Integer codes of every segment's content (request order) and of every
    request's named output (-1: none), equal codes for equal content ids: the
    tokens of every segment, and the end of each request's segments."""
    import numpy as np

    segs = [seg for q in requests for seg in q.segments]
    n_segs = len(segs)
    outs = [q.output_content_id for q in requests]
    named = [i for i, o in enumerate(outs) if o is not None]
    ids: list[str] = [seg.content_id for seg in segs]
    ids.extend(outs[i] for i in named)  # type: ignore[misc]
    tokens = np.fromiter([seg.tokens for seg in segs], np.int64, n_segs)
    del segs
    # Equal ids are mostly one object (a trace's loader shares them): deduplicate
    # by object first, then by value among the distinct objects only.
    _, first, inverse = np.unique(
        np.fromiter(map(id, ids), np.int64, len(ids)), return_index=True, return_inverse=True
    )
    distinct = [ids[i] for i in first.tolist()]
    num_contents = len(set(distinct))
    codes = inverse.reshape(-1)
    if num_contents < len(distinct):  # equal ids in distinct objects
        index = {c: i for i, c in enumerate(dict.fromkeys(distinct))}
        codes = np.fromiter(map(index.__getitem__, distinct), np.int64, len(distinct))[codes]
    out_code = np.full(len(requests), -1, np.int64)
    out_code[np.asarray(named, np.int64)] = codes[n_segs:]
    per_request = map(len, (q.segments for q in requests))
    seg_end = np.cumsum(np.fromiter(per_request, np.int64, len(requests)))
    return codes[:n_segs], tokens, seg_end, out_code, num_contents


def name_all(requests: Sequence[Request], block_size: int) -> tuple[Any, ...] | None:
    """The packed key names of every request (``firsts, ends, fo, runs, ro, node,
    zero`` as :class:`KeyNameTable` keeps them, int64 numpy arrays), the same as
    :func:`name_requests` gives one by one, computed with numpy level by level of
    the segment trie; None when a segment has too many tokens for a key (the walk
    raises its error when a run reaches that request).

    Every id the walk gives counts up in first-seen order, so each is the rank of
    the position where it is first seen: a request's segments (kept: tokens > 0)
    and then its output take one position each, in request order. Nodes: at depth
    d the key of a segment is (its parent's node, content, tokens), one
    ``np.unique`` per depth. Parts: (parent node, content), seen at a segment or at
    a named output. A part first seen at a segment continues the run of its parent
    node's part when it is the first such part under a node made by a whole
    content (``tokens`` equal to the content's most) and fits in the key's offset
    bits; every other new part, and every fresh output, takes a new run: runs are
    numbered in the order of those positions.
    """
    import numpy as np

    i64 = np.int64
    num_requests = len(requests)
    codes, tokens, seg_end, out_code, num_contents = _content_codes(requests)
    if len(tokens) and int(tokens.max()) >= _LIMIT:
        return None
    room = np.zeros(max(num_contents, 1), i64)
    np.maximum.at(room, codes, tokens)
    named = np.flatnonzero(out_code >= 0)
    out_tokens = np.fromiter([q.output_tokens for q in requests], i64, num_requests)
    np.maximum.at(room, out_code[named], out_tokens[named])

    req_of = np.repeat(np.arange(num_requests, dtype=i64), np.diff(seg_end, prepend=0))
    keep = tokens > 0
    c, n, r = codes[keep], tokens[keep], req_of[keep]
    num_segs = len(c)
    per_req = np.bincount(r, minlength=num_requests).astype(i64)
    kend = np.cumsum(per_req)
    kstart = kend - per_req
    depth = np.arange(num_segs, dtype=i64) - kstart[r]

    # Nodes, depth by depth: provisional ids (1.. per depth in key order), then the
    # rank of each node's first segment.
    pair = c * _LIMIT + n  # (content, tokens) as one int
    num_pairs = max(num_contents, 1) * _LIMIT
    if (num_segs + 1).bit_length() + num_pairs.bit_length() > 62:  # numbered densely
        pair = np.unique(pair, return_inverse=True)[1].reshape(-1)
        num_pairs = int(pair.max()) + 1 if num_segs else 1
    prov = np.zeros(num_segs, i64)  # provisional node of each segment
    parent = np.zeros(num_segs, i64)  # provisional node before it (0: the root)
    small = depth.astype(np.int16) if not num_segs or depth.max() < 1 << 15 else depth
    order = np.argsort(small, kind="stable")  # (a radix sort for 16-bit ints)
    level_sizes = np.bincount(depth) if num_segs else np.zeros(0, i64)
    first_seg_parts = []
    next_id, at = 1, 0
    for d, size in enumerate(level_sizes.tolist()):
        idx = order[at : at + size]
        at += size
        if d:
            parent[idx] = prov[idx - 1]
        _, first, inv = np.unique(
            parent[idx] * num_pairs + pair[idx], return_index=True, return_inverse=True
        )
        prov[idx] = next_id + inv.reshape(-1)
        first_seg_parts.append(idx[first])
        next_id += len(first)
    node_first = np.concatenate([np.zeros(1, i64), *first_seg_parts])  # by provisional id
    made = np.zeros(num_segs, bool)
    made[node_first[1:]] = True
    final = np.cumsum(made)[node_first] if num_segs else np.zeros(1, i64)
    final[0] = 0  # (the others: the rank of their first segment, from 1)
    end_prov = np.where(per_req > 0, prov[kend - 1] if num_segs else 0, 0)

    # Parts, by the position where each is first seen.
    seg_pos = np.arange(num_segs, dtype=i64) + r
    out_pos = kend + np.arange(num_requests, dtype=i64)
    slot_key = np.full(num_segs + num_requests, -1, i64)
    slot_key[seg_pos] = parent * num_contents + c
    slot_key[out_pos[named]] = end_prov[named] * num_contents + out_code[named]
    used = np.flatnonzero(slot_key >= 0)
    part_keys, first, inv = np.unique(slot_key[used], return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    part_pos = used[first]  # where each part is first seen
    num_parts = len(part_keys)
    slot_part = np.full(num_segs + num_requests, -1, i64)
    slot_part[used] = inv
    seg_part = slot_part[seg_pos]
    is_seg_slot = np.zeros(num_segs + num_requests, bool)
    is_seg_slot[seg_pos] = True
    by_step = is_seg_slot[part_pos]
    # A step's part may continue its parent node's part: the first part made by a
    # step under a node made by a whole content.
    part_parent = part_keys // num_contents
    part_content = part_keys % num_contents
    step_parts = np.flatnonzero(by_step)
    first_under = np.full(next_id, len(slot_key), i64)
    np.minimum.at(first_under, part_parent[step_parts], part_pos[step_parts])
    cand = step_parts[part_pos[step_parts] == first_under[part_parent[step_parts]]]
    x_seg = node_first[part_parent[cand]]  # the segment that made the parent node
    whole = (part_parent[cand] > 0) & (n[x_seg] == room[c[x_seg]])
    cand, x_seg = cand[whole], x_seg[whole]
    root = np.arange(num_parts, dtype=i64)
    offset = np.zeros(num_parts, i64)
    if len(cand):
        cand_depth = depth[x_seg] + 1
        corder = np.argsort(cand_depth, kind="stable")
        cand, x_seg, cand_depth = cand[corder], x_seg[corder], cand_depth[corder]
        bounds = np.flatnonzero(np.diff(cand_depth)) + 1
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(cand)], strict=True):
            u, xs = cand[lo:hi], x_seg[lo:hi]
            pu = seg_part[xs]
            off = offset[pu] + n[xs]
            fits = off + room[part_content[u]] < _LIMIT
            u, pu, off = u[fits], pu[fits], off[fits]
            offset[u] = off
            root[u] = root[pu]
    # Runs: one per part that is its own root and per fresh output, in position order.
    fresh_out = out_pos[out_code < 0]
    own = np.flatnonzero(root == np.arange(num_parts))
    takes_run = np.zeros(len(slot_key), bool)
    takes_run[part_pos[own]] = True
    takes_run[fresh_out] = True
    run_at = np.cumsum(takes_run) - 1  # at a slot that takes one: its run id
    part_run = np.zeros(num_parts, i64)
    part_run[own] = run_at[part_pos[own]]
    part_base = (part_run[root] << OFFSET_BITS) + offset

    zero = np.empty(num_requests, i64)
    zero[out_code < 0] = run_at[fresh_out] << OFFSET_BITS
    zero[named] = part_base[slot_part[out_pos[named]]]
    node = final[end_prov]

    # Stretches of segments on one key line, and their runs of full-block keys.
    base = part_base[seg_part]
    cum = np.cumsum(n)
    seg_stop = cum - (cum - n)[kstart[r]] if num_segs else cum  # token position after it
    start = seg_stop - n
    line = base - start
    new = depth == 0
    new[1:] |= line[1:] != line[:-1]
    s_first = np.flatnonzero(new)
    s_last = np.append(s_first[1:] - 1, num_segs - 1) if num_segs else s_first
    s_req = r[s_first]
    lstart, lend, lline = start[s_first], seg_stop[s_last], line[s_first]
    runs = np.empty(2 * len(s_first), i64)
    runs[0::2] = base[s_first]
    runs[1::2] = lend - lstart
    ro = np.concatenate([np.zeros(1, i64), np.cumsum(np.bincount(s_req, minlength=num_requests))])
    first_end = (lstart // block_size + 1) * block_size
    full = first_end <= lend
    k_req = s_req[full]
    firsts = lline[full] + first_end[full]
    count = np.cumsum((lend[full] - first_end[full]) // block_size + 1)
    per_k = np.bincount(k_req, minlength=num_requests)
    fo = np.concatenate([np.zeros(1, i64), np.cumsum(per_k)])
    ends = count - np.concatenate([np.zeros(1, i64), count])[fo[:-1]][k_req]
    return firsts, ends, fo, runs, ro.astype(i64), node, zero


def name_unique_prompts(requests: Sequence[Request], block_size: int) -> tuple[array, ...] | None:
    """:func:`name_all` of a workload whose every prompt is one segment of a content
    no other request has, and no output named (a trace without prefix information),
    in plain Python; None for any other workload. Request i's prompt is the part of
    run 2i (a new node, i + 1), its fresh output run 2i + 1, as the walk names them."""
    if any(q.output_content_id is not None or len(q.segments) != 1 for q in requests):
        return None
    segs = [q.segments[0] for q in requests]
    tokens = [seg.tokens for seg in segs]
    if len({seg.content_id for seg in segs}) < len(segs) or not all(0 < n < _LIMIT for n in tokens):
        return None
    bs = block_size
    num = len(requests)
    base = [(2 * i) << OFFSET_BITS for i in range(num)]
    full = [i for i, n in enumerate(tokens) if n >= bs]
    fo = [0]
    count = 0
    for n in tokens:
        count += n >= bs
        fo.append(count)
    runs = [0] * (2 * num)
    runs[0::2] = base
    runs[1::2] = tokens
    return (
        array("q", [base[i] + bs for i in full]),
        array("q", [tokens[i] // bs for i in full]),
        array("q", fo),
        array("q", runs),
        array("q", range(num + 1)),
        array("q", range(1, num + 1)),
        array("q", [((2 * i + 1) << OFFSET_BITS) for i in range(num)]),
    )


#: Fewer segments than this are named by the walk, as far as a run asks, unless numpy is
#: loaded already (importing it costs about 0.1 s, the walk of this many about 0.03 s).
MIN_VECTOR_SEGMENTS = 20_000


def vectorize(requests: Sequence[Request]) -> bool:
    """Whether :class:`KeyNameTable` names ``requests`` with :func:`name_all` (the same
    names either way): when numpy is loaded or the segments are many."""
    import sys

    if "numpy" in sys.modules:
        return True
    total = 0
    for q in requests:
        total += len(q.segments)
        if total >= MIN_VECTOR_SEGMENTS:
            return True
    return False


#: The packed arrays of a :class:`KeyNameTable`, in the order :func:`name_all` gives them.
FIELDS = ("firsts", "ends", "fo", "runs", "ro", "node", "zero")


class KeyNameTable:
    """Key names of a workload's requests by index, named at the first ask and kept
    for later runs, packed in flat integer arrays (some 50 bytes a request instead
    of some 500 as Python lists).

    Invariants: requests ``0 .. len(self) - 1`` are named; request i's first keys
    and run ends are ``firsts[fo[i]:fo[i + 1]]`` / ``ends[fo[i]:fo[i + 1]]``, its
    ``(key, tokens)`` stretches ``runs[2 * ro[i]:2 * ro[i + 1]]`` flattened, its trie
    node and output key ``node[i]`` / ``zero[i]``. Every request is named at once
    (:func:`name_all`) unless the workload is small
    (:func:`vectorize`) or the walk would reject a request; then the rest are named
    by one generator, in order, as far as asked, so the walk's error is raised when
    a run first reaches that request.
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
        self._requests = requests

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

    def _name_all(self) -> bool:
        """Name every request at once (:func:`name_all`); False, doing nothing, when
        a request is one the walk rejects (it then raises when a run reaches it)."""
        requests, bs = self._requests, self.block_size
        unique = name_unique_prompts(requests, bs)
        if unique is not None:
            for name, values in zip(FIELDS, unique, strict=True):
                setattr(self, name, values)
        else:
            packed = name_all(requests, bs) if vectorize(requests) else None
            if packed is None:
                return False
            for name, values in zip(FIELDS, packed, strict=True):
                setattr(self, name, array("q", values.tobytes()))
        self._gen = None
        self._requests = ()
        return True

    def _name_upto(self, i: int) -> None:
        if self._gen is None or i >= self._num_requests:
            raise IndexError(f"request {i} of {self._num_requests}")
        if not len(self.node) and self._name_all():
            return
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
            self._requests = ()
