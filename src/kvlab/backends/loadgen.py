"""Load modes: when each request of a workload is sent.

A workload is cut into *jobs*: ordered lists of requests that must run one
after another (the turns of a session). Within a job, a request is sent when
the previous one finished plus its ``think_time_s`` (0 when it has none).
Jobs themselves start according to the mode:

``closed``
    ``concurrency`` workers each take the next job when their last one ends;
    a job is a whole session (or one request). Workload arrival times are
    ignored.
``rate``
    job start times form a renewal process of ``rate_per_s`` (Poisson when
    ``burstiness`` is 1, gamma-distributed gaps of shape ``burstiness``
    otherwise: below 1 burstier, above 1 more regular), drawn from a seeded
    generator; optionally at most ``max_concurrency`` requests in flight.
``trace``
    every request with an ``arrival_s`` starts a job at that time; a request
    with only ``think_time_s`` follows the previous request of its session.
``sessions``
    a job is a whole session starting at its first turn's ``arrival_s``;
    later turns always wait for the previous answer (their own
    ``arrival_s`` is ignored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kvlab.errors import ConfigError
from kvlab.workload.records import Request

LOAD_MODES: tuple[str, ...] = ("closed", "rate", "trace", "sessions")


@dataclass(frozen=True, slots=True)
class Job:
    """Requests sent one after another; ``start_s`` is the first one's scheduled
    send time (``None`` in closed mode, where a free worker starts it)."""

    requests: tuple[Request, ...]
    start_s: float | None


def _by_session(requests: Sequence[Request]) -> list[list[Request]]:
    groups: dict[str, list[Request]] = {}
    out: list[list[Request]] = []
    for r in requests:
        if r.session_id is None:
            out.append([r])
            continue
        g = groups.get(r.session_id)
        if g is None:
            g = groups[r.session_id] = []
            out.append(g)
        g.append(r)
    return out


def _trace_jobs(requests: Sequence[Request]) -> list[Job]:
    open_job: dict[str, list[Request]] = {}
    jobs: list[list[Request]] = []
    for r in requests:
        if r.arrival_s is not None or r.session_id is None:
            g = [r]
            jobs.append(g)
            if r.session_id is not None:
                open_job[r.session_id] = g
        else:
            g2 = open_job.get(r.session_id)
            if g2 is None:  # a think-time turn with nothing before it: start at 0
                g2 = open_job[r.session_id] = []
                jobs.append(g2)
            g2.append(r)
    return [Job(tuple(g), g[0].arrival_s or 0.0) for g in jobs]


def rate_arrivals(
    num: int, rate_per_s: float, burstiness: float, rng: np.random.Generator
) -> np.ndarray:
    """``num`` start times of a renewal process with mean rate ``rate_per_s``.

    Gaps are gamma(shape=burstiness, scale=1/(rate*burstiness)), whose mean is
    1/rate and whose squared coefficient of variation is 1/burstiness
    (burstiness 1 is Poisson), as in vLLM's benchmark_serving request_rate.
    The first request is sent at its first gap, not at 0.
    """
    if rate_per_s <= 0 or burstiness <= 0:
        raise ConfigError("--rate and --burstiness must be > 0")
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate_per_s * burstiness), size=num)
    return np.cumsum(gaps)


def build_jobs(
    requests: Sequence[Request],
    mode: str,
    *,
    rate_per_s: float | None = None,
    burstiness: float = 1.0,
    seed: int = 0,
) -> list[Job]:
    """The jobs of ``requests`` in ``mode`` (see the module docstring)."""
    if mode == "trace":
        jobs = _trace_jobs(requests)
        return sorted(jobs, key=lambda j: j.start_s or 0.0)
    groups = _by_session(requests)
    if mode == "closed":
        return [Job(tuple(g), None) for g in groups]
    if mode == "sessions":
        jobs = [Job(tuple(g), g[0].arrival_s or 0.0) for g in groups]
        return sorted(jobs, key=lambda j: j.start_s or 0.0)
    if mode == "rate":
        if rate_per_s is None:
            raise ConfigError("--mode rate needs --rate REQUESTS_PER_S")
        starts = rate_arrivals(len(groups), rate_per_s, burstiness, np.random.default_rng(seed))
        return [Job(tuple(g), float(t)) for g, t in zip(groups, starts, strict=True)]
    raise ConfigError(f"unknown load mode {mode!r}; choose one of {', '.join(LOAD_MODES)}")


__all__ = ["LOAD_MODES", "Job", "build_jobs", "rate_arrivals"]
