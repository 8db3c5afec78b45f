"""The simulator's step loop, stopping at decision points and resuming: the engine
side of an environment that acts *during* a run (``kvlab/KVPressure-v0``'s base).

:class:`SteppedLoop` is :class:`kvlab.sim.step_loop.StepLoop` with its event loop cut
into :meth:`SteppedLoop.advance_until`: it runs engine events (one exact step or one
decode window, as the step loop takes them) until a predicate holds after an event,
and returns control; calling it again resumes where it stopped. Run to the end with a
predicate that never holds, it makes exactly the events :meth:`StepLoop.run_loop`
makes (a test compares every record). Between calls the caller may act on the engine:
:meth:`SteppedLoop.preempt` preempts a running request by recompute (its blocks are
freed, the request goes back to the waiting queue, as the scheduler's own preemption
does).

:func:`stepped_engine` builds an :class:`kvlab.sim.engine.Engine` with this loop.

Invariant: after :meth:`advance_until` returns False the workload is done and
:meth:`SteppedLoop.result` may be taken (once).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kvlab.errors import ConfigError
from kvlab.results import RunResult
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import Engine
from kvlab.sim.run_state import NO_ARRIVAL
from kvlab.sim.sequence import Seq
from kvlab.sim.step_loop import StepLoop
from kvlab.workload.records import Workload


class SteppedLoop(StepLoop):
    """The step loop, advanced by the caller (see module doc)."""

    loop_name = "step"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.num_events = 0
        self.num_forced_preemptions = 0
        self._wall_s = 0.0

    def advance_until(self, stop: Callable[[SteppedLoop], bool]) -> bool:
        """Run events until ``stop(self)`` holds after one (True) or the workload is
        done (False)."""
        sched = self.sched
        wall0 = time.perf_counter()
        try:
            while True:
                if self.next_arrival <= self.now:
                    self._arrive()
                if not sched.running and not sched.num_waiting():
                    if self.next_arrival == NO_ARRIVAL:
                        return False
                    self.now = self.next_arrival
                    continue
                self._general_event()
                self.num_events += 1
                if stop(self):
                    return True
        finally:
            self._wall_s += time.perf_counter() - wall0

    def run_loop(self) -> None:
        self.advance_until(_never)

    def preempt(self, seq: Seq) -> int:
        """Preempt running ``seq`` by recompute; the blocks it freed (its cached ones
        stay in the prefix cache, evictable)."""
        running = self.sched.running
        if seq not in running:
            raise ValueError(f"request {seq.req.request_id!r} is not running")
        before = self.kv.num_free
        running.remove(seq)
        self.sched._preempt(seq, self.now)
        self.num_forced_preemptions += 1
        return self.kv.num_free - before

    def result(self) -> RunResult:
        """The run's result (after :meth:`advance_until` returned False)."""
        return self._result(self._wall_s)


def _never(loop: SteppedLoop) -> bool:
    return False


def stepped_engine(workload: Workload, cfg: SimConfig) -> tuple[Engine, SteppedLoop]:
    """An engine on ``workload`` whose loop is a :class:`SteppedLoop` (the per-block or
    extent pool ``cfg`` asks for; priority or FCFS scheduling)."""
    if cfg.workers > 1:
        raise ConfigError("a stepped engine runs in one process (workers=1)")
    engine = Engine(workload, cfg, loop_class=SteppedLoop)
    loop = engine.loop
    assert isinstance(loop, SteppedLoop)
    return engine, loop
