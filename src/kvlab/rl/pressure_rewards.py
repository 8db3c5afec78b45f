"""The seven weighted reward terms of ``kvlab/KVPressure-v0`` (issue 14), as pure
functions of an episode's tallies, so that the environment and an LLM harness score
alike. The environment on the engine is not built yet (docs/rl.md); these are.

Each term maps what the engine counts in an episode to a score; the episode's reward is
``sum(weight[t] * term[t])``. The formulas and weights are the issue's; where it names a
term without its numbers (``headroom_bonus``'s steps, ``eviction_quality``,
``risky_eviction_penalty``) the choice here is documented at the function.

=========================  ======  =====================================================
term                       weight  score
=========================  ======  =====================================================
failure_penalty            0.40    ``-min(0.15 f + 0.1 max(0, f - 2), 1)``, f = failures
throughput_reward          0.25    ``min(tokens / 500, 1)``
headroom_bonus             0.18    mean over decision steps of 1 / 0.5 / 0 / -0.5 for
                                   usage below 0.8 / 0.95 / 1.0 / at 1.0
memory_efficiency          0.07    0.2 if final usage < 0.85, -0.2 on any overflow,
                                   else 0
eviction_quality           0.05    share of evicted tokens that were *not* system or
                                   context blocks (1 when nothing was evicted)
latency_penalty            0.03    ``-min(0.2 swap_latency_s, 0.3)``
risky_eviction_penalty     0.02    ``-`` share of evictions of requests more than 80%
                                   done (most of their work is lost)
=========================  ======  =====================================================

Weight-0 metrics (reported, not scored): tokens, failures, swap latency, pressure steps
(usage above 0.95).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kvlab.errors import ConfigError

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "failure_penalty": 0.40,
    "throughput_reward": 0.25,
    "headroom_bonus": 0.18,
    "memory_efficiency": 0.07,
    "eviction_quality": 0.05,
    "latency_penalty": 0.03,
    "risky_eviction_penalty": 0.02,
}
TERMS: tuple[str, ...] = tuple(DEFAULT_WEIGHTS)

#: usage at or above this counts as a pressure step
PRESSURE_USAGE = 0.95


@dataclass
class EpisodeTally:
    """What an episode counted. ``usage`` is the KV usage (0..1) at each decision step;
    ``evicted_tokens`` / ``evicted_protected_tokens`` the tokens of evicted requests and
    those of them in system or context segments; ``evicted_progress`` each evicted
    request's done fraction (output tokens made / asked)."""

    failures: int = 0
    tokens: int = 0
    usage: list[float] = field(default_factory=list)
    overflowed: bool = False
    evicted_tokens: int = 0
    evicted_protected_tokens: int = 0
    evicted_progress: list[float] = field(default_factory=list)
    swap_latency_s: float = 0.0


def failure_penalty(failures: int) -> float:
    f = failures
    return -min(f * 0.15 + max(0, f - 2) * 0.1, 1.0)


def throughput_reward(tokens: int) -> float:
    return min(tokens / 500.0, 1.0)


def headroom_step(usage: float) -> float:
    """One decision step's headroom: 1 below 0.8, 0.5 below 0.95, 0 below 1, -0.5 full."""
    if usage < 0.8:
        return 1.0
    if usage < 0.95:
        return 0.5
    if usage < 1.0:
        return 0.0
    return -0.5


def headroom_bonus(usage: Sequence[float]) -> float:
    return sum(headroom_step(u) for u in usage) / len(usage) if usage else 0.0


def memory_efficiency(final_usage: float, overflowed: bool) -> float:
    if overflowed:
        return -0.2
    return 0.2 if final_usage < 0.85 else 0.0


def eviction_quality(evicted_tokens: int, protected_tokens: int) -> float:
    if evicted_tokens <= 0:
        return 1.0
    return 1.0 - protected_tokens / evicted_tokens


def latency_penalty(swap_latency_s: float) -> float:
    return -min(swap_latency_s * 0.2, 0.3)


def risky_eviction_penalty(progress: Sequence[float]) -> float:
    return -sum(p > 0.8 for p in progress) / len(progress) if progress else 0.0


def breakdown(t: EpisodeTally) -> dict[str, float]:
    """Every term's score (unweighted), in :data:`TERMS` order."""
    return {
        "failure_penalty": failure_penalty(t.failures),
        "throughput_reward": throughput_reward(t.tokens),
        "headroom_bonus": headroom_bonus(t.usage),
        "memory_efficiency": memory_efficiency(t.usage[-1] if t.usage else 0.0, t.overflowed),
        "eviction_quality": eviction_quality(t.evicted_tokens, t.evicted_protected_tokens),
        "latency_penalty": latency_penalty(t.swap_latency_s),
        "risky_eviction_penalty": risky_eviction_penalty(t.evicted_progress),
    }


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The default weights with ``weights`` applied; ConfigError for an unknown term or
    a weight that is not a finite number."""
    out = dict(DEFAULT_WEIGHTS)
    for k, v in weights.items():
        if k not in out:
            raise ConfigError(f"unknown reward term {k!r}; choose from {', '.join(TERMS)}")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"reward weight {k!r} must be a finite number, got {v!r}")
        out[k] = float(v)
    return out


def episode_reward(
    t: EpisodeTally, weights: Mapping[str, float] = DEFAULT_WEIGHTS
) -> tuple[float, dict[str, float]]:
    """The weighted total and the per-term breakdown (unweighted scores), plus the
    weight-0 metrics ``tokens``, ``failures``, ``swap_latency_s``, ``pressure_steps``."""
    w = check_weights(weights)
    terms = breakdown(t)
    total = sum(w[k] * v for k, v in terms.items())
    info: dict[str, float] = dict(terms)
    info["tokens"] = float(t.tokens)
    info["failures"] = float(t.failures)
    info["swap_latency_s"] = t.swap_latency_s
    info["pressure_steps"] = float(sum(u >= PRESSURE_USAGE for u in t.usage))
    return total, info
