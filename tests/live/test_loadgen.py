"""Cutting a workload into jobs per load mode."""

from __future__ import annotations

import pytest

from kvlab.backends.loadgen import build_jobs
from kvlab.errors import ConfigError
from kvlab.workload.records import Request, Segment


def r(
    rid: str,
    arrival: float | None,
    session: str | None = None,
    think: float | None = None,
    turn: int = 0,
) -> Request:
    return Request(
        rid,
        (Segment("user", 4, rid),),
        2,
        arrival_s=arrival,
        think_time_s=think,
        session_id=session,
        turn=turn,
    )


REQS = [
    r("a0", 0.0, "A"),
    r("x", 0.5),
    r("a1", None, "A", think=1.0, turn=1),
    r("b0", 0.2, "B"),
    r("a2", 3.0, "A", turn=2),  # an absolute arrival inside a session
    r("b1", None, "B", think=0.1, turn=1),
]


def ids(jobs: list) -> list[tuple[list[str], float | None]]:
    return [([q.request_id for q in j.requests], j.start_s) for j in jobs]


def test_trace_mode_splits_at_absolute_arrivals() -> None:
    assert ids(build_jobs(REQS, "trace")) == [
        (["a0", "a1"], 0.0),
        (["b0", "b1"], 0.2),
        (["x"], 0.5),
        (["a2"], 3.0),
    ]


def test_sessions_mode_keeps_whole_sessions() -> None:
    assert ids(build_jobs(REQS, "sessions")) == [
        (["a0", "a1", "a2"], 0.0),
        (["b0", "b1"], 0.2),
        (["x"], 0.5),
    ]


def test_closed_mode_has_no_start_times() -> None:
    assert ids(build_jobs(REQS, "closed")) == [
        (["a0", "a1", "a2"], None),
        (["x"], None),
        (["b0", "b1"], None),
    ]


def test_rate_mode_is_seeded_and_increasing() -> None:
    a = build_jobs(REQS, "rate", rate_per_s=10.0, seed=3)
    b = build_jobs(REQS, "rate", rate_per_s=10.0, seed=3)
    c = build_jobs(REQS, "rate", rate_per_s=10.0, seed=4)
    assert ids(a) == ids(b) and ids(a) != ids(c)
    starts = [j.start_s for j in a]
    assert starts == sorted(starts) and starts[0] > 0


def test_bad_modes() -> None:
    with pytest.raises(ConfigError, match="--rate"):
        build_jobs(REQS, "rate")
    with pytest.raises(ConfigError, match="unknown load mode"):
        build_jobs(REQS, "bursty")
