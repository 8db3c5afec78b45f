from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.workload.records import Request, Segment, Workload
from kvlab.workload.stats import blocks, prefix_reuse_bound, workload_stats


def _r(rid: str, segs: list[tuple[str, int, str]], out: int = 1, **kw) -> Request:  # type: ignore[no-untyped-def]
    return Request(rid, tuple(Segment("x", n, c, ret) for c, n, ret in segs), out, **kw)


def test_blocks_split_pieces() -> None:
    got = list(blocks([("a", 0, 5, "system"), ("b", 0, 6, "context")], 4))
    assert got == [
        (("a", 0, 4, "system"),),
        (("a", 4, 5, "system"), ("b", 0, 3, "context")),
    ]


def test_narrative_bound() -> None:
    # block 4. r1: sys(10) + u1(3) = 13 tokens, 3 full blocks, nothing cached.
    # r2: sys(10) + u2(5): blocks [sys0-4] [sys4-8] hit; [sys8-10 u2 0-2] differs -> 8.
    # r3: sys(8) only: limit (8-1)//4 = 1 block -> 4 (last token recomputed).
    # r4: same as r1 -> 12 of 13 (3 full blocks, all cached).
    w = Workload(
        (
            _r("r1", [("sys", 10, "system"), ("u1", 3, "ephemeral")]),
            _r("r2", [("sys", 10, "system"), ("u2", 5, "ephemeral")]),
            _r("r3", [("sys", 8, "system")]),
            _r("r4", [("sys", 10, "system"), ("u1", 3, "ephemeral")]),
        )
    )
    b = prefix_reuse_bound(w, 4)
    assert b.hit_tokens == 0 + 8 + 4 + 12
    assert b.hit_tokens_by_retention == {"system": 8 + 4 + 10, "ephemeral": 2}
    assert b.prompt_tokens == 13 + 15 + 8 + 13
    assert b.full_block_tokens == 12 + 12 + 8 + 12
    # distinct full blocks: [sys 0-4], [sys 4-8], [sys 8-10 + u1 0-2], [sys 8-10 + u2 0-2]
    assert b.unique_block_tokens == 4 * 4
    assert b.hit_rate == 24 / 49


def test_output_content_blocks_are_cached() -> None:
    # r1 prompt 4 tokens + 5 generated (output content 'o'): cached blocks of 4+5-1=8 tokens.
    # r2 re-sends prompt + answer + new turn: hits both blocks (8 tokens).
    r1 = _r("r1", [("p", 4, "context")], out=5, output_content_id="o", session_id="s")
    r2 = _r(
        "r2",
        [("p", 4, "context"), ("o", 5, "generation"), ("u", 3, "ephemeral")],
        session_id="s",
        turn=1,
        arrival_s=None,
        think_time_s=0.0,
    )
    b = prefix_reuse_bound(Workload((r1, r2)), 4)
    assert b.hit_tokens == 8
    assert b.hit_tokens_by_retention == {"context": 4, "generation": 4}
    # Without the output content id the answer is unique: only the prompt block hits.
    r1u = _r("r1", [("p", 4, "context")], out=5, session_id="s")
    assert prefix_reuse_bound(Workload((r1u, r2)), 4).hit_tokens == 4


def test_workload_stats_fields() -> None:
    w = Workload(
        (
            _r("a", [("sys", 32, "system"), ("u", 8, "ephemeral")], out=4, session_id="s", cls="c"),
            _r("b", [("sys", 32, "system"), ("v", 8, "ephemeral")], out=6, arrival_s=2.0),
        ),
        name="t",
    )
    s = workload_stats(w, block_size=16)
    assert s["num_requests"] == 2 and s["num_sessions"] == 1
    assert s["classes"] == {"None": 1, "c": 1}
    assert s["prompt_tokens_total"] == 80 and s["output_tokens_total"] == 10
    assert s["tokens_by_retention"] == {"system": 64, "ephemeral": 16}
    assert s["prefix_reuse"]["hit_tokens"] == 32
    assert s["last_arrival_s"] == 2.0


#: Content ids whose first 12 tokens are 48 distinct token ids: with blocks of 2-4
#: tokens, two blocks match only where the workload says so, never by a chance
#: repeat of a word (the vocabulary has 512, so short blocks of other ids can).
IDS = ("a", "c", "f", "j")


def _token_level_bound(w: Workload, block: int) -> int:
    """The same replay on actual token ids (content.token_ids), prefixes as tuples."""
    from kvlab.workload.content import token_ids

    cached: set[tuple[int, ...]] = set()
    hits = 0
    for r in w.requests:
        toks = [t for s in r.segments for t in token_ids(s.content_id, s.tokens)]
        n_full = len(toks) // block
        limit = (len(toks) - 1) // block
        k = 0
        while k < limit and tuple(toks[: (k + 1) * block]) in cached:
            k += 1
        hits += k * block
        cached.update(tuple(toks[: (i + 1) * block]) for i in range(n_full))
        if r.output_content_id is not None:
            full = toks + token_ids(r.output_content_id, r.output_tokens)[: r.output_tokens - 1]
            cached.update(tuple(full[: (i + 1) * block]) for i in range(len(full) // block))
    return hits


def test_ids_share_no_token() -> None:
    from kvlab.workload.content import token_ids

    assert len({t for c in IDS for t in token_ids(c, 12)}) == 12 * len(IDS)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.tuples(st.sampled_from(IDS), st.integers(0, 12)), min_size=1, max_size=4),
            st.integers(1, 6),
            st.none() | st.sampled_from(IDS),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([2, 3, 4, 16]),
)
def test_bound_matches_token_level_replay(
    spec: list[tuple[list[tuple[str, int]], int, str | None]], block: int
) -> None:
    reqs = []
    for i, (segs, out, out_id) in enumerate(spec):
        if sum(n for _, n in segs) < 1:
            segs = [*segs, ("a", 1)]
        reqs.append(
            Request(
                f"r{i}",
                tuple(Segment("x", n, c) for c, n in segs),
                out,
                arrival_s=float(i),
                output_content_id=out_id,
            )
        )
    w = Workload(tuple(reqs))
    b = prefix_reuse_bound(w, block)
    assert b.hit_tokens == _token_level_bound(w, block)
    assert b.hit_tokens <= b.full_block_tokens <= b.prompt_tokens
    assert sum(b.hit_tokens_by_retention.values()) == b.hit_tokens
