"""Key names are made once per workload and block size, and read by every run on it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import Gpu, llama8b, random_workload

from kvlab.errors import CapacityError, ConfigError, WorkloadError
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import simulate
from kvlab.sim.hashing import OFFSET_BITS, ChainInterner
from kvlab.sim.names import (
    FIELDS,
    KeyNameTable,
    content_lengths,
    name_all,
    name_requests,
    name_unique_prompts,
)
from kvlab.sim.prepare import prepare
from kvlab.workload.records import Request, Segment, Workload


def workload_requests() -> tuple[Request, ...]:
    return random_workload(3, 300, rate=40.0).requests


@pytest.mark.parametrize("at_once", [False, True])
def test_the_table_names_in_request_order_whatever_is_asked_first(
    at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By the walk (a small workload, numpy not loaded), requests are named in
    order as far as asked; with numpy, all at the first ask. The same names."""
    import kvlab.sim.names as names

    monkeypatch.setattr(names, "vectorize", lambda requests: at_once)
    reqs = workload_requests()
    expected = list(name_requests(reqs, 16))
    table = KeyNameTable(reqs, 16)
    assert table.get(5) == expected[5]
    assert len(table) == (len(reqs) if at_once else 6)  # named as far as asked, in order
    assert [table.get(i) for i in [0, *range(len(reqs))]] == [expected[0], *expected]


def packed_walk(requests: tuple[Request, ...], block_size: int) -> dict[str, list[int]]:
    """:func:`name_requests`' names packed as a KeyNameTable keeps them."""
    out: dict[str, list[int]] = {f: [] for f in FIELDS}
    out["fo"].append(0)
    out["ro"].append(0)
    for firsts, ends, runs, node, zero in name_requests(requests, block_size):
        out["firsts"] += firsts
        out["ends"] += ends
        out["fo"].append(len(out["firsts"]))
        for key, n in runs:
            out["runs"] += [key, n]
        out["ro"].append(len(out["runs"]) // 2)
        out["node"].append(node)
        out["zero"].append(zero)
    return out


# Long contents reach the key's offset bits: a part then cannot continue its run.
lengths = st.sampled_from([0, 1, 3, 16, 17, 70, (1 << 23) - 1, 1 << 23, (1 << 24) - 1])
named_contents = st.sampled_from(["a", "b", "c", "d", "u1", "u2", "u3"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.tuples(named_contents, lengths), max_size=5),
            st.one_of(st.none(), named_contents),
            st.sampled_from([1, 9, 1 << 23]),
        ),
        max_size=14,
    ),
    st.sampled_from([1, 4, 16, 512]),
)
def test_naming_all_at_once_gives_the_walks_names(
    spec: list[tuple[list[tuple[str, int]], str | None, int]], block_size: int
) -> None:
    """The numpy naming (depth by depth of the segment trie) gives the sequential
    walk's names: nodes, runs, parts continuing runs (or not, when the offset bits
    are full), named and fresh outputs, empty segments and prompts, and equal
    content ids held by distinct string objects."""
    reqs = tuple(
        Request(
            f"r{i}",
            tuple(Segment("user", n, "".join(list(c))) for c, n in segs),  # fresh str objects
            out_tokens,
            output_content_id=out,
        )
        for i, (segs, out, out_tokens) in enumerate(spec)
    )
    packed = name_all(reqs, block_size)
    assert packed is not None
    assert {f: a.tolist() for f, a in zip(FIELDS, packed, strict=True)} == packed_walk(
        reqs, block_size
    )


def test_a_segment_too_long_for_a_key_leaves_naming_to_the_walk() -> None:
    reqs = (*workload_requests(), Request("huge", (Segment("user", 1 << 24, "h"),), 1))
    assert name_all(reqs, 16) is None
    assert name_all(workload_requests(), 16) is not None


def test_errors_surface_when_a_run_reaches_the_request() -> None:
    """A request the walk rejects (a segment of 2**24 tokens) fails when it is named,
    not before: the requests ahead of it are named as usual."""
    reqs = (*workload_requests(), Request("huge", (Segment("user", 1 << 24, "h"),), 1))
    table = KeyNameTable(reqs, 16)
    assert table.get(0) == next(name_requests(reqs, 16))
    with pytest.raises(ValueError, match="more than"):
        table.get(len(reqs) - 1)


def test_a_prepared_workload_gives_the_same_runs_and_names_once() -> None:
    wl: Workload = random_workload(7, 200, rate=30.0)
    cfg = SimConfig(model=llama8b(), gpu=Gpu(), block_size=16, num_blocks=300)
    fresh = [simulate(wl, cfg) for _ in range(2)]
    prepared = prepare(wl, 16)
    again = [simulate(prepared, cfg) for _ in range(2)]
    for r in again:
        assert [x.to_dict() for x in r.records] == [x.to_dict() for x in fresh[0].records]
    table = prepared.names
    simulate(prepared, cfg)
    assert prepared.names is table and len(table) == len(wl.requests)  # not named again


def test_a_workload_prepared_for_another_block_size_is_refused() -> None:
    prepared = prepare(random_workload(1, 10, rate=5.0), 8)
    with pytest.raises(ConfigError, match="prepared for blocks of 8"):
        simulate(prepared, SimConfig(model=llama8b(), gpu=Gpu(), block_size=16, num_blocks=300))


