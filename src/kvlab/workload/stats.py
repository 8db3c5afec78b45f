"""Workload statistics and the analytic prefix-reuse upper bound.

:func:`prefix_reuse_bound` replays the workload's prompts, in file order,
through an infinite prefix cache at block granularity, with vLLM v1's rules
(REFERENCE section 2; vLLM ``v1/core/kv_cache_utils.py`` and
``single_type_kv_cache_manager.find_longest_cache_hit``):

* only full blocks are cached; a block is identified by its content and the
  content of every block before it (a hash chain);
* a request hits the longest run of leading blocks already cached, over at
  most ``prompt_tokens - 1`` tokens (the last prompt token is recomputed);
* after a request, its prompt's full blocks are cached, and, when it names an
  ``output_content`` id, so are the full blocks of prompt + output minus the
  last generated token (whose KV is never computed).

Content is compared through content ids (equal id and offset = equal token,
see :mod:`kvlab.workload.content`), so the bound is exact for the content
model. No cache of finite size and no scheduler can hit more, so it bounds
the hit rate of ``prefix`` mode from above (up to requests that run
concurrently with the first one that fills a block).

Time and memory grow with the number of segments, not of tokens: the full
blocks that lie inside one segment form a *run* (``n`` blocks of one content
id from offset ``s``), kept as one entry ``(parent, content id, s) -> n``.
Because a prompt is cached as a whole chain, if block ``k`` of a run is cached
so are the blocks before it, so the longest cached run from a parent is all
the cache needs to know. Only blocks that straddle two segments are kept one
by one. Every segment starts at offset 0 of its content, so two runs never
join and a block sequence has exactly one decomposition into runs and
straddling blocks: the result is the block-by-block replay's (:func:`blocks`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kvlab.results import dist
from kvlab.workload.records import RETENTION_CLASSES, Request, Workload

#: Trace formats whose prompts are unique content (lengths only: no prefix information), as
#: ``Workload.meta["source_format"]`` names them; :func:`workload_stats` then adds
#: ``"prefix_information": False`` so a reader knows why the bound is 0.
TRACES_WITHOUT_PREFIXES: frozenset[str] = frozenset({"azure", "vidur"})

#: A run of tokens of one content id: (content id, start offset, end offset, retention).
Piece = tuple[str, int, int, str]


@dataclass(frozen=True)
class PrefixReuse:
    """The infinite-cache prefix-reuse bound of a workload at one block size.

    ``hit_tokens <= full_block_tokens <= prompt_tokens``;
    ``unique_block_tokens`` counts each distinct full prompt block once,
    ``full_block_tokens`` counts every full prompt block of every request.
    """

    block_size: int
    num_requests: int
    prompt_tokens: int
    full_block_tokens: int
    unique_block_tokens: int
    hit_tokens: int
    hit_tokens_by_retention: dict[str, int] = field(default_factory=dict)
    hit_tokens_by_class: dict[str, int] = field(default_factory=dict)
    prompt_tokens_by_class: dict[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        """Bound on ``prefix_cache_hits / prefix_cache_queries`` (tokens)."""
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "block_size": self.block_size,
            "num_requests": self.num_requests,
            "prompt_tokens": self.prompt_tokens,
            "full_block_tokens": self.full_block_tokens,
            "unique_block_tokens": self.unique_block_tokens,
            "hit_tokens": self.hit_tokens,
            "hit_rate": self.hit_rate,
            "hit_tokens_by_retention": dict(self.hit_tokens_by_retention),
            "hit_rate_by_class": {
                c: (self.hit_tokens_by_class.get(c, 0) / n if n else 0.0)
                for c, n in self.prompt_tokens_by_class.items()
            },
        }


def prompt_pieces(r: Request) -> list[Piece]:
    return [(s.content_id, 0, s.tokens, s.retention) for s in r.segments if s.tokens > 0]


def blocks(pieces: Iterable[Piece], block_size: int) -> Iterator[tuple[Piece, ...]]:
    """The full blocks of a token sequence given as pieces (a trailing partial block is dropped)."""
    cur: list[Piece] = []
    filled = 0
    for cid, start, end, ret in pieces:
        pos = start
        while pos < end:
            take = min(end - pos, block_size - filled)
            cur.append((cid, pos, pos + take, ret))
            pos += take
            filled += take
            if filled == block_size:
                yield tuple(cur)
                cur, filled = [], 0


class Run(NamedTuple):
    """``n`` full blocks inside one piece: tokens ``start`` to ``start + n * block`` of
    content ``cid``."""

    cid: str
    start: int
    n: int
    retention: str


#: One step of a prompt's block chain: a run, or one block that straddles pieces.
Step = Run | tuple[Piece, ...]


def _steps(pieces: Iterable[Piece], block_size: int) -> Iterator[Step]:
    """The full blocks of ``pieces`` as runs and straddling blocks, in order."""
    cur: list[Piece] = []
    filled = 0
    for cid, start, end, ret in pieces:
        pos = start
        if filled:
            take = min(end - pos, block_size - filled)
            cur.append((cid, pos, pos + take, ret))
            pos += take
            filled += take
            if filled < block_size:
                continue
            yield tuple(cur)
            cur, filled = [], 0
        n = (end - pos) // block_size
        if n:
            yield Run(cid, pos, n, ret)
            pos += n * block_size
        if pos < end:
            cur, filled = [(cid, pos, end, ret)], end - pos


def _content(block: tuple[Piece, ...]) -> tuple[tuple[str, int, int], ...]:
    return tuple((c, a, b) for c, a, b, _ in block)


def _keyed(steps: Iterable[Step]) -> Iterator[tuple[int, Step]]:
    """Each step with the key of its parent: the chain hash of every block before it."""
    parent = 0
    for step in steps:
        yield parent, step
        if isinstance(step, Run):
            parent = hash((1, parent, step.cid, step.start, step.n))
        else:
            parent = hash((0, parent, _content(step)))


class _Cache:
    """An infinite prefix cache over runs: ``runs[(parent, cid, s)]`` is the longest cached
    run from that parent, ``blocks`` the cached straddling blocks (parent, their pieces)."""

    def __init__(self) -> None:
        self.runs: dict[tuple[int, str, int], int] = {}
        self.blocks: set[tuple[int, tuple[tuple[str, int, int], ...]]] = set()

    def add(self, keyed: Iterable[tuple[int, Step]]) -> None:
        for parent, step in keyed:
            if isinstance(step, Run):
                key = (parent, step.cid, step.start)
                if self.runs.get(key, 0) < step.n:
                    self.runs[key] = step.n
            else:
                self.blocks.add((parent, _content(step)))

    def num_blocks(self) -> int:
        return sum(self.runs.values()) + len(self.blocks)


def prefix_reuse_bound(w: Workload, block_size: int = 16) -> PrefixReuse:
    """Replay ``w`` through an infinite prefix cache (see the module docstring)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    cached = _Cache()
    unique = _Cache()  # the prompts' blocks only
    hits = 0
    full = 0
    by_ret: Counter[str] = Counter()
    by_cls: Counter[str] = Counter()
    prompt_by_cls: Counter[str] = Counter()
    for r in w.requests:
        pieces = prompt_pieces(r)
        chain = list(_keyed(_steps(pieces, block_size)))
        full += r.prompt_tokens // block_size * block_size
        n_hit = _hit_blocks(chain, cached, (r.prompt_tokens - 1) // block_size, by_ret, block_size)
        hits += n_hit * block_size
        cls = str(r.cls)
        by_cls[cls] += n_hit * block_size
        prompt_by_cls[cls] += r.prompt_tokens
        unique.add(chain)
        cached.add(chain)
        if r.output_content_id is not None and r.output_tokens > 1:
            out = (r.output_content_id, 0, r.output_tokens - 1, "generation")
            cached.add(_keyed(_steps([*pieces, out], block_size)))
    return PrefixReuse(
        block_size=block_size,
        num_requests=len(w.requests),
        prompt_tokens=sum(r.prompt_tokens for r in w.requests),
        full_block_tokens=full,
        unique_block_tokens=unique.num_blocks() * block_size,
        hit_tokens=hits,
        hit_tokens_by_retention={k: by_ret[k] for k in RETENTION_CLASSES if by_ret[k]},
        hit_tokens_by_class=dict(sorted(by_cls.items())),
        prompt_tokens_by_class=dict(sorted(prompt_by_cls.items())),
    )


def _hit_blocks(
    chain: list[tuple[int, Step]],
    cached: _Cache,
    limit: int,
    by_ret: Counter[str],
    block_size: int,
) -> int:
    """The leading blocks of ``chain`` in ``cached``, at most ``limit``; adds their tokens
    to ``by_ret`` by retention class."""
    n_hit = 0
    for parent, step in chain:
        if n_hit >= limit:
            break
        if isinstance(step, Run):
            got = min(step.n, cached.runs.get((parent, step.cid, step.start), 0), limit - n_hit)
            n_hit += got
            by_ret[step.retention] += got * block_size
            if got < step.n:
                break
        else:
            if (parent, _content(step)) not in cached.blocks:
                break
            n_hit += 1
            for _c, a, b, ret in step:
                by_ret[ret] += b - a
    return n_hit


def workload_stats(w: Workload, block_size: int = 16) -> dict[str, Any]:
    """Counts, token distributions, tokens per retention class and the reuse bound."""
    reqs = w.requests
    sessions = {r.session_id for r in reqs if r.session_id is not None}
    arrivals = [r.arrival_s for r in reqs if r.arrival_s is not None]
    by_ret: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for r in reqs:
        for s in r.segments:
            by_ret[s.retention] += s.tokens
            by_kind[s.kind] += s.tokens
    turns = Counter(r.session_id for r in reqs if r.session_id is not None)
    out: dict[str, Any] = {
        "name": w.name,
        "generator": w.meta.get("generator"),
        "seed": w.meta.get("seed"),
        "num_requests": len(reqs),
        "num_sessions": len(sessions),
        "num_closed_loop": sum(r.think_time_s is not None for r in reqs),
        "requests_per_session": dist(turns.values()),
        "classes": dict(sorted(Counter(str(r.cls) for r in reqs).items())),
        "first_arrival_s": min(arrivals) if arrivals else None,
        "last_arrival_s": max(arrivals) if arrivals else None,
        "prompt_tokens_total": sum(r.prompt_tokens for r in reqs),
        "output_tokens_total": sum(r.output_tokens for r in reqs),
        "prompt_tokens": dist(r.prompt_tokens for r in reqs),
        "output_tokens": dist(r.output_tokens for r in reqs),
        "tokens_by_retention": {k: by_ret[k] for k in RETENTION_CLASSES if by_ret[k]},
        "tokens_by_kind": dict(sorted(by_kind.items())),
        "prefix_reuse": prefix_reuse_bound(w, block_size).to_dict(),
    }
    if w.meta.get("source_format") in TRACES_WITHOUT_PREFIXES:
        out["prefix_information"] = False
    return out


__all__ = ["PrefixReuse", "blocks", "prefix_reuse_bound", "prompt_pieces", "workload_stats"]
