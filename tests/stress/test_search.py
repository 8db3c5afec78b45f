"""Galloping + bisection: exact answers, counted runs, monotonicity reported, and the
same maximum as brute force over real simulator runs."""

from __future__ import annotations

import math

import pytest

from kvlab.stress.evaluate import evaluate
from kvlab.stress.matrix import Scenario, SearchSpec
from kvlab.stress.ranges import probe_scenario, search_range
from kvlab.stress.scenario import WorkloadCache
from kvlab.stress.search import largest_passing
from kvlab.stress.slo import Slo


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 7, 8, 9, 100, 511, 999, 1000])
def test_finds_the_threshold_in_log_runs(limit: int) -> None:
    calls: list[int] = []

    def passes(n: int) -> bool:
        calls.append(n)
        return n <= limit

    r = largest_passing(passes, 1000)
    assert r.best == limit
    assert r.capped == (limit == 1000)
    assert r.monotone
    assert r.num_runs == len(calls) == len(set(calls))
    assert r.num_runs <= 2 * math.ceil(math.log2(1001)) + 2


def test_non_monotone_passes_are_reported() -> None:
    # passes at 1-5 and again at 7: the probe above the answer (6 fails) sees it
    r = largest_passing(lambda n: n <= 5 or n == 7, 64)
    assert r.best == 5
    assert not r.monotone
    assert r.violations == ("7 passes although 6 fails",)


def test_rejects_bad_max() -> None:
    with pytest.raises(ValueError):
        largest_passing(lambda n: True, 0)


def test_search_matches_brute_force_on_the_simulator() -> None:
    """Every batch size 1..N simulated: the search's answer is the largest passing one."""
    base = Scenario(name="tiny", model="qwen2.5-0.5b", gpu="rtx-4090", max_num_seqs=8)
    slo = Slo(ttft_p99_s=0.25, tpot_p99_s=1.0)
    spec = SearchSpec(seq_lens=(1024,), gen_len=32, max_value=24)
    cache = WorkloadCache()
    brute = [
        evaluate(probe_scenario(base, "batch", n, 1024, 32, 1), slo, cache).ok for n in range(1, 25)
    ]
    expect = max((n for n, ok in enumerate(brute, 1) if ok), default=0)
    assert 1 < expect < 24, brute  # the case is a real one: some pass, some fail
    assert all(brute[:expect]) and not any(brute[expect:]), "the test itself is monotone here"
    row = search_range(base, "batch", 1024, spec, slo, WorkloadCache())
    assert row.best == expect
    assert row.search.num_runs < 24
    assert row.limit_reason is not None and "TTFT p99" in row.limit_reason
