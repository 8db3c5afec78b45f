"""The run-based prefix-reuse bound equals a plain block-by-block replay (the reference
below: every full block hashed with its whole prefix), on random prompts and the shapes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.workload.generators import SHAPES, generate
from kvlab.workload.records import Request, Segment, Workload
from kvlab.workload.stats import Piece, blocks, prefix_reuse_bound, prompt_pieces


def _chain(pieces: list[Piece], bs: int) -> Iterator[tuple[int, tuple[Piece, ...]]]:
    parent = 0
    for blk in blocks(pieces, bs):
        parent = hash((parent, tuple((c, a, b) for c, a, b, _ in blk)))
        yield parent, blk


def reference(w: Workload, bs: int) -> dict[str, object]:
    cached: set[int] = set()
    unique: set[int] = set()
    hits = full = 0
    by_ret: Counter[str] = Counter()
    for r in w.requests:
        pieces = prompt_pieces(r)
        chain = list(_chain(pieces, bs))
        full += len(chain) * bs
        n_hit = 0
        for key, blk in chain[: (r.prompt_tokens - 1) // bs]:
            if key not in cached:
                break
            n_hit += 1
            for _c, a, b, ret in blk:
                by_ret[ret] += b - a
        hits += n_hit * bs
        unique.update(k for k, _ in chain)
        cached.update(k for k, _ in chain)
        if r.output_content_id is not None and r.output_tokens > 1:
            out = (r.output_content_id, 0, r.output_tokens - 1, "generation")
            cached.update(k for k, _ in _chain([*pieces, out], bs))
    return {
        "hit_tokens": hits,
        "full_block_tokens": full,
        "unique_block_tokens": len(unique) * bs,
        "hit_tokens_by_retention": {k: v for k, v in by_ret.items() if v},
    }


def _same(w: Workload, bs: int) -> None:
    got = prefix_reuse_bound(w, bs).to_dict()
    want = reference(w, bs)
    for key, value in want.items():
        assert got[key] == value, (key, bs)


segments = st.lists(
    st.builds(
        Segment,
        kind=st.just("user"),
        tokens=st.integers(0, 70),
        content_id=st.sampled_from(["a", "b", "c", "d"]),
        retention=st.sampled_from(["system", "context", "generation"]),
    ),
    min_size=1,
    max_size=6,
).filter(lambda segs: sum(s.tokens for s in segs) > 0)

requests = st.lists(
    st.tuples(segments, st.integers(1, 60), st.sampled_from([None, "a", "o1", "o2"])),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(reqs=requests, bs=st.integers(1, 33))
def test_runs_equal_block_replay_on_random_prompts(
    reqs: list[tuple[list[Segment], int, str | None]], bs: int
) -> None:
    w = Workload(
        requests=tuple(
            Request(str(i), tuple(segs), out, 0.0, output_content_id=oc)
            for i, (segs, out, oc) in enumerate(reqs)
        )
    )
    _same(w, bs)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("bs", [1, 16, 48])
def test_runs_equal_block_replay_on_shapes(shape: str, bs: int) -> None:
    _same(generate(shape, seed=3, sessions=3), bs)
