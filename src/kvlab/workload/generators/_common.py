"""Shared pieces of the workload generators: common parameters, lengths, ordering."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from kvlab.errors import ConfigError
from kvlab.workload.generators.arrivals import ARRIVAL_PROCESSES, start_times, think_times
from kvlab.workload.records import MAX_TOKENS, Request, Segment

#: The most requests a generator may be asked for (its sessions times its per-session
#: counts, :attr:`CommonParams.PER_SESSION`); larger requests are refused before any work.
MAX_GENERATED_REQUESTS = 10_000_000
#: The bound on sessions x (per-session count)^2, the segment references a shape whose
#: prompts re-send the session's history holds (memory grows with the square of the turns).
MAX_HISTORY_REFERENCES = 200_000_000
#: The largest value of a float parameter (seconds, rates, shapes); 1e9 s is 31 years.
MAX_FLOAT_PARAM = 1e9
#: The smallest positive rate or gamma shape (a smaller one gives gaps of over 31 years).
MIN_RATE = 1e-9
#: The largest ``length_cv`` (beyond it lognormal draws overflow).
MAX_LENGTH_CV = 10.0


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
    #: Integer fields that multiply the requests of one session (their product with
    #: ``sessions`` bounds the requests generated).
    PER_SESSION: ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        """Every number in range, checked before any work (see the module constants):
        numeric fields >= 0 (:attr:`POSITIVE` >= 1), floats finite and at most
        :data:`MAX_FLOAT_PARAM`, ``*_tokens`` at most MAX_TOKENS, ``*_fraction`` at most 1,
        and the generated requests bounded by :data:`MAX_GENERATED_REQUESTS`."""
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
            hi = _upper_bound(f.name, v)
            if not v <= hi:
                limit = f"{hi:,}" if isinstance(hi, int) else f"{hi:g}"
                raise ConfigError(f"parameter {f.name} must be <= {limit}, got {v:g}")
        for name in ("rate_per_s", "burstiness"):
            v = getattr(self, name)
            if 0 < v < MIN_RATE:
                raise ConfigError(f"parameter {name} must be 0 or >= {MIN_RATE:g}, got {v:g}")
        per_session = math.prod(getattr(self, n) for n in self.PER_SESSION)
        if self.sessions * per_session > MAX_GENERATED_REQUESTS:
            names = " x ".join(("sessions", *self.PER_SESSION))
            raise ConfigError(
                f"parameters {names} ask for up to {self.sessions * per_session:,} requests, "
                f"above the limit {MAX_GENERATED_REQUESTS:,}; lower them"
            )
        if self.sessions * per_session**2 > MAX_HISTORY_REFERENCES:
            names = ", ".join(self.PER_SESSION)
            raise ConfigError(
                f"parameters sessions x ({names})^2 = {self.sessions * per_session**2:,} "
                f"is above the limit {MAX_HISTORY_REFERENCES:,} (every request re-sends its "
                "session's history); lower them"
            )

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


def _upper_bound(name: str, value: float) -> int | float:
    """The largest value parameter ``name`` may take (see :meth:`CommonParams.check`)."""
    if name.endswith("_tokens"):
        return MAX_TOKENS
    if name.endswith("_fraction"):
        return 1.0
    if name == "length_cv":
        return MAX_LENGTH_CV
    if name == "sessions":
        return MAX_GENERATED_REQUESTS
    if isinstance(value, float):
        return MAX_FLOAT_PARAM
    return MAX_GENERATED_REQUESTS


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
    return [max(minimum, int(v)) for v in np.rint(np.minimum(x, MAX_TOKENS))]


def seg(kind: str, tokens: int, content: str, retention: str = "context") -> Segment:
    return Segment(kind=kind, tokens=int(tokens), content_id=content, retention=retention)


def nonzero(segments: Sequence[Segment]) -> tuple[Segment, ...]:
    """Drop zero-length segments (a parameter set to 0 removes its segment)."""
    return tuple(s for s in segments if s.tokens > 0)


def in_run_order(requests: Sequence[Request]) -> tuple[Request, ...]:
    """Stable order by start time; a closed-loop turn stays after its session's previous turn."""
    from kvlab.workload.io import check_order

    return check_order(enumerate(requests, start=1), sort=True)


__all__ = [
    "MAX_FLOAT_PARAM",
    "MAX_GENERATED_REQUESTS",
    "MAX_HISTORY_REFERENCES",
    "MAX_LENGTH_CV",
    "MIN_RATE",
    "CommonParams",
    "draw_lengths",
    "in_run_order",
    "nonzero",
    "seg",
]
