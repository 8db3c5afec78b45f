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

Decode windows (:meth:`AsyncLoop._window_len_async`): when the one batch in flight
holds every running request, each decoding one token that is not its last, the
loop takes the run of batches in which nothing can change at once: their ends
have the synchronous loop's closed-form sum (less the host part each batch hides),
and the blocks they allocate and cache are replayed request by request in the
order the batches would make them. ``exact_steps`` takes the same windows batch by
batch through the scheduler; both give identical results, and every request's
record equals the one of a run without windows. :attr:`AsyncLoop.batch_observer`
sees every batch once its output is processed (the differential test against
vLLM's own ``AsyncScheduler`` uses it); a run with an observer takes no windows.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any

from kvlab.errors import CapacityError, ConfigError
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.kv import KVCache
from kvlab.sim.run_state import NO_ARRIVAL
from kvlab.sim.scheduler import Scheduler, StepPlan
from kvlab.sim.sequence import FINISHED, RUNNING, Seq
from kvlab.sim.step_loop import StepLoop
from kvlab.sim.windows import fit_allocations

#: the engine core's batch queue size with async scheduling (no pipeline parallelism)
BATCHES_IN_FLIGHT = 2


def async_blocker(offload_blocks: int) -> str | None:
    """Why a run cannot follow async scheduling (one line), or None."""
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

    def reset(self, start: int, end: int) -> None:
        """Make this batch, whose output was never processed, a new one without rows
        from ``start`` to ``end`` (the async cohort's batch in flight after a window:
        its rows are implicit)."""
        self.scheduled, self.samples, self.preempted = [], [], []
        self.start, self.end = start, end
        self.finished = []
        self.block_ids = None


class AsyncScheduler(Scheduler):
    """The token-budget scheduler with output placeholders (vLLM ``AsyncScheduler``):
    :meth:`Scheduler.schedule` serves both, the placeholders (empty in the
    synchronous scheduler) decide how far a running request is scheduled.

    Invariants (per request index): ``placeholders`` = tokens its batches in flight
    will sample (at most one between two schedulings); ``in_flight`` = tokens of it
    scheduled in batches whose output is not processed yet; ``stale`` = the part of
    those scheduled before its last preemption. Entries at zero are dropped.
    ``num_computed`` of a running request includes the tokens of its batches in flight.
    """

    def __init__(self, kv: KVCache, **kwargs: Any) -> None:
        super().__init__(kv, **kwargs)
        self.in_flight: dict[int, int] = {}
        self.stale: dict[int, int] = {}

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
    #: batches taken in decode windows, and the windows (inspection, tests)
    window_batches = 0
    num_windows = 0

    def run_loop(self) -> None:
        sched = self.sched
        inflight: deque[Batch] = deque()
        cost = self.r.cost
        host = int(getattr(cost, "overhead", 0))
        windows = self.batch_observer is None and getattr(self.kv, "quiet_decode_steps", True)
        exact = self.cfg.exact_steps
        self.gpu_free = 0
        left = 0  # batches of a decode window still to take one by one (exact_steps)
        while True:
            if not self._take_arrivals(inflight):
                break
            if left == 0 and windows and len(inflight) == 1:
                k, fold = self._window_len_async(inflight[0], host)
                if k > 0 and not exact:
                    self.window_batches += k
                    self.num_windows += 1
                    inflight[0] = self._take_window(k, fold, host)
                    self._observe()
                    continue
                left = k
                if k:
                    self.window_batches += k
                    self.num_windows += 1
            if sched.running or sched.num_waiting():
                batch, more = self._schedule_next(inflight, host)
                if left > 1 and (batch.preempted or len(batch.scheduled) != len(sched.running)):
                    raise RuntimeError("decode window broken: the batch changed")
                if more:
                    continue
            if inflight:
                batch = self._process_oldest(inflight)
                if left:
                    left -= 1
                    if left:
                        if batch.finished:
                            raise RuntimeError("decode window broken: a request finished")
                        continue
                self._observe()

    def _take_arrivals(self, inflight: deque[Batch]) -> bool:
        """Take the requests that arrived by now, first moving the clock to the next
        arrival when nothing is in flight, running or waiting; False when the run is over."""
        sched = self.sched
        if not inflight and not sched.running and not sched.num_waiting():
            if self.next_arrival == NO_ARRIVAL:
                return False
            if self.next_arrival > self.now:
                self.now = self.next_arrival
        if self.next_arrival <= self.now:
            self._arrive()
        return True

    def _schedule_next(self, inflight: deque[Batch], host: int) -> tuple[Batch, bool]:
        """Schedule the next batch into ``inflight`` (newest first); the batch, and
        whether another is scheduled before the oldest one's output is processed."""
        sched = self.sched
        busy = any(b.end > b.start for b in inflight)
        batch = self._schedule_batch(max(self.now, self.gpu_free - host), busy)
        ran = batch.end > batch.start
        if ran:
            self.gpu_free = batch.end
        inflight.appendleft(batch)
        more = len(inflight) < BATCHES_IN_FLIGHT and (
            ran or bool(sched.running) or bool(sched.num_waiting())
        )
        return batch, more

    def _process_oldest(self, inflight: deque[Batch]) -> Batch:
        """Wait for the oldest batch in flight and process its output."""
        batch = inflight.pop()
        if batch.end > self.now:
            self.now = batch.end
        self._update(batch)
        return batch

    # -- decode windows ------------------------------------------------------------
    def _window_len_async(self, batch: Batch, host: int) -> tuple[int, bool]:
        """The decode window starting now: its batches (0: none) and whether its last
        batch's output finishes requests (then the batch scheduled with it leaves
        them out), with ``batch`` the only one in flight.

        A window needs every running request in ``batch``, in order, sampling a
        token there (its last prefill chunk or a decode token), none of it stale:
        each is then scheduled one token per batch until the batch in flight
        samples its last token (the first output may be a first token). The window
        ends with the batch whose output finishes requests (while none waits and
        some request goes on), else before it; before the batch scheduled once an
        arrival is seen; before the batch whose allocations would not fit; and,
        while requests wait, before the batch whose scheduling caches a block of
        shared output (it could become a hit), or at once if the head of the queue
        could be admitted."""
        sched = self.sched
        running = sched.running
        n = len(running)
        if n == 0 or n > sched.max_num_batched_tokens or len(batch.scheduled) != n:
            return 0, False
        ph, stale = sched.placeholders, sched.stale
        last = 1 << 62  # batches until the first request's last sample
        nlast = 0  # requests with that many
        for (s, _), seq, sample in zip(batch.scheduled, running, batch.samples, strict=True):
            if s is not seq or not sample or s.num_computed != s.num_tokens:
                return 0, False
            i = s.idx
            if ph.get(i) != 1 or (stale and i in stale):
                return 0, False
            # (max_out caps the output at max_model_len: the scheduler stops there too)
            left = s.max_out - s.num_out - 1
            if left <= last:
                if left < last:
                    last, nlast = left, 0
                nlast += 1
        k = last + 1  # the batch whose output finishes requests included
        bs = self.B
        if sched.num_waiting():
            # (finishing requests leave budget to the waiting: no window ends with them)
            if sched.can_admit_head(self.now, sched.max_num_batched_tokens - n):
                return 0, False
            k = last
            if self.cfg.enable_prefix_caching:
                for s in running:  # a shared output block cached could turn into a hit
                    if s.req.output_content_id is not None:
                        k = min(k, -s.num_computed % bs)
        elif nlast == n:
            k = last  # (every request finishes: the next batch would be empty)
        if k <= 0:
            return 0, False
        k = fit_allocations(running, k, bs, self.kv.num_free)
        if k <= 0:
            return 0, False
        clock = self._clock(n, sum(s.num_computed + 1 for s in running), host, k)
        if clock is None:
            return 0, False
        return clock[0], clock[0] == last + 1

    def _clock(self, n: int, s0: int, host: int, k: int) -> tuple[int, Callable[[int], int]] | None:
        """The window's length (``k`` at most, cut before the batch scheduled once an
        arrival is seen) and ``end(m)``: when the m-th batch from the one in flight
        (m = 0) ends, for every batch of ``n`` requests; batch m + 1 starts at
        ``end(m) - host``. None when the host part of a batch would not hide
        behind the GPU part of the one before (then every batch is taken one by one).

        Steps of ``n`` decoding requests whose contexts sum to ``s0`` take
        ``window_ticks`` as the synchronous loop's; with a GPU part of each batch
        at least ``host`` (step times only grow with the context), batch m + 1 is
        scheduled when the GPU frees minus ``host`` and ends a GPU part later:
        ``end(m) = gpu_free + window_ticks(m) - m * host``."""
        cost, g0, now = self.r.cost, self.gpu_free, self.now
        if g0 - host < now or cost.step_ticks(n, s0, s0, n) < 2 * host:
            return None

        def end(m: int) -> int:
            return g0 + cost.window_ticks(n, s0, m) - m * host

        arrival = self.next_arrival
        if arrival != NO_ARRIVAL and k > 1 and end(k - 2) >= arrival:
            lo, hi = 0, k - 2  # batch m + 1 is scheduled after end(m - 1) is processed
            while lo < hi:  # the first m with end(m) >= arrival
                mid = (lo + hi) // 2
                if end(mid) >= arrival:
                    hi = mid
                else:
                    lo = mid + 1
            k = lo + 1
        return k, end

    def _take_window(self, k: int, fold: bool, host: int) -> Batch:
        """Take ``k`` batches of the window at once (``fold``: the last one's output
        finishes requests); the batch then in flight."""
        sched, kv, bs = self.sched, self.kv, self.B
        running = sched.running
        n = len(running)
        s0 = sum(s.num_computed + 1 for s in running)
        clock = self._clock(n, s0, host, k)
        assert clock is not None and clock[0] == k
        end = clock[1]
        done = [s for s in running if s.max_out - s.num_out == k] if fold else []
        # the blocks: batch i allocates (then caches the block before) where its
        # token starts a block, request by request in scheduling order; a request
        # whose last token is in flight is not scheduled
        events: list[int] = []  # batch * n + position: sorts like (batch, position)
        kn, bn = k * n, bs * n
        for pos, s in enumerate(running):
            stop = kn - n if fold and s.max_out - s.num_out == k else kn
            events.extend(range((-s.num_computed % bs) * n + pos, stop, bn))
        if events:
            events.sort()
            step_ends = getattr(self.r.cost, "step_ends", None)
            if step_ends is not None:  # the ends at once: end(i) for i = 1 .. k - 1
                ends = step_ends(n, s0, k - 1, self.gpu_free)
                starts = [self.gpu_free - host] + [t - (i + 2) * host for i, t in enumerate(ends)]
            else:
                starts = [end(i) - host for i in range(k)]
            if not kv.extend_window(running, events, starts):
                raise RuntimeError("decode window broken: an allocation did not fit")
        first = end(0) / TICKS_PER_S  # batch 0's output: some requests' first token
        fl, ph = sched.in_flight, sched.placeholders
        for s in running:
            s.num_computed += k
            s.num_tokens += k
            s.num_out += k
            fl[s.idx] = 1
            if s.rec.first_token_s is None:
                s.rec.first_token_s = first
        self.c["num_steps"] += k
        self.now = t_last = end(k - 1)
        if done:  # their last batch's output, after the next batch was scheduled
            for s in done:
                i = s.idx
                s.num_computed -= 1
                s.num_tokens -= 1
                s.num_out -= 1
                del fl[i], ph[i]
                kv.cache_upto(s, s.num_computed, t_last)
                self._emit_token(s)
            running[:] = [s for s in running if s.status != FINISHED]
            n = len(running)
            s1 = sum(s.num_computed for s in running)  # (credited already)
            self.gpu_free = t_last - host + self.r.cost.step_ticks(n, s1, s1, n)
        else:
            self.gpu_free = end(k)
        plan = StepPlan([(s, 1) for s in running])
        return Batch(plan, [True] * n, t_last - host, self.gpu_free)

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
        return self.r.cost.step_ticks(tokens, attn, kv_read, len(plan.scheduled))

    def _update(self, batch: Batch) -> None:
        """Process a batch's output: sampled tokens, caching, finished requests."""
        sched, kv = self.sched, self.kv
        ph, fl, stale = sched.placeholders, sched.in_flight, sched.stale
        # a KV cache that caches nothing below a request's cached blocks (all but the
        # hybrid groups' state blocks, re-keyed every step) needs no call then
        plain = getattr(kv, "quiet_decode_steps", True)
        bs = self.B
        done_running = False
        for (seq, n), sample in zip(batch.scheduled, batch.samples, strict=True):
            i = seq.idx
            left = fl[i] - n
            if left:
                fl[i] = left
            else:
                del fl[i]
            is_stale = False
            s = stale.get(i, 0) if stale else 0
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
                upto = seq.num_computed - ph.get(i, 0)
                if not plain or upto // bs > seq.num_cached_blocks:
                    kv.cache_upto(seq, upto, self.now)
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


def check_async(offload_blocks: int) -> None:
    """Raise ConfigError (one line) where async scheduling is asked for but not modelled."""
    why = async_blocker(offload_blocks)
    if why is not None:
        raise ConfigError(why)
