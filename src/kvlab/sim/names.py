"""Every request's block keys, named ahead of the simulation (on a second core when it pays).

A request's keys depend only on the workload, not on what the engine does: its
prompt's key runs (:meth:`kvlab.sim.hashing.ChainInterner.walk`) and the key of
its output's token 0 (the part of its named output after the prompt, or a run of
its own for fresh output). So they are named once, in request order, by one
interner (:func:`name_requests`), and the engine only reads them (:class:`Names`).

For a large workload, a forked child process names them and streams them
through a pipe while the engine runs (:class:`ForkedNames`): the walk through
the prefix trie is a good part of the work per request (Mooncake: some 24
hash-id segments each), and the engine no longer does it itself. The child names
exactly what :class:`LocalNames` would (same interner, same order); if it fails
for any reason, the engine names the requests itself from the start, so any
error is raised as it would have been.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from collections.abc import Iterator, Sequence
from typing import Any

from kvlab import _fork
from kvlab.sim.hashing import OFFSET_BITS, ChainInterner
from kvlab.workload.records import Request

#: (first keys of the prompt's key runs, where each run ends (block index), the
#: (key of token 0, tokens) per stretch of segments, the prompt's trie node, the key
#: of output token 0) of one request.
KeyNames = tuple[list[int], list[int], list[tuple[int, int]], int, int]

#: Workloads with fewer requests are named in the engine's own process.
FORK_MIN_REQUESTS = 5000
#: Requests per message from the naming process.
CHUNK = 512


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


class Names:
    """Key names of a workload's requests by index (see :func:`open_names`)."""

    def get(self, i: int) -> KeyNames:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the names hold (a child process)."""


class LocalNames(Names):
    """Named in this process, in request order, as far as asked."""

    def __init__(self, requests: Sequence[Request], block_size: int) -> None:
        self._gen = name_requests(requests, block_size)
        self._done: list[KeyNames] = []

    def get(self, i: int) -> KeyNames:
        done = self._done
        while len(done) <= i:
            done.append(next(self._gen))
        return done[i]


class ForkedNames(Names):
    """Named by a forked child process, read as far as asked (see the module)."""

    def __init__(self, requests: Sequence[Request], block_size: int) -> None:
        self._requests, self._bs = requests, block_size
        self._done: list[KeyNames] = []
        self._local: LocalNames | None = None
        r, w = os.pipe()

        def name_all() -> None:  # in the child
            os.close(r)
            with os.fdopen(w, "wb") as out:
                chunk: list[KeyNames] = []
                for names in name_requests(requests, block_size):
                    chunk.append(names)
                    if len(chunk) == CHUNK:
                        pickle.dump(chunk, out, pickle.HIGHEST_PROTOCOL)
                        chunk = []
                pickle.dump(chunk, out, pickle.HIGHEST_PROTOCOL)

        pid = _fork.fork_call(name_all)
        os.close(w)
        if pid is None:
            os.close(r)
            raise OSError("could not fork a process to name the requests")
        self._pid: int | None = pid
        self._pipe: Any = os.fdopen(r, "rb")

    def get(self, i: int) -> KeyNames:
        done = self._done
        while len(done) <= i:
            if self._local is not None:
                return self._local.get(i)
            try:
                chunk = pickle.load(self._pipe)
            except Exception:  # the child failed: name everything here, from the start
                self.close()
                self._local = LocalNames(self._requests, self._bs)
                return self._local.get(i)
            if not chunk:  # the child is done and there is no request i: as locally
                self.close()
                self._local = LocalNames(self._requests, self._bs)
                return self._local.get(i)
            done += chunk
        return done[i]

    def close(self) -> None:
        if self._pid is None:
            return
        self._pipe.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)  # done by now, unless the run ended early
        os.waitpid(self._pid, 0)
        self._pid = None


def open_names(requests: Sequence[Request], block_size: int) -> Names:
    """:class:`ForkedNames` for a large workload where this process may fork
    (:func:`kvlab._fork.can_fork`), else :class:`LocalNames`."""
    if len(requests) >= FORK_MIN_REQUESTS and _fork.can_fork():
        try:
            return ForkedNames(requests, block_size)
        except OSError:
            pass
    return LocalNames(requests, block_size)
