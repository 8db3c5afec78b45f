"""Records built in bulk equal the ones their constructors build."""

from __future__ import annotations

from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.workload import bulk
from kvlab.workload.detect import builtin_trace, load_workload
from kvlab.workload.records import Request, Segment


def same(a: object, b: object) -> bool:
    """Equal, same class and every field set to an equal value of the same type."""
    return (
        type(a) is type(b)
        and a == b
        and all(
            type(getattr(a, f.name)) is type(getattr(b, f.name))
            for f in fields(a)  # type: ignore[arg-type]
        )
    )


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=5),
    st.lists(st.tuples(st.integers(0, 10**6), st.text(max_size=8)), max_size=20),
    st.sampled_from(["context", "system"]),
)
def test_bulk_segments_equal_constructed(
    kind: str, rows: list[tuple[int, str]], retention: str
) -> None:
    tokens = [t for t, _ in rows]
    contents = [c for _, c in rows]
    built = bulk.segments(kind, tokens, contents, retention)
    expected = [Segment(kind, t, c, retention) for t, c in rows]
    assert len(built) == len(expected)
    assert all(same(a, b) for a, b in zip(built, expected, strict=True))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(max_size=5),
            st.lists(st.integers(0, 600), min_size=1, max_size=4),
            st.integers(1, 1000),
            st.floats(0, 1e6),
        ),
        max_size=20,
    )
)
def test_bulk_requests_equal_constructed(rows: list[tuple[str, list[int], int, float]]) -> None:
    prompts = [tuple(Segment("user", t, f"c{t}") for t in toks) for _, toks, _, _ in rows]
    built = bulk.open_loop_requests(
        [r[0] for r in rows],
        prompts,
        [r[2] for r in rows],
        [r[3] for r in rows],
        [sum(r[1]) for r in rows],
    )
    expected = [Request(r[0], s, r[2], r[3]) for r, s in zip(rows, prompts, strict=True)]
    assert all(same(a, b) for a, b in zip(built, expected, strict=True))
    assert len(built) == len(expected)


def test_bulk_uses_the_slots_of_the_current_record_classes() -> None:
    # if a field is added to Segment or Request, bulk falls back to the constructors
    # (still correct); this test says that the fast path is the one in use
    assert bulk._SEGMENT_SETTERS is not None
    assert bulk._REQUEST_SETTERS is not None


def test_imported_traces_hold_constructed_records() -> None:
    for name in ("azure-conv", "mooncake-synthetic", "vidur-arxiv"):
        wl = load_workload(builtin_trace(name))
        for r in wl.requests[:: max(1, len(wl.requests) // 500)]:
            segs = tuple(Segment(s.kind, s.tokens, s.content_id, s.retention) for s in r.segments)
            assert all(same(a, b) for a, b in zip(r.segments, segs, strict=True))
            assert same(r, Request(r.request_id, segs, r.output_tokens, r.arrival_s))
