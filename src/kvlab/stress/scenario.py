"""A stress scenario as a kvlab workload, prepared once per shape and block size.

Requests and clients (see :mod:`kvlab.stress.matrix` for the fields):

* client ``c`` (of ``concurrency``) owns ``batch`` slots; each slot is one session of
  ``rounds`` requests, so a client submits ``batch`` requests together;
* ``closed``: every client's first batch arrives at 0 and a slot sends its next
  request the moment the previous one ends (think time 0); ``uniform``: client ``c``
  starts at ``c * ramp_s / concurrency``, then closed loop; ``poisson``: open loop,
  the ``concurrency * rounds`` batches arrive at the times of a Poisson process of
  ``rate_per_s`` batches per second (seeded by ``seed``);
* a prompt is ``floor(shared_prefix * seq_len)`` tokens of one shared system prompt
  followed by the rest, unique to the request, so prefix hits come only from the
  shared part (0 when nothing is shared: no hit rate is assumed).

:class:`WorkloadCache` keeps the prepared workload of each shape, so the runs of a
search, a what-if or a curve on one shape name the block keys once
(:func:`kvlab.sim.prepare.prepare`).
"""

from __future__ import annotations

from typing import Any

from kvlab.stress.matrix import Scenario
from kvlab.workload.records import Request, Segment, Workload

#: The scenario fields that decide the workload (everything else is engine config).
SHAPE_FIELDS = (
    "batch",
    "seq_len",
    "gen_len",
    "concurrency",
    "rounds",
    "shared_prefix",
    "arrival",
    "rate_per_s",
    "ramp_s",
    "seed",
)


def shape_key(s: Scenario) -> tuple[Any, ...]:
    return tuple(getattr(s, f) for f in SHAPE_FIELDS)


def build_workload(s: Scenario) -> Workload:
    """The requests of scenario ``s`` (ids ``c{client}.b{slot}.r{round}``)."""
    shared = int(s.shared_prefix * s.seq_len)
    system = Segment("system", shared, "stress-system", "system") if shared else None
    own = s.seq_len - shared

    def request(c: int, b: int, r: int, **timing: Any) -> Request:
        rid = f"c{c}.b{b}.r{r}"
        segs: tuple[Segment, ...] = (Segment("user", own, f"stress-{rid}"),)
        if system is not None:
            segs = (system, *segs) if own else (system,)
        return Request(rid, segs, s.gen_len, cls=f"seq{s.seq_len}", **timing)

    reqs: list[Request] = []
    if s.arrival == "poisson":
        times = poisson_times(s)
        k = 0
        for r in range(s.rounds):
            for c in range(s.concurrency):
                t = float(times[k])
                k += 1
                reqs += [request(c, b, r, arrival_s=t) for b in range(s.batch)]
        return Workload(tuple(reqs), name=s.name, meta={"stress": s.to_dict()})
    for r in range(s.rounds):
        for c in range(s.concurrency):
            start = c * s.ramp_s / s.concurrency if s.arrival == "uniform" else 0.0
            for b in range(s.batch):
                timing: dict[str, Any] = (
                    {"arrival_s": start} if r == 0 else {"arrival_s": None, "think_time_s": 0.0}
                )
                reqs.append(request(c, b, r, session_id=f"c{c}.b{b}", turn=r, **timing))
    return Workload(tuple(reqs), name=s.name, meta={"stress": s.to_dict()})


def poisson_times(s: Scenario) -> list[float]:
    """The arrival times of ``s``'s batches under ``arrival: poisson``, in order."""
    import numpy as np

    if s.rate_per_s is None:
        raise ValueError("a poisson scenario needs rate_per_s")
    rng = np.random.default_rng(s.seed)
    n = s.concurrency * s.rounds
    return [float(t) for t in np.cumsum(rng.exponential(1.0 / s.rate_per_s, size=n))]


class WorkloadCache:
    """Prepared workloads by (shape, block size); ``num_prepared`` counts preparations."""

    def __init__(self) -> None:
        self._prepared: dict[tuple[Any, ...], Any] = {}
        self.num_prepared = 0

    def get(self, s: Scenario, block_size: int) -> Any:
        key = (*shape_key(s), block_size)
        p = self._prepared.get(key)
        if p is None:
            from kvlab.sim.prepare import prepare

            p = self._prepared[key] = prepare(build_workload(s), block_size=block_size)
            self.num_prepared += 1
        return p
