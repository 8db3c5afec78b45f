"""Shared pieces of the workload generators: common parameters, lengths, ordering."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from kvlab.errors import ConfigError
from kvlab.workload.generators.arrivals import ARRIVAL_PROCESSES, start_times, think_times
from kvlab.workload.records import Request, Segment


@dataclass(frozen=True)
class CommonParams:
    """Parameters every shape has.

    ``sessions`` is the number of sessions (users, tasks); for single-request
    shapes (mixed, rag) it is the number of requests. Session start times
    follow ``arrival`` (poisson, gamma with ``burstiness``, or closed: all
    within ``ramp_s`` of 0); a later request of a session is sent
    ``think_time_s`` (exponential mean) after the previous response.
    ``length_cv`` is the coefficient of variation of drawn lengths (0: every
    length equals its mean).
    """

    sessions: int = 16
    arrival: str = "poisson"
    rate_per_s: float = 1.0
    burstiness: float = 1.0
    ramp_s: float = 0.0
    think_time_s: float = 2.0
    length_cv: float = 0.5

    #: Fields that must be >= 1 (others numeric must be >= 0).
    POSITIVE: ClassVar[tuple[str, ...]] = ("sessions",)

    def check(self) -> None:
        if self.arrival not in ARRIVAL_PROCESSES:
            raise ConfigError(
                f"unknown arrival {self.arrival!r}; choose one of {', '.join(ARRIVAL_PROCESSES)}"
            )
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            lo = 1 if f.name in self.POSITIVE else 0
            if not v >= lo:
                raise ConfigError(f"parameter {f.name} must be >= {lo}, got {v}")

    def starts(self, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
        return start_times(
            rng,
            self.sessions if n is None else n,
            process=self.arrival,
            rate_per_s=self.rate_per_s,
            burstiness=self.burstiness,
            ramp_s=self.ramp_s,
        )

    def thinks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return think_times(rng, n, self.think_time_s)

    def lengths(
        self, rng: np.random.Generator, mean: float, n: int, *, minimum: int = 1
    ) -> list[int]:
        return draw_lengths(rng, mean, n, cv=self.length_cv, minimum=minimum)


def draw_lengths(
    rng: np.random.Generator, mean: float, n: int, *, cv: float = 0.5, minimum: int = 1
) -> list[int]:
    """``n`` lognormal token counts with the given mean and coefficient of variation.

    sigma^2 = ln(1 + cv^2), mu = ln(mean) - sigma^2 / 2 (so E[X] = mean);
    rounded, at least ``minimum``. ``cv == 0`` gives ``round(mean)`` exactly.
    """
    if cv == 0 or mean <= 0:
        return [max(minimum, round(mean))] * n
    sigma2 = float(np.log1p(cv * cv))
    mu = float(np.log(mean)) - sigma2 / 2
    x = rng.lognormal(mu, np.sqrt(sigma2), size=n)
    return [max(minimum, int(v)) for v in np.rint(x)]


def seg(kind: str, tokens: int, content: str, retention: str = "context") -> Segment:
    return Segment(kind=kind, tokens=int(tokens), content_id=content, retention=retention)


def nonzero(segments: Sequence[Segment]) -> tuple[Segment, ...]:
    """Drop zero-length segments (a parameter set to 0 removes its segment)."""
    return tuple(s for s in segments if s.tokens > 0)


def in_run_order(requests: Sequence[Request]) -> tuple[Request, ...]:
    """Stable order by start time; a closed-loop turn stays after its session's previous turn."""
    from kvlab.workload.io import check_order

    return check_order(enumerate(requests, start=1), sort=True)


__all__ = ["CommonParams", "draw_lengths", "in_run_order", "nonzero", "seg"]
