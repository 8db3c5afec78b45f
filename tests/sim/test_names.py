"""Key names made ahead: a forked child names exactly what the engine's process would."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sim_helpers import random_workload

from kvlab.sim import names as names_mod
from kvlab.sim.names import ForkedNames, KeyNames, LocalNames, name_requests, open_names
from kvlab.workload.records import Request, Segment

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")


def workload_requests() -> tuple[Request, ...]:
    return random_workload(3, 300, rate=40.0).requests


@fork_only
def test_forked_names_equal_local_names() -> None:
    reqs = workload_requests()
    local = LocalNames(reqs, 16)
    forked = ForkedNames(reqs, 16)
    try:
        for i in [5, 0, *range(len(reqs))]:  # any order: read as far as asked
            assert forked.get(i) == local.get(i)
    finally:
        forked.close()
    assert forked._pid is None


@fork_only
def test_a_failed_child_falls_back_to_naming_here(monkeypatch: pytest.MonkeyPatch) -> None:
    reqs = workload_requests()
    expected = list(name_requests(reqs, 16))
    real = names_mod.name_requests
    parent = os.getpid()

    def broken_in_child(requests: tuple[Request, ...], block_size: int) -> Iterator[KeyNames]:
        if os.getpid() != parent:
            raise RuntimeError("the child dies")
        return real(requests, block_size)

    monkeypatch.setattr(names_mod, "name_requests", broken_in_child)
    forked = ForkedNames(reqs, 16)
    try:
        assert [forked.get(i) for i in range(len(reqs))] == expected
    finally:
        forked.close()


def test_errors_surface_in_the_engines_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request the walk rejects (a segment of 2**24 tokens) fails the same way
    whether the names come from a child or not."""
    reqs = (*workload_requests(), Request("huge", (Segment("user", 1 << 24, "h"),), 1))
    for fork_min in (1, 10**9):
        monkeypatch.setattr(names_mod, "FORK_MIN_REQUESTS", fork_min)
        names = open_names(reqs, 16)
        try:
            assert names.get(0) == next(name_requests(reqs, 16))
            with pytest.raises(ValueError, match="more than"):
                names.get(len(reqs) - 1)
        finally:
            names.close()


def test_small_workloads_are_named_here() -> None:
    assert isinstance(open_names(workload_requests(), 16), LocalNames)
