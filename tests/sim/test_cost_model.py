"""The roofline clock's closed forms equal its step-by-step definition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvlab.sim.cost_model import RooflineCost

coef = st.integers(min_value=0, max_value=10**9)
costs = st.builds(
    RooflineCost,
    per_token=coef,
    per_attn=st.integers(min_value=0, max_value=10**4),
    weights=coef,
    per_kv_token=st.integers(min_value=0, max_value=10**6),
    overhead=st.integers(min_value=0, max_value=10**6),
)


def naive_ends(cost: RooflineCost, n: int, s0: int, k: int, t0: int, deadline: int) -> list[int]:
    """Step i of a decode window: n tokens, n * ctx_i attention pairs, ctx_i read."""
    out, t = [], t0
    for i in range(k):
        if deadline > t0 and t >= deadline:
            break
        ctx = s0 + n * i
        t += cost.step_ticks(n, ctx, ctx)
        out.append(t)
    return out


@given(
    costs,
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=300),
)
def test_window_ticks_is_the_sum_of_its_steps(cost: RooflineCost, n: int, s0: int, k: int) -> None:
    s0 += n  # every sequence reads at least its new token
    total = sum(cost.step_ticks(n, s0 + n * i, s0 + n * i) for i in range(k))
    assert cost.window_ticks(n, s0, k) == total


@given(
    costs,
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=10**15),
    st.integers(min_value=-(10**12), max_value=10**12),
)
def test_step_ends_stop_before_the_deadline(
    cost: RooflineCost, n: int, s0: int, k: int, t0: int, until: int
) -> None:
    s0 += n
    deadline = t0 + until if until > 0 else 0
    expected = naive_ends(cost, n, s0, k, t0, deadline)
    assert cost.step_ends(n, s0, k, t0, deadline) == expected
    if expected:
        assert expected[-1] == t0 + cost.window_ticks(n, s0, len(expected))
