"""Property tests: the parser never crashes on arbitrary input, and round-trips requests."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.errors import WorkloadError
from kvlab.workload.io import parse_request
from kvlab.workload.records import RETENTION_CLASSES, Request, Segment

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
fields = st.sampled_from(
    [
        "id",
        "session",
        "turn",
        "arrival_s",
        "think_time_s",
        "class",
        "priority",
        "segments",
        "output_tokens",
        "output_content",
        "tokens",
        "content",
        "retention",
        "kind",
        "x",
    ]
)


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(fields, json_values, max_size=8))
def test_parser_raises_only_workload_errors(obj: dict[str, Any]) -> None:
    try:
        parse_request(obj)
    except WorkloadError as e:
        assert str(e)


segments = st.lists(
    st.builds(
        Segment,
        kind=st.sampled_from(["system", "user", "tool_output"]),
        tokens=st.integers(1, 5000),
        content_id=st.text(min_size=1, max_size=12),
        retention=st.sampled_from(RETENTION_CLASSES),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=80, deadline=None)
@given(
    segs=segments,
    out=st.integers(1, 4000),
    arrival=st.floats(0, 1e6, allow_nan=False),
    session=st.none() | st.text(min_size=1, max_size=6),
    cls=st.none() | st.text(max_size=6),
    priority=st.integers(-3, 3),
    out_content=st.none() | st.text(min_size=1, max_size=6),
)
def test_round_trip(
    segs: list[Segment],
    out: int,
    arrival: float,
    session: str | None,
    cls: str | None,
    priority: int,
    out_content: str | None,
) -> None:
    r = Request(
        "r1",
        tuple(segs),
        out,
        arrival_s=arrival,
        session_id=session,
        cls=cls,
        priority=priority,
        output_content_id=out_content,
    )
    assert parse_request(r.to_dict()) == r
