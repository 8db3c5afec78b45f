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
while numpy is not loaded (:func:`vectorize`). With
``SimConfig(workers=2)`` a second process walks the requests while the run
starts (:class:`NamingWorker`; slower than naming in process now):
a fresh interpreter (``python -m kvlab.sim.names``, started by :mod:`subprocess`:
safe in a process with threads, nothing is forked), fed the segments as integer
arrays and streaming the packed names back in chunks. The
names are the same either way (the child runs the same walk on content ids
numbered in first-seen order); if the child dies, hangs past
:data:`WORKER_TIMEOUT_S` or rejects a request, the table names the rest in the
calling process, which raises the walk's own error where there is one.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

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
    if len({seg.content_id for seg in segs}) < len(segs) or not all(
        0 < n < _LIMIT for n in tokens
    ):
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


#: Seconds the table waits for the next chunk of a naming worker that is alive
#: before it stops it and names the rest itself.
WORKER_TIMEOUT_S = 60.0
#: Fewer requests than this to name are named in the calling process even with
#: ``workers=2`` (starting the child costs more than it saves).
MIN_WORKER_REQUESTS = 2000
#: Requests per chunk a worker sends: small first (the run starts at once), then larger.
FIRST_CHUNK, CHUNK = 256, 1024


class _Seg(NamedTuple):
    """A segment as the walk reads it, with an integer content id (worker side)."""

    content_id: int
    tokens: int


class NamingInput(NamedTuple):
    """What naming needs of a workload, as flat integer arrays (pickled to a worker
    cheaply): request i's segments are ``contents[seg_end[i - 1]:seg_end[i]]`` /
    ``tokens[...]`` (content ids numbered in first-seen order), its named output
    ``out_content[i]`` (-1: none), and ``lengths[c]`` the most tokens of content c."""

    contents: array
    tokens: array
    seg_end: array
    out_content: array
    lengths: array


def naming_input(requests: Sequence[Request]) -> NamingInput:
    """The arrays of :class:`NamingInput` for ``requests``. Content ids may be
    numbered in any order (the walk only compares them), so they are numbered by
    C-level passes: a comprehension per field, ``dict.fromkeys`` for the distinct
    ids, numpy for the most tokens of each."""
    import numpy as np

    segs = [seg for q in requests for seg in q.segments]
    cids = [seg.content_id for seg in segs]
    toks = array("q", [seg.tokens for seg in segs])
    del segs
    outs = [q.output_content_id for q in requests]
    named = [i for i, o in enumerate(outs) if o is not None]
    index = {c: i for i, c in enumerate(dict.fromkeys(cids))}
    for i in named:
        index.setdefault(outs[i], len(index))  # type: ignore[arg-type]
    contents = array("q", map(index.__getitem__, cids))
    del cids
    lengths = np.zeros(len(index), dtype=np.int64)
    as_np = np.frombuffer
    np.maximum.at(lengths, as_np(contents, dtype=np.int64), as_np(toks, dtype=np.int64))
    out_content = array("q", [-1]) * len(requests)
    for i in named:
        c = out_content[i] = index[outs[i]]  # type: ignore[index]
        if requests[i].output_tokens > lengths[c]:
            lengths[c] = requests[i].output_tokens
    seg_end = array("q", np.cumsum([len(q.segments) for q in requests], dtype=np.int64).tobytes())
    return NamingInput(contents, toks, seg_end, out_content, array("q", lengths.tobytes()))


