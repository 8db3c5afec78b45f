"""``Sample``: the figures of one latency metric, sorted once, equal to the bit to
``dist``, ``std`` and ``percentile`` on the same values, on both of its paths (pure
Python below ``NUMPY_FROM`` values, numpy from there on), scaled or not."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvlab.results import summary as summary_mod
from kvlab.results.summary import Sample, dist, percentile, std

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on inf and nan

QS = (0.1, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0)


def figures(values: list[float]) -> str:
    d: dict[str, Any] = dict(dist(values))
    d["std"] = std(values)
    d["q"] = [percentile(values, q) for q in QS]
    return json.dumps(d)


def sample_figures(s: Sample) -> str:
    d: dict[str, Any] = dict(s.dist())
    d["std"] = s.std()
    d["q"] = [s.percentile(q) for q in QS]
    return json.dumps(d)


# the patched limit is the same for every generated input: safe with hypothesis
@pytest.fixture(params=["python", "numpy"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(summary_mod, "NUMPY_FROM", 10**9 if request.param == "python" else 0)
    return str(request.param)


latencies = st.floats(0, 1e4, allow_nan=False)
anything = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(st.one_of(latencies, anything), max_size=200), ask_sorted_first=st.booleans()
)
def test_a_sample_gives_the_functions_figures(
    path: str, values: list[float], ask_sorted_first: bool
) -> None:
    s = Sample(values)
    if ask_sorted_first and values:
        s.percentile(50.0)  # sorted before the distribution is asked
    assert sample_figures(s) == figures(values)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(latencies, max_size=200), sort_first=st.booleans())
def test_a_scaled_sample_equals_the_scaled_values(
    path: str, values: list[float], sort_first: bool
) -> None:
    s = Sample(values)
    if sort_first and values:
        s.percentile(99.0)  # the sorted copy is scaled, not sorted again
    assert sample_figures(s.scaled(1e3)) == figures([1e3 * v for v in values])


@pytest.mark.parametrize("n", [1, 9, 129, 8193, 20000, 65537])
def test_both_paths_agree_on_large_lognormal_samples(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(n)
    values = [rng.lognormvariate(0, 3) for _ in range(n)]
    out = []
    for limit in (10**9, 0):
        monkeypatch.setattr(summary_mod, "NUMPY_FROM", limit)
        s = Sample(values)
        out.append((sample_figures(s), sample_figures(s.scaled(1e3))))
    assert out[0] == out[1]
    assert out[0][0] == figures(values)
    assert math.isfinite(json.loads(out[0][0])["mean"])
