"""The roofline clock's closed forms equal its step-by-step definition."""

from __future__ import annotations

import pytest
from hypothesis import example, given
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
        t += cost.step_ticks(n, ctx, ctx, n)
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
    total = sum(cost.step_ticks(n, s0 + n * i, s0 + n * i, n) for i in range(k))
    assert cost.window_ticks(n, s0, k) == total


#: a window: the clock, sequences, their context, steps, its start tick, the deadline after it
WINDOWS = (
    costs,
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=10**15),
    st.integers(min_value=-(10**12), max_value=10**12),
)


@given(*WINDOWS)
def test_step_ends_stop_before_the_deadline(
    cost: RooflineCost, n: int, s0: int, k: int, t0: int, until: int
) -> None:
    s0 += n
    deadline = t0 + until if until > 0 else 0
    expected = naive_ends(cost, n, s0, k, t0, deadline)
    assert cost.step_ends(n, s0, k, t0, deadline) == expected
    if expected:
        assert expected[-1] == t0 + cost.window_ticks(n, s0, len(expected))


def test_one_llama_8b_request_on_h100_matches_the_hand_derived_roofline() -> None:
    """TTFT and TPOT of one request (1,000 prompt tokens, 2 output tokens) of
    Llama-3.1-8B bf16 on an H100 SXM, derived by hand from the formulas of
    kvlab.sim.cost_model (REFERENCE section 4) and the defaults mfu 0.5, mbu 0.8,
    overhead 0.3 ms:

    - weights: 8,030,261,248 parameters x 2 B = 16,060,522,496 B;
    - KV per token: 32 layers x 8 KV heads x 128 x 2 (K and V) x 2 B = 131,072 B;
    - H100 SXM: 3,350 GB/s HBM x 0.8 = 2.68e12 B/s; 989 TFLOPS bf16 x 0.5 = 4.945e14.

    Prefill (one step, 1,000 new tokens over a context of 1,000: 1e6 attention pairs):
    compute = (2 x 8,030,261,248 x 1,000 + 4 x 32 x 32 x 128 x 1e6) / 4.945e14
            = (1.6060522496e13 + 5.24288e11) / 4.945e14 = 33.5385455 ms,
    memory  = (16,060,522,496 + 131,072 x 1,000) / 2.68e12 = 6.04 ms: compute-bound,
    TTFT = 0.3 + 33.5385455 = 33.8385455 ms.

    Decode (one step: the second token reads the KV of 1,001 tokens, the first
    output token's included):
    memory  = (16,060,522,496 + 131,072 x 1,001) / 2.68e12
            = 16,191,725,568 / 2.68e12 = 6.0416886 ms,
    compute = (2 x 8,030,261,248 + 4 x 32 x 32 x 128 x 1,001) / 4.945e14 = 0.0335 ms:
    memory-bound, TPOT = 0.3 + 6.0416886 = 6.3416886 ms.
    """
    import kvlab
    from kvlab.workload.records import Request, Segment, Workload

    w = Workload((Request("a", (Segment("user", 1000, "x"),), 2),))
    # (the synchronous scheduler: steps follow one another, host part included)
    sync = kvlab.SimConfig(model="llama-3.1-8b", gpu="h100", async_scheduling=False)
    rec = kvlab.simulate(w, sync).records[0]
    assert rec.ttft_s == pytest.approx(0.0338385455, rel=1e-8)
    assert rec.tpot_s == pytest.approx(0.0063416886, rel=1e-8)


@example(RooflineCost(0, 0, 0, 0, 5), 1, 0, 5, 10, 10, 1, 1.0)
@example(RooflineCost(0, 0, 0, 0, 0), 2, 3, 4, 0, 7, 0, 0.0)
@given(*WINDOWS, st.integers(min_value=0, max_value=3), st.floats(min_value=0.0, max_value=1.0))
def test_step_ends_hide_host_time_and_run_extra_steps_past_the_deadline(
    cost: RooflineCost, n: int, s0: int, k: int, t0: int, until: int, extra: int, part: float
) -> None:
    """Each step overlaps ``hidden`` ticks with the one before; at most ``extra`` steps
    start at or after the deadline (the async loop's batch scheduled before it sees the
    output that follows the arrival)."""
    s0 += n
    hidden = int(cost.overhead * part)  # (steps of no ticks at all included: examples)
    deadline = t0 + until if until > 0 else 0
    expected, t, late = [], t0, 0
    for i in range(k):
        if deadline > t0 and t >= deadline:
            late += 1
            if late > extra:
                break
        ctx = s0 + n * i
        t += cost.step_ticks(n, ctx, ctx, n) - hidden
        expected.append(t)
    assert cost.step_ends(n, s0, k, t0, deadline, hidden, extra) == expected