def serve_names(
    data: NamingInput, block_size: int, send: Any, chunks: tuple[int, int] = (256, 1024)
) -> None:
    """A naming worker's body: name every request of ``data`` in order and
    ``send`` the packed names in chunks ``(count, firsts, ends, run ends, runs,
    stretch ends, nodes, zeros)`` (bytes of int64 arrays; offsets relative to the
    chunk) of ``chunks`` (first, then every other) requests, then ``None``; on a
    request the walk rejects, ``("error", index)``."""
    it = ChainInterner()
    it.reserve(dict(enumerate(data.lengths)))  # type: ignore[arg-type]
    walk, part, fresh = it.walk, it.part, it.fresh_run
    contents, tokens, seg_end, out_content = data[:4]
    n = len(seg_end)
    i = start = 0
    size, later = chunks
    while i < n:
        stop = min(n, i + size)
        size = later
        firsts, ends, fo, runs, ro = array("q"), array("q"), array("q"), array("q"), array("q")
        node, zero = array("q"), array("q")
        for j in range(i, stop):
            end = seg_end[j]
            segs = [_Seg(contents[k], tokens[k]) for k in range(start, end)]
            start = end
            e: list[int] = []
            r: list[tuple[int, int]] = []
            try:
                f, nd = walk(segs, block_size, e, r)
            except ValueError:
                send(("error", j))
                return
            firsts.extend(f)
            ends.extend(e)
            fo.append(len(firsts))
            for key, t in r:
                runs.append(key)
                runs.append(t)
            ro.append(len(runs) // 2)
            node.append(nd)
            out = out_content[j]
            zero.append(fresh() << OFFSET_BITS if out < 0 else part(nd, out))
        send((stop - i, *(a.tobytes() for a in (firsts, ends, fo, runs, ro, node, zero))))
        i = stop
    send(None)


def worker_main() -> None:
    """``python -m kvlab.sim.names``: read ``(NamingInput, block_size, chunks)``
    pickled on stdin, write the chunks of :func:`serve_names` pickled on stdout."""
    import pickle
    import sys

    data, block_size, chunks = pickle.load(sys.stdin.buffer)
    out = sys.stdout.buffer

    def send(msg: object) -> None:
        pickle.dump(msg, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    serve_names(NamingInput(*data), block_size, send, chunks)


class NamingWorker:
    """A child process naming a workload's requests ahead of the run (see the
    module's docstring); :meth:`receive` gives its next chunk.

    The child is a fresh interpreter started by :mod:`subprocess` (exec, never a
    bare fork; no re-import of the caller's main module), fed and read by one
    thread of this process; its stderr is discarded (a failure only means the
    table names the rest itself)."""

    def __init__(self, requests: Sequence[Request], block_size: int) -> None:
        import os
        import queue
        import subprocess
        import sys
        import threading
        from pathlib import Path

        payload = (tuple(naming_input(requests)), block_size, (FIRST_CHUNK, CHUNK))
        # The child imports this very kvlab, wherever the caller found it.
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvlab.sim.names"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=path),
        )
        self._chunks: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(
            target=self._pump, args=(payload,), name="kvlab-naming", daemon=True
        )
        self._thread.start()

    def _pump(self, payload: object) -> None:
        import pickle

        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            pickle.dump(payload, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.close()
            while True:
                msg = pickle.load(proc.stdout)
                self._chunks.put(msg)
                if not isinstance(msg, tuple) or msg[0] == "error":
                    return
        except (OSError, EOFError, pickle.UnpicklingError, ValueError):
            self._chunks.put(None)

    def receive(self, timeout_s: float = WORKER_TIMEOUT_S) -> tuple[Any, ...] | None:
        """The next chunk; None when the worker is done, has failed, or sent nothing
        for ``timeout_s`` seconds (then it is stopped)."""
        import queue

        try:
            msg = self._chunks.get(timeout=timeout_s)
        except queue.Empty:
            return None
        return msg if isinstance(msg, tuple) and msg[0] != "error" else None

    def stop(self) -> None:
        """Stop the child (idempotent) and wait for it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


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
    (:func:`name_all`) unless a naming worker runs, the workload is small
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
        self._worker: NamingWorker | None = None
        #: who named the requests: "this process", "a second process", or "a second
        #: process, then this process" (the worker stopped short)
        self.named_by = "this process"

    def start_worker(self) -> bool:
        """Name the requests in a second process from now on (see the module's
        docstring); False, doing nothing, when some are already named."""
        if self._worker is not None or len(self.node):
            return False
        if self._num_requests < MIN_WORKER_REQUESTS:
            return False
        self._worker = NamingWorker(self._requests, self.block_size)
        self.named_by = "a second process"
        return True

    def stop_worker(self) -> None:
        """Stop a naming worker, if one runs; the table names the rest itself."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

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

    def _receive_upto(self, i: int) -> None:
        """Take the worker's chunks until request ``i`` is named or it has stopped."""
        worker = self._worker
        assert worker is not None
        firsts, ends, fo, runs, ro = self.firsts, self.ends, self.fo, self.runs, self.ro
        while i >= len(self.node):
            chunk = worker.receive()
            if chunk is None:
                self.stop_worker()
                return
            b_f, b_e, b_fo, b_r, b_ro, b_n, b_z = (array("q", c) for c in chunk[1:])
            base_f, base_r = len(firsts), len(runs) // 2
            firsts.extend(b_f)
            ends.extend(b_e)
            fo.extend([base_f + x for x in b_fo])
            runs.extend(b_r)
            ro.extend([base_r + x for x in b_ro])
            self.node.extend(b_n)
            self.zero.extend(b_z)
        if len(self.node) == self._num_requests:
            self.stop_worker()
            self._gen = None
            self._requests = ()

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
        if self._worker is not None and i < self._num_requests:
            self._receive_upto(i)
            if i < len(self.node):
                return
            # The worker stopped short: name the rest here, from the first request
            # (the interner's state), keeping what was received.
            self.named_by = "a second process, then this process"
            gen = self._gen = name_requests(self._requests, self.block_size)
            for _ in range(len(self.node)):
                next(gen)
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


if __name__ == "__main__":
    worker_main()
