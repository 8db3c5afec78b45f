"""Async scheduling: vLLM's ``AsyncScheduler`` driven as its engine core drives it
(``vllm/v1/core/sched/async_scheduler.py``, ``EngineCore.step_with_batch_queue``).

Two batches are in flight. The engine schedules batch k+1 while batch k runs, before
k's sampled tokens are known, then waits for batch k and processes its output. So:

* **placeholders**: a request whose batch will sample a token gets an output
  placeholder at once (``placeholders[idx]``), and the next batch already schedules
  the token after it, whose value is not known yet; a request is not scheduled
  again once its batch in flight will sample its last token;
* **outputs one batch later**: a sampled token is appended (and the blocks it
  completes cached, up to ``num_computed - placeholders``) when its batch's output
  is processed, after the next batch was scheduled; blocks are cached at
  scheduling only up to the tokens known then;
* **arrivals join a batch later**: a request that arrives while batch k runs is
  first seen by the scheduling of batch k+2 (k+1 was scheduled before it arrived);
* **finished requests are freed a batch later**: their blocks return to the pool
  when their last batch's output is processed, after the next batch was scheduled;
* **preemption with a batch in flight**: the request is reset at once; the tokens
  of its batch in flight are *stale*: the token sampled is still appended (it may
  even finish the request while it waits) but neither uses nor caches anything.

The clock (what the cost model does): a batch is one step of the cost model,
``step_ticks`` long, whose first ``overhead`` ticks are host work (scheduling,
input preparation) and the rest GPU time. Synchronously the steps follow one
another. Here the host part of a batch overlaps the GPU part of the batch before
it: the batch scheduled when the engine has processed the output of the batch
before the one in flight (time ``now``) starts at
``t0 = max(now, gpu_free - overhead)`` and ends at ``t0 + step_ticks``
(``gpu_free``: when the GPU finishes the batch in flight). In steady decoding
a step therefore lasts ``max(GPU time, overhead)`` instead of their sum. A
cost model without an ``overhead`` attribute is all GPU time.

Every batch is one exact step through the scheduler (no decode windows).
:attr:`AsyncLoop.batch_observer` sees every batch once its output is processed
(the differential test against vLLM's own ``AsyncScheduler`` uses it).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any

from kvlab.errors import CapacityError, ConfigError
from kvlab.sim.config import SimConfig
from kvlab.sim.kv import KVCache
from kvlab.sim.run_state import NO_ARRIVAL
from kvlab.sim.scheduler import Scheduler, StepPlan
from kvlab.sim.sequence import FINISHED, RUNNING, Seq
from kvlab.sim.step_loop import StepLoop

#: the engine core's batch queue size with async scheduling (no pipeline parallelism)
BATCHES_IN_FLIGHT = 2


def async_blocker(cfg: SimConfig, offload_blocks: int) -> str | None:
    """Why ``cfg`` cannot run with async scheduling (one line), or None."""
    if offload_blocks > 0:
        return (
            "async scheduling with a CPU offload tier is not modelled "
            "(use --no-async-scheduling or drop the offload tier)"
        )
    return None


class Batch:
    """One scheduled batch until its output is processed.

    ``scheduled``: (request, tokens) in scheduling order; ``samples[i]``: whether the
    i-th one samples a token (its tokens reach the end of its sequence);
    ``start``/``end``: ticks (``end == start`` for an empty batch, which never ran);
    ``preempted``: requests this scheduling preempted; ``finished``: requests whose
    last token this batch produced (filled when its output is processed);
    ``block_ids``: each scheduled request's block table right after scheduling
    (only while a :attr:`AsyncLoop.batch_observer` is set, and only for a KV cache
    with block ids).
    """

    __slots__ = ("block_ids", "end", "finished", "preempted", "samples", "scheduled", "start")

    def __init__(self, plan: StepPlan, samples: list[bool], start: int, end: int) -> None:
        self.scheduled = plan.scheduled
        self.samples = samples
        self.preempted = plan.preempted
        self.start = start
        self.end = end
        self.finished: list[Seq] = []
        self.block_ids: list[list[int]] | None = None


class AsyncScheduler(Scheduler):
    """The token-budget scheduler with output placeholders (vLLM ``AsyncScheduler``).

    Invariants (per request index): ``placeholders`` = tokens its batches in flight
    will sample (at most one between two schedulings); ``in_flight`` = tokens of it
    scheduled in batches whose output is not processed yet; ``stale`` = the part of
    those scheduled before its last preemption. Entries at zero are dropped.
    ``num_computed`` of a running request includes the tokens of its batches in flight.
    """

    def __init__(self, kv: KVCache, **kwargs: Any) -> None:
        super().__init__(kv, **kwargs)
        self.placeholders: dict[int, int] = {}
        self.in_flight: dict[int, int] = {}
        self.stale: dict[int, int] = {}

    def schedule(self, now: int) -> StepPlan:
        plan = StepPlan()
        budget = self.max_num_batched_tokens
        running, kv, ph = self.running, self.kv, self.placeholders
        mml = self.max_model_len
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            p = ph.get(seq.idx, 0)
            # its batch in flight samples its last token: no further step
            if p > 0 and seq.num_computed + 2 - p >= seq.prompt_len + seq.req.output_tokens:
                i += 1
                continue
            n = min(seq.num_tokens + p - seq.num_computed, budget, mml - seq.num_computed - 1)
            if n <= 0:
                i += 1
                continue
            ok = True
            while not kv.extend(seq, n, now):
                victim = self._pick_victim()
                idx = running.index(victim)
                del running[idx]
                if idx < i:
                    i -= 1
                budget += self._unschedule(plan, victim)
                self._preempt(victim, now)
                plan.preempted.append(victim)
                if victim is seq:
                    ok = False
                    break
            if not ok:
                break
            plan.scheduled.append((seq, n))
            budget -= n
            i += 1
        if not plan.preempted:
            self.admit_waiting(plan, budget, now)
        return plan

    def _preempt(self, seq: Seq, now: int) -> None:
        super()._preempt(seq, now)
        self.placeholders.pop(seq.idx, None)
        n = self.in_flight.get(seq.idx, 0)
        if n:
            self.stale[seq.idx] = n

    def after_schedule(self, plan: StepPlan) -> list[bool]:
        """Credit the scheduled tokens at once and give every request whose tokens
        reach the end of its sequence a placeholder; which of them sample."""
        ph, fl = self.placeholders, self.in_flight
        samples = []
        for seq, n in plan.scheduled:
            i = seq.idx
            seq.num_computed += n
            fl[i] = fl.get(i, 0) + n
            p = ph.get(i, 0)
            sample = seq.num_computed >= seq.num_tokens + p
            if sample:
                ph[i] = p + 1
            samples.append(sample)
        return samples

    def drop_waiting(self, seq: Seq) -> None:
        """Take a waiting request out of the queue (its stale output finished it)."""
        if self.priority:
            self._heap[:] = [e for e in self._heap if e[3] is not seq]
            heapq.heapify(self._heap)
        else:
            self._fifo.remove(seq)


class AsyncLoop(StepLoop):
    """Two batches in flight (see the module docstring); every configuration the
    step loop runs, except those :func:`async_blocker` names."""

    loop_name = "async"
    sched: AsyncScheduler

    #: called with every batch once its output is processed (inspection, tests)
    batch_observer: Callable[[Batch], None] | None = None

    def run_loop(self) -> None:
        sched = self.sched
        inflight: deque[Batch] = deque()
        cost = self.r.cost
        host = int(getattr(cost, "overhead", 0))
        gpu_free = 0
        while True:
            idle = not sched.running and not sched.num_waiting()
            if not inflight and idle:
                if self.next_arrival == NO_ARRIVAL:
                    break
                if self.next_arrival > self.now:
                    self.now = self.next_arrival
            if self.next_arrival <= self.now:
                self._arrive()
            if sched.running or sched.num_waiting():
                busy = any(b.end > b.start for b in inflight)
                batch = self._schedule_batch(max(self.now, gpu_free - host), busy)
                if batch.end > batch.start:
                    gpu_free = batch.end
                inflight.appendleft(batch)
                if len(inflight) < BATCHES_IN_FLIGHT and (
                    batch.end > batch.start or sched.running or sched.num_waiting()
                ):
                    continue
            if inflight:
                batch = inflight.pop()
                if batch.end > self.now:
                    self.now = batch.end
                self._update(batch)
                self._observe()

    def _schedule_batch(self, t0: int, busy: bool) -> Batch:
        """Schedule one batch starting at ``t0`` (while another is in flight if ``busy``)."""
        sched = self.sched
        now = self.now
        self.now = t0  # the batch's own time, for its admissions and block stamps
        plan = sched.schedule(t0)
        if not plan.scheduled and not busy and not plan.preempted:
            seq = sched.peek_waiting()
            if seq is not None and not sched.running:
                raise CapacityError(
                    f"request {seq.req.request_id!r} ({seq.num_tokens} tokens) cannot be "
                    f"admitted even into an empty KV cache of {self.r.num_blocks - 1} blocks"
                )
            raise RuntimeError("a batch scheduled nothing while no other was in flight")
        load = self._admitted(plan)
        self.now = now
        samples = sched.after_schedule(plan)
        end = t0 + self._step_ticks_async(plan) + load if plan.scheduled else t0
        if plan.scheduled:
            self.c["num_steps"] += 1
        batch = Batch(plan, samples, t0, end)
        if self.batch_observer is not None:
            batch.block_ids = [list(getattr(s, "blocks", ())) for s, _ in plan.scheduled]
        return batch

    def _step_ticks_async(self, plan: StepPlan) -> int:
        """:meth:`StepLoop._step_ticks` with the tokens already credited."""
        tokens = attn = kv_read = 0
        for seq, n in plan.scheduled:
            ctx = seq.num_computed
            tokens += n
            attn += n * ctx
            kv_read += ctx
        return self.r.cost.step_ticks(tokens, attn, kv_read)

    def _update(self, batch: Batch) -> None:
        """Process a batch's output: sampled tokens, caching, finished requests."""
        sched, kv = self.sched, self.kv
        ph, fl, stale = sched.placeholders, sched.in_flight, sched.stale
        done_running = False
        for (seq, n), sample in zip(batch.scheduled, batch.samples, strict=True):
            i = seq.idx
            left = fl[i] - n
            if left:
                fl[i] = left
            else:
                del fl[i]
            is_stale = False
            s = stale.get(i, 0)
            if s > 0:
                is_stale = True
                if s > n:
                    stale[i] = s - n
                else:
                    del stale[i]
            if seq.status == FINISHED or not sample:
                continue
            was_running = seq.status == RUNNING
            if not is_stale:
                p = ph[i] - 1
                if p:
                    ph[i] = p
                else:
                    del ph[i]
            if was_running:
                kv.cache_upto(seq, seq.num_computed - ph.get(i, 0), self.now)
            if self._emit_token(seq):
                batch.finished.append(seq)
                ph.pop(i, None)
                if was_running:
                    done_running = True
                else:
                    sched.drop_waiting(seq)
        if done_running:
            sched.running[:] = [s for s in sched.running if s.status != FINISHED]
        if self.batch_observer is not None:
            self.batch_observer(batch)


def check_async(cfg: SimConfig, offload_blocks: int) -> None:
    """Raise ConfigError (one line) when ``cfg`` asks for async scheduling where it
    is not modelled."""
    if cfg.async_scheduling:
        why = async_blocker(cfg, offload_blocks)
        if why is not None:
            raise ConfigError(why)
