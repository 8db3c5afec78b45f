"""The async loop of the default GPU configuration: :class:`~kvlab.sim.async_loop.AsyncLoop`
with its decoding requests kept lazily as a cohort (as :mod:`kvlab.sim.cohort_loop`
does for the synchronous scheduler).

With two batches in flight a decoding request changes the same way at every
*step* (one scheduling of a batch, then the output of the batch before it):
one more token scheduled, one more output token processed, a block every ``B``
steps at a fixed phase. Members of the cohort are kept without touching them
per step: their counters are valid as of the step they were last synced, and
they are *implicit* in the batches in flight (no placeholder or in-flight
entry, no row in a batch's ``scheduled`` list). Two events take no per-member
work:

* a *window*: every running request is a member; up to the batch whose output
  finishes members, the batch scheduled once an arrival is seen, or the last
  batch whose blocks are free (the decisions of
  :meth:`AsyncLoop._window_len_async`, read from the cohort);
* a *lazy step*: the members get their token, the requests after them (prefill,
  or decoding but not members) and the waiting ones go through the scheduler's
  rules, then the output of the batch before is processed: members implicitly,
  the others through :meth:`AsyncLoop._update`.

Anything else (a preemption, a window over requests outside the cohort, more
members than the token budget) dissolves the cohort: every member gets its
counters, placeholder and in-flight entry back, and the batch in flight its
rows; :class:`AsyncLoop`'s own event follows. The decisions, block hand-outs,
stamps, time-series points and records are the async loop's, exactly:
tests/sim/test_async_loop.py compares whole results.

A member ``s``: running, in the running list's prefix; its batch in flight
samples a decode (or its first) token and is its only one; not stale; fresh
output (or prefix caching off); ``s.dz``: the step its counters are valid at
(credited: ``num_computed`` counts the token in flight); ``s.dj``: the step it
joined (before that step it was a row of the batch in flight); its last step
``F = dz + max_out - num_out - 1``: the step whose scheduling leaves it out
(the batch in flight samples its last token) and whose output finishes it.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from inspect import signature
from typing import Any

from kvlab.sim.async_loop import AsyncLoop, Batch
from kvlab.sim.cohort import Cohort, CohortSeq, extent_pool
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.extents import ExtentPool
from kvlab.sim.kv_manager import cdiv
from kvlab.sim.prepare import NEVER
from kvlab.sim.run_state import NO_ARRIVAL
from kvlab.sim.scheduler import StepPlan


class AsyncCohortSeq(CohortSeq):
    """A request of an async cohort run: ``dj`` the step it joined the cohort (set when
    it joins; read for members only)."""

    __slots__ = ("dj",)
    dj: int


class AsyncCohort(Cohort):
    """:class:`~kvlab.sim.cohort.Cohort` with the async loop's step: ``times[d - base]``
    is the start tick of the batch scheduled at step ``d`` (the entry of step ``D``
    is set when that batch is scheduled); a member's blocks are cached up to the
    token before its placeholder; a member leaving at its last step ``F`` was
    scheduled in the steps before ``F`` only."""

    uncached_tokens = 1

    def due(self, step: int) -> list[Any]:
        """The members whose last step is ``step`` (the heap's minimum), unordered."""
        heap, out, stack = self.heap, [], [0]
        n = len(heap)
        while stack:
            i = stack.pop()
            if i < n and heap[i][0] == step:
                out.append(heap[i][2])
                stack += (2 * i + 1, 2 * i + 2)
        return out

    def allocates_at(self, s: Any, step: int) -> bool:
        """Whether member ``s`` takes a block at ``step`` (if scheduled then)."""
        return s.da <= step and (step - s.da) % self.bs == 0

    def finishing(self) -> list[Any]:
        """Pop the members whose last step is before ``D``, in running order, their
        counters one output short of the last (which :meth:`RunState._emit_token`
        adds) and their blocks as of their last step."""
        heap, out = self.heap, []
        bs = self.bs
        while heap and heap[0][0] < self.D:
            last, _, s = heapq.heappop(heap)
            self.cnt[s.da % bs] -= 1
            self.n -= 1
            d = self.D - s.dz  # steps dz .. last: their outputs, all but the last
            self.ctx -= s.num_computed + d + 1
            s.num_computed += d - 1  # (not scheduled at its last step)
            s.num_out += d - 1
            s.num_tokens += d - 1
            self.take_blocks(s, last)
            s.dz = self.D
            out.append(s)
        return out


class AsyncCohortLoop(AsyncLoop):
    """:class:`AsyncLoop` with the decoding requests kept as a cohort (see the module).
    Runs over the extent pool with FCFS scheduling and decode windows on; a run with
    a :attr:`AsyncLoop.batch_observer` takes the async loop's own events."""

    loop_name = "async-cohort"
    #: steps taken with the cohort kept: in its windows, and lazy steps (inspection, tests)
    cohort_batches = 0
    lazy_steps = 0

    def setup(self) -> None:
        self.seq_class = AsyncCohortSeq
        self.cohort = AsyncCohort(self.B, self.cfg.enable_prefix_caching)
        self.pool: ExtentPool = extent_pool(self.kv, self.loop_name)
        #: the batch in flight's first rows that are members (joined this step)
        self.joined = 0
        #: the clock gives a window's batch ends at once, less the host part of each
        cost = self.r.cost
        step_ends = getattr(cost, "step_ends", None)
        self.hidden_ends = step_ends is not None and "extra" in signature(step_ends).parameters
        #: the shortest step such a clock has (its steps only grow with their tokens and
        #: context): when it is at least twice the host part, every batch hides the host
        #: part of the next one, and a window need not check it
        self.host_hidden = self.hidden_ends and cost.step_ticks(0, 0, 0, 0) >= 2 * int(
            getattr(cost, "overhead", 0)
        )

    def run_loop(self) -> None:
        if self.batch_observer is not None:
            super().run_loop()  # every batch through the scheduler, one by one
            return
        sched, co = self.sched, self.cohort
        running = sched.running
        inflight: deque[Batch] = deque()
        host = int(getattr(self.r.cost, "overhead", 0))
        self.gpu_free = 0
        while True:
            if co.n:  # one batch in flight, every member in it
                if self.next_arrival <= self.now:
                    self._arrive()
                if co.n == len(running):
                    if self._cohort_window(inflight, host) or self._lazy_step(inflight, host):
                        self._observe()
                        continue
                elif not self._rest_may_window(inflight[0]) and self._lazy_step(inflight, host):
                    self._observe()
                    continue
                self._dissolve(inflight[0])
            elif not self._take_arrivals(inflight):
                break
            # the async loop's own event (every request explicit)
            if len(inflight) == 1:
                k, fold = self._window_len_async(inflight[0], host)
                if k > 0:
                    self.window_batches += k
                    self.num_windows += 1
                    inflight[0] = self._take_window(k, fold, host)
                    self.joined = 0
                    self._observe()
                    self._join(inflight[0])
                    continue
            if (running or sched.num_waiting()) and self._schedule_next(inflight, host)[1]:
                continue
            if inflight:
                self._process_oldest(inflight)
                self._observe()
                self.joined = 0
                if len(inflight) == 1:
                    self._join(inflight[0])

    # -- joining and leaving -------------------------------------------------------
    def _join(self, batch: Batch) -> None:
        """Make members of the running requests after the members (in order) whose
        only batch in flight, ``batch``, samples a token (its last one too: the member
        then leaves at the step it joined)."""
        if batch.end <= batch.start:
            return
        sched, co = self.sched, self.cohort
        running: list[Any] = sched.running  # AsyncCohortSeq, as the loop makes them
        sch: list[tuple[Any, int]] = batch.scheduled
        samples = batch.samples
        base = co.n
        lim = min(len(sch), len(running) - base)
        if lim <= 0:
            return
        ph, fl, stale = sched.placeholders, sched.in_flight, sched.stale
        caching = co.caching
        j = 0
        while j < lim:
            s, m = sch[j]
            if s is not running[base + j] or not samples[j]:
                break
            i = s.idx
            if (
                s.num_computed != s.num_tokens
                or ph.get(i) != 1
                or fl.get(i) != m
                or (stale and i in stale)
                or (caching and s.lazy_from == NEVER)
            ):
                break
            j += 1
        if not j:
            return
        if not co.n:
            co.start(self.now)
        d = co.D
        for s, _ in sch[:j]:
            co.enter(s)
            s.dj = d
            i = s.idx
            del ph[i], fl[i]
        self.joined = j

    def _dissolve(self, batch: Batch) -> None:
        """Give every member its counters, placeholder and in-flight entry back, and
        the batch in flight (``batch``) its rows."""
        sched, co = self.sched, self.cohort
        ph, fl = sched.placeholders, sched.in_flight
        running: list[Any] = sched.running
        d = co.D
        rows = []
        j = self.joined
        for s, m in batch.scheduled[:j]:
            fl[s.idx] = m
        for s in running[: co.n]:
            co.sync(s)
            i = s.idx
            ph[i] = 1
            if s.dj < d:
                fl[i] = 1
                rows.append((s, 1))
        co.clear()
        if rows:
            batch.scheduled = rows + batch.scheduled
            batch.samples = [True] * len(rows) + batch.samples
        self.joined = 0

    def _rest_may_window(self, batch: Batch) -> bool:
        """Whether the async loop could take a window now with requests outside the
        cohort: each of them a row of the batch in flight, in order, sampling, no
        placeholder but that one, not stale (then the cohort dissolves for it)."""
        sched, co = self.sched, self.cohort
        rest = sched.running[co.n :]
        j = self.joined
        sch = batch.scheduled
        if len(sch) - j != len(rest):
            return False
        ph, stale = sched.placeholders, sched.stale
        for s, (t, _), sample in zip(rest, sch[j:], batch.samples[j:], strict=True):
            if t is not s or not sample or s.num_computed != s.num_tokens:
                return False
            i = s.idx
            if ph.get(i) != 1 or (stale and i in stale):
                return False
        return True

    # -- the cohort's events ---------------------------------------------------------
    def _first_tokens(self, batch: Batch, t: int) -> None:
        """The first tokens the batch's rows that joined this step sample, at ``t``."""
        for s, _ in batch.scheduled[: self.joined]:
            if s.rec.first_token_s is None:
                s.rec.first_token_s = t / TICKS_PER_S

    def _cohort_window(self, inflight: deque[Batch], host: int) -> bool:
        """:meth:`AsyncLoop._window_len_async` and :meth:`AsyncLoop._take_window` with
        every running request a member. False (nothing done) when there is none."""
        sched, co = self.sched, self.cohort
        n = co.n
        if n > sched.max_num_batched_tokens:
            return False
        d = co.D
        f0 = co.heap[0][0]
        last = f0 - d
        k = last + 1
        if sched.num_waiting():
            if sched.can_admit_head(self.now, sched.max_num_batched_tokens - n):
                return False
            k = last
        elif co.heap[-1][0] == f0 and all(e[0] == f0 for e in co.heap):
            k = last  # (every request finishes: the next batch would be empty)
        if k <= 0:
            return False
        s0 = co.ctx
        starts = self._window_starts(n, s0, host, k)
        if starts is None:
            return False
        k = len(starts) - 1  # (each cut keeps a prefix: the arrival's, then the blocks')
        taken = co.taken(k)
        free = self.pool.num_free
        if taken[-1] > free:
            k = bisect_right(taken, free)
            if k <= 0:
                return False
            del taken[k:]
            del starts[k + 1 :]
        fold = k == last + 1
        if fold:  # members at their last step are not scheduled in it
            for s in co.due(f0):
                if co.allocates_at(s, f0):
                    taken[-1] -= 1
        self.window_batches += k
        self.num_windows += 1
        self.cohort_batches += k
        t_last = starts[k - 1] + host
        gpu_free = starts[k] + host
        if taken[-1]:  # batch i (scheduled at step D + i) starts at starts[i]
            self.pool.take_steps(taken, starts[0], starts[1:k])
            co.times[-1] = starts[0]
            starts[k] = 0
            co.advance(starts[1:])
        else:
            co.advance([0] * k)
        if self.joined:
            self._first_tokens(inflight[0], starts[0] + host)
        self.c["num_steps"] += k
        self.now = t_last
        if fold:  # their last batch's output, after the next batch was scheduled
            self._finish_members(t_last)
            n = co.n
            s1 = co.ctx - n  # (credited already)
            self.gpu_free = t_last - host + self.r.cost.step_ticks(n, s1, s1, n)
        else:
            self.gpu_free = gpu_free
        inflight[0].reset(t_last - host, self.gpu_free)  # (nothing else holds it)
        self.joined = 0
        return True

    def _window_starts(self, n: int, s0: int, host: int, k: int) -> list[int] | None:
        """When batches 0 .. k' of the window start (k' the window's length, cut before
        the batch scheduled once an arrival is seen): ``end(m) - host`` for m = 0 ..
        k', with ``end`` as :meth:`AsyncLoop._clock` (batch m + 1 starts at
        ``end(m) - host``; batch 0 is the one in flight). None where the clock has
        no window."""
        cost = self.r.cost
        if not self.hidden_ends:
            clock = self._clock(n, s0, host, k)
            if clock is None:
                return None
            end = clock[1]
            return [end(m) - host for m in range(clock[0] + 1)]
        g0 = self.gpu_free
        if g0 - host < self.now or (
            not self.host_hidden and cost.step_ticks(n, s0, s0, n) < 2 * host
        ):
            return None
        t0 = g0 - host
        arrival, deadline = self.next_arrival, 0
        if arrival != NO_ARRIVAL and k > 1:  # batch m + 1 is scheduled after end(m - 1)
            deadline = arrival - host
            if deadline <= t0:
                k, deadline = 1, 0
        starts = cost.step_ends(n, s0, k, t0, deadline, host, 1)  # type: ignore[attr-defined]
        starts.insert(0, t0)
        return starts

    def _finish_members(self, now: int) -> None:
        done = self.cohort.finishing()
        if done:
            kv = self.kv
            running = self.sched.running
            for s in done:
                kv.cache_upto(s, s.num_computed, now)
                self._emit_token(s)
                running.remove(s)  # (identity comes first in list.remove)

    def _lazy_step(self, inflight: deque[Batch], host: int) -> bool:
        """One step with the cohort kept: schedule a batch (members implicit, the rest
        through the scheduler's rules, then admissions), process the output of the
        batch before. False (nothing done) when it would preempt, or schedule no member."""
        sched, co, pool, kv = self.sched, self.cohort, self.pool, self.kv
        running: list[Any] = sched.running
        d = co.D
        fin = co.due(d) if co.heap[0][0] == d else []
        m_sched = co.n - len(fin)
        budget = sched.max_num_batched_tokens - m_sched
        if m_sched <= 0 or budget < 0:
            return False
        bs = self.B
        allocs = co.cnt[d % bs]
        for s in fin:
            if co.allocates_at(s, d):
                allocs -= 1
        free = pool.num_free - allocs
        mml = self.r.max_model_len
        ph = sched.placeholders
        rest = []  # the scheduler's loop after the members
        for s in running[co.n :] if co.n < len(running) else ():
            if budget <= 0:
                break
            c = s.num_computed
            p = ph.get(s.idx, 0)
            if p > 0 and c + 2 - p >= s.prompt_len + s.req.output_tokens:
                continue  # its batch in flight samples its last token
            m = s.num_tokens + p - c
            if m > budget:
                m = budget
            if m > mml - c - 1:
                m = mml - c - 1
            if m <= 0:
                continue
            need = cdiv(min(c + m, mml), bs) - s.nblocks
            if need > 0:
                free -= need
            rest.append((s, m))
            budget -= m
        if free < 0:  # a block would be missing: preemption, the general path
            return False
        now = self.now
        t0 = max(now, self.gpu_free - host)
        self.now = t0  # the batch's own time, for its admissions and block stamps
        co.times[-1] = t0
        if allocs:
            pool.take(allocs, t0)
        for s, m in rest:
            kv.extend(s, m, t0)
        plan = StepPlan(rest)
        sched.admit_waiting(plan, budget, t0)
        load = self._admitted(plan)
        self.now = now
        samples = sched.after_schedule(plan)
        tokens = m_sched
        attn = co.ctx
        for s in fin:
            attn -= s.num_computed + (d - s.dz) + 1
        kv_read = attn
        for s, m in plan.scheduled:
            ctx = s.num_computed
            tokens += m
            attn += m * ctx
            kv_read += ctx
        seqs = m_sched + len(plan.scheduled)
        end = t0 + self.r.cost.step_ticks(tokens, attn, kv_read, seqs) + load
        self.c["num_steps"] += 1
        self.lazy_steps += 1
        co.advance([0])
        self.gpu_free = end
        old = inflight.pop()
        inflight.appendleft(Batch(plan, samples, t0, end))
        # the output of the batch before
        if old.end > self.now:
            self.now = old.end
        j = self.joined
        if j:
            self._first_tokens(old, self.now)
        if fin:
            self._finish_members(self.now)
        if j < len(old.scheduled):
            if j:
                old.scheduled = old.scheduled[j:]
                old.samples = old.samples[j:]
            self._update(old)
        self.joined = 0
        if co.n < len(running) and inflight[0].scheduled:
            self._join(inflight[0])
        return True
