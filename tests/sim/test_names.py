"""Key names are made once per workload and block size, and read by every run on it."""

from __future__ import annotations

import pytest
from sim_helpers import Gpu, llama8b, random_workload

from kvlab.errors import ConfigError
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import simulate
from kvlab.sim.names import KeyNameTable, name_requests
from kvlab.sim.prepare import prepare
from kvlab.workload.records import Request, Segment, Workload


def workload_requests() -> tuple[Request, ...]:
    return random_workload(3, 300, rate=40.0).requests


def test_the_table_names_in_request_order_whatever_is_asked_first() -> None:
    reqs = workload_requests()
    expected = list(name_requests(reqs, 16))
    table = KeyNameTable(reqs, 16)
    assert table.get(5) == expected[5]
    assert len(table) == 6  # named as far as asked, in order
    assert [table.get(i) for i in [0, *range(len(reqs))]] == [expected[0], *expected]


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
