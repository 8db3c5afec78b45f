"""The token-budget scheduler of vLLM v1 (``vllm/v1/core/sched/scheduler.py``).

No prefill or decode phases: each step spends ``max_num_batched_tokens``,
first on running requests in order, then on waiting ones (FCFS, or priority:
lower value first, then arrival), with at most ``max_num_seqs`` running.
Prefill is chunked. When a running request cannot get a block, the last
running request (priority: the lowest-priority, latest one) is preempted by
recompute: its blocks are freed and it goes back to the front of the waiting
queue. No new request is admitted in a step that preempted.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any

from kvlab.sim.kv import KVCache
from kvlab.sim.sequence import RUNNING, WAITING, Seq

#: Admission hook: (seq, gpu hit blocks, now, reserve) -> lower-tier blocks to load.
LowerTierLookup = Callable[[Seq, int, int, bool], int]


class StepPlan:
    """What one schedule() call decided (a plain class: one per engine step)."""

    __slots__ = ("admitted", "preempted", "scheduled")

    def __init__(self, scheduled: list[tuple[Seq, int]] | None = None) -> None:
        self.scheduled: list[tuple[Seq, int]] = [] if scheduled is None else scheduled
        self.admitted: list[tuple[Seq, int, int]] = []  # seq, gpu hit blocks, lower-tier blocks
        self.preempted: list[Seq] = []


class Scheduler:
    """Invariants: ``running`` is in admission order (preempted requests rejoin
    at the end when readmitted); ``waiting`` holds the waiting requests, in FCFS
    order (a deque, preempted requests at the front) or as a heap of
    ``(priority, arrival, idx, seq)``; its length is the number waiting.

    Public decisions a loop may ask for: :meth:`schedule` (one whole step),
    :meth:`admit_waiting` (the admission part of a step, after the running
    requests got their tokens), :meth:`probe_head` / :meth:`can_admit_head`
    (whether the next step would admit the head of the queue).
    """

    def __init__(
        self,
        kv: KVCache,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        priority: bool = False,
        caching: bool = True,
        lower_tier: LowerTierLookup | None = None,
    ) -> None:
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.priority = priority
        self.caching = caching
        self.lower_tier = lower_tier
        self.running: list[Seq] = []
        self._fifo: deque[Seq] = deque()
        self._heap: list[tuple[int, int, int, Seq]] = []
        #: the waiting queue (read only outside this class)
        self.waiting: deque[Seq] | list[tuple[int, int, int, Seq]] = (
            self._heap if priority else self._fifo
        )
        self._run_counter = 0
        #: output placeholders per request index: tokens its batches in flight will
        #: sample (async scheduling, :class:`kvlab.sim.async_loop.AsyncScheduler`;
        #: always empty here)
        self.placeholders: dict[int, int] = {}
        self.on_free: Callable[[Seq], None] | None = None
        #: a KV cache that clips prefill chunks (Mamba state groups) says how
        self._clip: Callable[..., int] | None = getattr(kv, "clip_chunk", None)

    # -- waiting queue ----------------------------------------------------
    def add(self, seq: Seq) -> None:
        seq.status = WAITING
        if self.priority:
            heapq.heappush(self._heap, (seq.req.priority, seq.arrival, seq.idx, seq))
        else:
            self._fifo.append(seq)

    def _requeue_preempted(self, seq: Seq) -> None:
        seq.status = WAITING
        if self.priority:
            heapq.heappush(self._heap, (seq.req.priority, seq.arrival, seq.idx, seq))
        else:
            self._fifo.appendleft(seq)

    def num_waiting(self) -> int:
        return len(self.waiting)

    def peek_waiting(self) -> Seq | None:
        if self.priority:
            return self._heap[0][3] if self._heap else None
        return self._fifo[0] if self._fifo else None

    def _pop_waiting(self) -> Seq:
        return heapq.heappop(self._heap)[3] if self.priority else self._fifo.popleft()

    # -- one step ---------------------------------------------------------
    def schedule(self, now: int) -> StepPlan:
        plan = StepPlan()
        budget = self.max_num_batched_tokens
        running, kv = self.running, self.kv
        bs = kv.block_size
        # a KV cache whose every decode step may free blocks (sliding windows) says so
        quiet = getattr(kv, "quiet_decode_steps", True)
        ph = self.placeholders
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            c = seq.num_computed
            if ph:  # async scheduling: tokens its batches in flight will sample
                p = ph.get(seq.idx, 0)
                # its batch in flight samples its last token: no further step
                if p > 0 and c + 2 - p >= seq.prompt_len + seq.req.output_tokens:
                    i += 1
                    continue
                n = seq.num_tokens + p - c
            else:
                n = seq.num_tokens - c
            if n > budget:
                n = budget
            if n > self.max_model_len - c - 1:
                n = self.max_model_len - c - 1
            if self._clip is not None and n > 0:
                n = self._clip(seq, seq.num_computed, n, self.max_num_batched_tokens)
            if n <= 0:
                i += 1
                continue
            if n == 1 and quiet:  # a decode step inside a block that neither starts nor fills it
                r = seq.num_computed % bs
                if r and r != bs - 1 and seq.nblocks * bs > seq.num_computed:
                    plan.scheduled.append((seq, 1))
                    budget -= 1
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

    def _pick_victim(self) -> Seq:
        if self.priority:
            # the lowest priority, latest arrival (requests that arrive at the same tick
            # arrive in workload order, as in the waiting heap)
            return max(self.running, key=lambda s: (s.req.priority, s.arrival, s.idx))
        return self.running[-1]

    @staticmethod
    def _unschedule(plan: StepPlan, victim: Seq) -> int:
        for j, (s, n) in enumerate(plan.scheduled):
            if s is victim:
                del plan.scheduled[j]
                return n
        return 0

    def _preempt(self, seq: Seq, now: int) -> None:
        if self.on_free is not None:
            self.on_free(seq)
        self.kv.free(seq, now)
        seq.num_computed = 0
        assert seq.rec.num_preemptions is not None  # the simulator counts every preemption
        seq.rec.num_preemptions += 1
        self._requeue_preempted(seq)

    def admit_waiting(self, plan: StepPlan, budget: int, now: int, head_hit: Any = None) -> None:
        """Admit waiting requests in order while the budget (tokens the running
        requests left this step), the slots and the blocks allow, adding them to
        ``plan``. ``head_hit``: the head's lookup, known to be still valid (no lower
        tier, nothing cached or evicted since :meth:`probe_head` made it)."""
        while budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.peek_waiting()
            if seq is None:
                return
            if head_hit is not None:
                hit, ext, head_hit = head_hit, 0, None
            else:
                hit, ext = self.lookup(seq, now, reserve=True)
            bs = self.kv.block_size
            computed = (len(hit) + ext) * bs
            n = min(seq.num_tokens - computed, budget)
            if self._clip is not None:
                n = self._clip(seq, computed, n, self.max_num_batched_tokens, hit)
                if n <= 0:
                    return
            if (
                self.kv.admit(
                    seq, n, hit, now, num_external_tokens=ext * bs, has_running=bool(self.running)
                )
                is None
            ):
                return
            self._pop_waiting()
            seq.status = RUNNING
            seq.num_computed = computed
            self._run_counter += 1
            seq.run_seq = self._run_counter
            self.running.append(seq)
            plan.scheduled.append((seq, n))
            plan.admitted.append((seq, len(hit), ext))
            budget -= n

    def lookup(self, seq: Seq, now: int, reserve: bool = False) -> tuple[Any, int]:
        """GPU hit blocks and lower-tier blocks for a waiting request."""
        hit = self.kv.lookup_seq(seq)  # empty with caching off
        ext = 0
        if self.lower_tier is not None and self.caching:
            ext = self.lower_tier(seq, len(hit), now, reserve)
        return hit, ext

    def can_admit_head(self, now: int, budget: int | None = None) -> bool:
        """Whether the next step would admit the head of the waiting queue
        (``budget``: the tokens the running requests leave, if known)."""
        return self.probe_head(now, budget) is not None

    def probe_head(self, now: int, budget: int | None = None) -> Any:
        """:meth:`can_admit_head`: None when the head would not be admitted, else its
        GPU hit, or True when the free blocks cover all of it whatever it hits (no
        lookup made)."""
        seq = self.peek_waiting()
        if seq is None or len(self.running) >= self.max_num_seqs:
            return None
        if budget is None:
            budget = self.max_num_batched_tokens - sum(
                min(s.num_tokens - s.num_computed, self.max_model_len - s.num_computed - 1)
                for s in self.running
            )
        if budget <= 0:
            return None
        if self.lower_tier is None and self.kv.surely_fits(seq.num_tokens, bool(self.running)):
            return True
        hit, ext = self.lookup(seq, now)
        computed = (len(hit) + ext) * self.kv.block_size
        n = min(seq.num_tokens - computed, budget)
        if self._clip is not None:
            n = self._clip(seq, computed, n, self.max_num_batched_tokens, hit)
            if n <= 0:
                return None
        if self.kv.fits(seq, n, hit, ext * self.kv.block_size, bool(self.running)):
            return hit
        return None
