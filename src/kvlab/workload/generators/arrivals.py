"""Arrival processes for generated workloads.

* ``poisson``: exponential gaps with mean ``1 / rate_per_s``.
* ``gamma``: gamma gaps with shape ``burstiness`` and the same mean
  (scale ``1 / (rate_per_s * burstiness)``); burstiness 1 is Poisson, below 1
  is burstier (coefficient of variation ``1 / sqrt(burstiness)``), above 1 is
  more regular. Same parametrisation as vLLM's ``benchmarks/serve`` request
  generator.
* ``closed``: closed-loop users: every session starts within ``ramp_s`` of
  time 0 (uniformly), and each later request waits for the previous response
  of its session plus a think time.

Think times are exponential with mean ``think_time_s`` (0 means none).
"""

from __future__ import annotations

import numpy as np

from kvlab.errors import ConfigError

ARRIVAL_PROCESSES: tuple[str, ...] = ("poisson", "gamma", "closed")


def start_times(
    rng: np.random.Generator,
    n: int,
    *,
    process: str = "poisson",
    rate_per_s: float = 1.0,
    burstiness: float = 1.0,
    ramp_s: float = 0.0,
) -> np.ndarray:
    """``n`` non-decreasing start times in seconds; the first is 0 for open-loop processes."""
    if process not in ARRIVAL_PROCESSES:
        raise ConfigError(
            f"unknown arrival process {process!r}; choose one of {', '.join(ARRIVAL_PROCESSES)}"
        )
    if n <= 0:
        return np.zeros(0)
    if process == "closed":
        if ramp_s < 0:
            raise ConfigError(f"ramp_s must be >= 0, got {ramp_s}")
        return np.sort(rng.uniform(0.0, ramp_s, size=n)) if ramp_s > 0 else np.zeros(n)
    if not rate_per_s > 0:
        raise ConfigError(f"rate_per_s must be > 0 for {process} arrivals, got {rate_per_s}")
    if process == "poisson":
        gaps = rng.exponential(1.0 / rate_per_s, size=n - 1)
    else:
        if not burstiness > 0:
            raise ConfigError(f"burstiness must be > 0, got {burstiness}")
        gaps = rng.gamma(burstiness, 1.0 / (rate_per_s * burstiness), size=n - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def think_times(rng: np.random.Generator, n: int, mean_s: float) -> np.ndarray:
    """``n`` exponential think times with mean ``mean_s`` (all zero when ``mean_s`` is 0)."""
    if mean_s < 0:
        raise ConfigError(f"think_time_s must be >= 0, got {mean_s}")
    if mean_s == 0:
        return np.zeros(n)
    return rng.exponential(mean_s, size=n)


__all__ = ["ARRIVAL_PROCESSES", "start_times", "think_times"]
