"""The engine loop of the default configuration: decoding requests advanced
lazily as a cohort (:mod:`kvlab.sim.cohort`) over the extent pool.

Most events of a serving run are decode steps in which nothing but the decoding
requests changes. This loop keeps those requests in a :class:`~kvlab.sim.cohort.Cohort`
and takes its two most frequent events without touching each request:

* a *cohort window*: every running request decodes, nobody can be admitted; up
  to the next finish or arrival, or the last step whose blocks are free;
* a *lazy step*: the members decode, the requests in prefill after them get
  their chunks and waiting ones are admitted (the scheduler's
  :meth:`~kvlab.sim.scheduler.Scheduler.admit_waiting`).

Anything else (a preemption, a window over shared-output requests, more members
than the token budget) dissolves the cohort and goes through
:class:`~kvlab.sim.step_loop.StepLoop`'s event for that step. The decisions are
the step loop's, exactly: tests/sim/test_extents.py runs both on randomized
workloads and compares every output.

Used when the KV cache is the extent pool, scheduling is FCFS and decode
windows are on (not ``exact_steps``); :func:`kvlab.sim.engine.choose_loop`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from kvlab.sim.cohort import Cohort, CohortSeq, extent_pool
from kvlab.sim.extents import ExtentPool, Hit
from kvlab.sim.kv_manager import cdiv
from kvlab.sim.run_state import NO_ARRIVAL
from kvlab.sim.scheduler import StepPlan
from kvlab.sim.sequence import Seq
from kvlab.sim.step_loop import StepLoop


class CohortLoop(StepLoop):
    """:class:`StepLoop` with the decoding requests kept as a cohort (see the module)."""

    loop_name = "cohort"

    def setup(self) -> None:
        self.seq_class = CohortSeq
        self.cohort = Cohort(self.B, self.cfg.enable_prefix_caching)
        self.pool: ExtentPool = extent_pool(self.kv, self.loop_name)
        #: the clock's step ends up to a deadline, when it has them (RooflineCost)
        self.step_ends = getattr(self.r.cost, "step_ends", None)

    def run_loop(self) -> None:
        """The main loop with the cohort: :meth:`_lazy_event` with its most frequent
        cases taken first (a window, a decode + admission step), the general path
        when it declines."""
        sched, co = self.sched, self.cohort
        running, waiting = sched.running, sched.waiting
        budget = self.r.max_num_batched_tokens
        while True:
            now = self.now
            if self.next_arrival <= now:
                self._arrive()
            n = len(running)
            if not n and not waiting:
                if self.next_arrival == NO_ARRIVAL:
                    return
                self.now = self.next_arrival
                continue
            general = False
            if n and co.n == n and n <= budget:
                hit = sched.probe_head(now, budget - n) if waiting else None
                if hit is not None:
                    if self._lazy_step(budget - n, None if hit is True else hit):
                        self._observe()
                        continue
                    general = True  # the cohort dissolved: the general path
                elif self._cohort_window(n):
                    self._observe()
                    continue
            if not general and self._lazy_event():
                self._observe()
                continue
            self._general_event()

    def _lazy_event(self) -> bool:
        """One event of the fast path: a decode window of the cohort, or one step in
        which the members decode, the requests after them (in prefill) get their
        chunks and waiting ones are admitted. False (cohort dissolved) when the
        step needs the general path: a preemption, a window over requests outside
        the cohort (shared output), more members than the token budget.

        Takes the same decisions as :meth:`_window_len` + :meth:`_macro_step` and
        :meth:`_step` would (a differential test runs both). Members always come
        first in the running list (they enter in running order).
        """
        co, sched = self.cohort, self.sched
        running: list[Any] = sched.running  # CohortSeq, as the loop makes them
        n = len(running)
        if n == 0:
            return False
        if co.n == 0:
            co.start(self.now)
            for s in running:
                if not co.eligible(s):
                    break
                co.enter(s)
        budget = self.r.max_num_batched_tokens
        if co.n > budget:
            co.dissolve(running)
            return False
        now = self.now
        if co.n != n:
            for s in running[co.n :]:
                if s.num_computed != s.num_tokens - 1 or s.rec.first_token_s is None:
                    return self._lazy_step(budget - co.n)
            co.dissolve(running)  # all decode: the general path takes a window
            return False
        if sched.num_waiting() and sched.can_admit_head(now, budget - n):
            return self._lazy_step(budget - n)
        if self._cohort_window(n):
            return True
        co.dissolve(running)  # not even one step's blocks are free: it preempts
        return False

    def _cohort_window(self, n: int) -> bool:
        """Run the ``n`` members (all running) through a decode window: up to the
        next finish, no step starting at or after the next arrival, no more blocks
        than are free. False (nothing done) when not even one step fits."""
        co, pool, now = self.cohort, self.pool, self.now
        k = co.steps_to_finish()
        cost, s0 = self.r.cost, co.ctx
        deadline = self.next_arrival if self.next_arrival != NO_ARRIVAL else 0
        if self.step_ends is not None:
            ends = self.step_ends(n, s0, k, now, deadline)
            k = len(ends)
        else:  # steps only grow, so the first one bounds how many start before it
            if deadline:
                k = min(k, -(-(deadline - now) // cost.window_ticks(n, s0, 1)))
            ends = [now + cost.window_ticks(n, s0, i) for i in range(1, k + 1)]
            if deadline and ends[-1] > deadline:  # steps starting before the arrival
                k = bisect_left(ends, deadline, 0, k - 1) + 1
        taken = co.taken(k)
        if taken[-1] > pool.clean + pool.queued:  # up to the last step whose blocks fit
            k = bisect_right(taken, pool.clean + pool.queued)
            if k <= 0:
                return False
            del taken[k:]
        if k < len(ends):
            del ends[k:]
        pool.take_steps(taken, now, ends)
        co.advance(ends)
        self.now = ends[-1]
        self.c["num_steps"] += k
        if co.heap[0][0] < co.D:
            self._finish_members()
        return True

    def _lazy_step(self, budget: int, head_hit: Hit | None = None) -> bool:
        """One exact step (see :meth:`_lazy_event`); ``budget``: tokens after the members';
        ``head_hit``: the waiting head's lookup at the start of the step, if made."""
        co, sched, pool, kv = self.cohort, self.sched, self.pool, self.kv
        running: list[Any] = sched.running  # CohortSeq, as the loop makes them
        allocs = co.cnt[co.D % co.bs]
        free = pool.num_free - allocs
        mml, bs = self.r.max_model_len, self.B
        rest: list[tuple[Seq, int]] = []  # the scheduler's loop after the members
        for s in running[co.n :] if co.n < len(running) else ():
            if budget <= 0:
                break
            c = s.num_computed
            m = s.num_tokens - c
            if m > budget:
                m = budget
            if m > mml - c - 1:
                m = mml - c - 1
            if m > 0:
                need = cdiv(min(c + m, mml), bs) - s.nblocks
                if need > 0:
                    free -= need
                rest.append((s, m))
                budget -= m
        if free < 0:  # a block would be missing: preemption, the general path
            co.dissolve(running)
            return False
        now = self.now
        evicted = pool.num_evicted
        if allocs:
            pool.take(allocs, now)
        plan = StepPlan(scheduled=rest)
        for s, m in rest:
            kv.extend(s, m, now)
        if head_hit is not None and (rest or (head_hit.n and pool.num_evicted != evicted)):
            head_hit = None  # blocks were cached or evicted since: look it up again
        sched.admit_waiting(plan, budget, now, head_hit)
        if not co.n and not plan.scheduled:
            return False  # nothing changed: the general path says why
        tokens = co.n
        attn = kv_read = co.ctx
        for seq, c in plan.scheduled:
            ctx = seq.num_computed + c
            tokens += c
            attn += c * ctx
            kv_read += ctx
        seqs = co.n + len(plan.scheduled)
        self.now = now + self.r.cost.step_ticks(tokens, attn, kv_read, seqs) + self._admitted(plan)
        self.c["num_steps"] += 1
        co.advance([self.now])
        if co.heap and co.heap[0][0] < co.D:
            self._finish_members()
        self._advance(plan.scheduled)
        if co.n < len(running):
            for s in running[co.n :]:
                if not co.eligible(s):
                    break
                co.enter(s)
        return True

    def _finish_members(self) -> None:
        done = self.cohort.finishing()
        if done:
            running = self.sched.running
            for s in done:
                self._finish(s)
                running.remove(s)  # (identity comes first in list.remove)
