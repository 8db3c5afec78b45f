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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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


def _chain(pieces: Iterable[Piece], block_size: int) -> Iterator[tuple[int, tuple[Piece, ...]]]:
    parent = 0
    for blk in blocks(pieces, block_size):
        parent = hash((parent, tuple((c, a, b) for c, a, b, _ in blk)))
        yield parent, blk


def prefix_reuse_bound(w: Workload, block_size: int = 16) -> PrefixReuse:
    """Replay ``w`` through an infinite prefix cache (see the module docstring)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    cached: set[int] = set()
    hits = 0
    full = 0
    by_ret: Counter[str] = Counter()
    by_cls: Counter[str] = Counter()
    prompt_by_cls: Counter[str] = Counter()
    unique: set[int] = set()
    for r in w.requests:
        pieces = prompt_pieces(r)
        chain = list(_chain(pieces, block_size))
        full += len(chain) * block_size
        max_hit_blocks = (r.prompt_tokens - 1) // block_size
        n_hit = 0
        for key, blk in chain[:max_hit_blocks]:
            if key not in cached:
                break
            n_hit += 1
            for _c, a, b, ret in blk:
                by_ret[ret] += b - a
        hits += n_hit * block_size
        cls = str(r.cls)
        by_cls[cls] += n_hit * block_size
        prompt_by_cls[cls] += r.prompt_tokens
        keys = [k for k, _ in chain]
        unique.update(keys)
        cached.update(keys)
        if r.output_content_id is not None and r.output_tokens > 1:
            out = (r.output_content_id, 0, r.output_tokens - 1, "generation")
            cached.update(k for k, _ in _chain([*pieces, out], block_size))
    return PrefixReuse(
        block_size=block_size,
        num_requests=len(w.requests),
        prompt_tokens=sum(r.prompt_tokens for r in w.requests),
        full_block_tokens=full,
        unique_block_tokens=len(unique) * block_size,
        hit_tokens=hits,
        hit_tokens_by_retention={k: by_ret[k] for k in RETENTION_CLASSES if by_ret[k]},
        hit_tokens_by_class=dict(sorted(by_cls.items())),
        prompt_tokens_by_class=dict(sorted(prompt_by_cls.items())),
    )


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
