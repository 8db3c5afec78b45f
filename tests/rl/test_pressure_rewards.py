"""The seven KVPressure reward terms: the issue's formulas at hand-computed points."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlab.errors import ConfigError
from kvlab.rl.pressure_rewards import (
    DEFAULT_WEIGHTS,
    TERMS,
    EpisodeTally,
    episode_reward,
    failure_penalty,
    headroom_bonus,
    latency_penalty,
    memory_efficiency,
    throughput_reward,
)


def test_weights_are_the_issues_and_sum_to_one() -> None:
    assert DEFAULT_WEIGHTS["failure_penalty"] == 0.40 and DEFAULT_WEIGHTS["headroom_bonus"] == 0.18
    assert math.isclose(sum(DEFAULT_WEIGHTS.values()), 1.0) and len(TERMS) == 7


def test_formulas_at_hand_computed_points() -> None:
    assert failure_penalty(0) == 0.0
    assert failure_penalty(2) == pytest.approx(-0.30)
    assert failure_penalty(4) == pytest.approx(-(0.60 + 0.20))
    assert failure_penalty(6) == -1.0  # 0.9 + 0.4, capped
    assert throughput_reward(250) == 0.5 and throughput_reward(900) == 1.0
    assert headroom_bonus([0.5, 0.9, 0.97, 1.0]) == pytest.approx((1 + 0.5 + 0 - 0.5) / 4)
    assert memory_efficiency(0.84, False) == 0.2 and memory_efficiency(0.84, True) == -0.2
    assert memory_efficiency(0.9, False) == 0.0
    assert latency_penalty(0.5) == pytest.approx(-0.1) and latency_penalty(10.0) == -0.3


def test_an_episode_total_is_the_weighted_sum() -> None:
    t = EpisodeTally(
        failures=1,
        tokens=250,
        usage=[0.7, 0.96],
        evicted_tokens=100,
        evicted_protected_tokens=25,
        evicted_progress=[0.9, 0.1],
        swap_latency_s=0.25,
    )
    total, info = episode_reward(t)
    expect = (
        0.40 * -0.15
        + 0.25 * 0.5
        + 0.18 * 0.5
        + 0.07 * 0.0
        + 0.05 * 0.75
        + 0.03 * -0.05
        + 0.02 * -0.5
    )
    assert total == pytest.approx(expect)
    assert info["pressure_steps"] == 1 and info["tokens"] == 250
    only_tokens, _ = episode_reward(t, {k: 0.0 for k in TERMS} | {"throughput_reward": 1.0})
    assert only_tokens == 0.5


@pytest.mark.parametrize("bad", [{"speed": 1.0}, {"headroom_bonus": math.nan}, {"x": True}])
def test_bad_weights_are_config_errors(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        episode_reward(EpisodeTally(), bad)


@given(
    st.integers(0, 50),
    st.integers(0, 10_000),
    st.lists(st.floats(0, 1), max_size=20),
    st.floats(0, 100),
)
def test_every_term_stays_in_its_range(f: int, tokens: int, usage: list[float], lat: float) -> None:
    _, info = episode_reward(EpisodeTally(f, tokens, usage, swap_latency_s=lat))
    assert -1.0 <= info["failure_penalty"] <= 0.0
    assert 0.0 <= info["throughput_reward"] <= 1.0
    assert -0.5 <= info["headroom_bonus"] <= 1.0
    assert -0.3 <= info["latency_penalty"] <= 0.0