def walked_names(requests: tuple[Request, ...], block_size: int) -> list[tuple]:
    """Every request through the plain walk (no unique-prompt shortcut)."""
    it = ChainInterner()
    it.reserve(content_lengths(requests))
    out = []
    for q in requests:
        ends: list[int] = []
        runs: list[tuple[int, int]] = []
        firsts, node = it.walk(q.segments, block_size, ends, runs)
        o = q.output_content_id
        zero = it.fresh_run() << OFFSET_BITS if o is None else it.part(node, o)
        out.append((firsts, ends, runs, node, zero))
    return out


contents = st.sampled_from(["a", "b", "c", "u1", "u2", "u3", "u4", "u5"])
segment = st.builds(Segment, st.just("user"), st.integers(0, 70), contents)
request = st.tuples(
    st.lists(segment, min_size=1, max_size=3), st.one_of(st.none(), contents), st.integers(1, 9)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(request, max_size=12), st.sampled_from([1, 4, 16]))
def test_unique_one_segment_prompts_are_named_as_the_walk_names_them(
    spec: list[tuple[list[Segment], str | None, int]], block_size: int
) -> None:
    """Prompts of one segment whose content occurs once (every request of a trace
    without prefix information) take a shortcut; the names are the walk's, whatever
    else the workload holds (the same content elsewhere, as a named output, empty
    segments)."""
    reqs = tuple(
        Request(f"r{i}", tuple(segs), out_tokens, output_content_id=out)
        for i, (segs, out, out_tokens) in enumerate(spec)
    )
    assert list(name_requests(reqs, block_size)) == walked_names(reqs, block_size)


# --- the rest of preparing a workload ---


def _req(
    i: int, arrival: float | None, think: float | None = None, session: str | None = None
) -> Request:
    seg = (Segment("user", 20 * (i + 1), f"c{i}"),)
    return Request(f"r{i}", seg, 4, arrival_s=arrival, think_time_s=think, session_id=session)


def test_arrivals_are_sorted_by_time_then_request_order() -> None:
    times = [3.0, 1.0, 3.0, 0.5, 1.0, 0.0, 3.0]
    prepared = prepare(Workload(tuple(_req(i, t) for i, t in enumerate(times))), 16)
    expected = sorted((round(t * 10**15), i) for i, t in enumerate(times))
    assert list(zip(prepared.arrival_ticks, prepared.arrival_index, strict=True)) == expected
    assert prepared.next_in_session == {}


def test_the_first_bad_request_is_named_whatever_its_fault() -> None:
    """A time out of range and a follow-up turn without a session start: the error
    is the first request's in request order, as when each is checked in turn."""
    late = _req(1, float("nan"))
    orphan = _req(2, None, think=1.0, session="s")
    ok = [_req(0, 0.0)]
    with pytest.raises(WorkloadError, match=r"finite") as e:
        prepare(Workload((*ok, late, orphan)), 16)
    assert e.value.field == "requests[1].arrival_s"
    with pytest.raises(WorkloadError, match="needs arrival_s") as e:
        prepare(Workload((*ok, orphan, late)), 16)
    assert e.value.field == "requests[1]"


def test_the_capacity_check_names_the_first_request_that_cannot_fit() -> None:
    prepared = prepare(Workload(tuple(_req(i, 0.0) for i in range(4))), 16)
    prepared.check_capacity(4096, 1 + 7)  # 20 * 4 + 4 - 1 tokens: 6 blocks of 16
    with pytest.raises(CapacityError, match="'r2' needs 64 tokens"):
        prepared.check_capacity(4096, 1 + 3)
    prepared.check_capacity(70, 1 + 4)  # r3's 80-token prompt is rejected, not too big


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 70), max_size=12),
    st.sampled_from([None, "repeat", "named", "empty", "two"]),
    st.sampled_from([1, 4, 16]),
)
def test_unique_prompt_workloads_are_named_in_plain_python_as_the_walk(
    lengths: list[int], odd: str | None, block_size: int
) -> None:
    """A workload of one-segment prompts of distinct contents and fresh outputs (a
    trace without prefix information) is named without numpy; one request of
    another kind sends the workload to the general naming. The walk's names."""
    reqs = [Request(f"r{i}", (Segment("user", n, f"c{i}"),), 3) for i, n in enumerate(lengths)]
    if odd == "repeat":
        reqs.append(Request("x", (Segment("user", 5, "c0"),), 3))
    elif odd == "named":
        reqs.append(Request("x", (Segment("user", 5, "cx"),), 3, output_content_id="o"))
    elif odd == "empty":
        reqs.append(Request("x", (Segment("user", 0, "cx"), Segment("user", 5, "cy")), 3))
    elif odd == "two":
        reqs.append(Request("x", (Segment("user", 5, "cx"), Segment("user", 5, "cy")), 3))
    requests = tuple(reqs)
    unique = name_unique_prompts(requests, block_size)
    plain = odd is None or (odd == "repeat" and not lengths)  # "c0" then occurs once
    assert (unique is not None) == plain
    table = KeyNameTable(requests, block_size)
    if requests:
        table.get(0)
    expected = packed_walk(requests, block_size)
    assert {f: list(getattr(table, f)) for f in FIELDS} == expected
    if unique is not None:
        assert [list(a) for a in unique] == [expected[f] for f in FIELDS]
