"""The engine loop that takes every event through the scheduler: one exact step
(schedule -> cost -> advance), or a decode window.

Between events, when every running request is decoding and nothing can be
admitted, the loop jumps over a whole run of decode steps at once (a
*window*, :mod:`kvlab.sim.windows`): the step times have a closed-form sum
(integer ticks), and the block allocations and cachings the window implies are
replayed in the order the per-step engine would make them
(:meth:`kvlab.sim.kv.KVCache.decode_window`). A window ends at the next arrival,
completion, allocation that would not fit, or (while requests wait) block fill
that could become a hit. ``exact_steps`` runs the same windows step by step
through the scheduler instead; both give identical results.

This loop runs every configuration; :mod:`kvlab.sim.cohort_loop` is the faster
one the default configuration uses, and falls back to this loop's events.
"""

from __future__ import annotations

from kvlab.errors import CapacityError
from kvlab.sim.run_state import NO_ARRIVAL, RunState
from kvlab.sim.scheduler import StepPlan
from kvlab.sim.sequence import FINISHED
from kvlab.sim.windows import window_len


class StepLoop(RunState):
    """Every event through the scheduler (any KV cache, policy and scheduling)."""

    loop_name = "step"

    def run_loop(self) -> None:
        sched = self.sched
        while True:
            if self.next_arrival <= self.now:
                self._arrive()
            if not sched.running and not sched.num_waiting():
                if self.next_arrival == NO_ARRIVAL:
                    break
                self.now = self.next_arrival
                continue
            self._general_event()

    def _general_event(self) -> None:
        """A decode window, or one exact step, through the scheduler (every request)."""
        k = self._window_len() if self.sched.running else 0
        if k > 0 and not self.cfg.exact_steps:
            self._macro_step(k)
        elif k > 0:
            for _ in range(k):
                self._step(expect_decode_only=True)
        else:
            self._step()
        self._observe()

    # -- one exact step -------------------------------------------------------
    def _step(self, expect_decode_only: bool = False) -> None:
        """One engine step: schedule -> cost -> advance."""
        plan = self.sched.schedule(self.now)
        self._check_plan(plan, expect_decode_only)
        self.now += self._step_ticks(plan) + self._admitted(plan)
        self.c["num_steps"] += 1
        self._advance(plan.scheduled)

    def _check_plan(self, plan: StepPlan, expect_decode_only: bool) -> None:
        if expect_decode_only and (plan.admitted or plan.preempted):
            raise RuntimeError("decode window broken: the scheduler admitted or preempted")
        if plan.scheduled:
            return
        if plan.preempted and self.sched.running:
            # Priority scheduling can preempt the very request that needed a block
            # (the lowest-priority one) and stop there, as vLLM's scheduler does: an
            # empty step that frees blocks; the next step schedules the others.
            return
        if not self.sched.running:
            seq = self.sched.peek_waiting()
            assert seq is not None
            raise CapacityError(
                f"request {seq.req.request_id!r} ({seq.num_tokens} tokens) cannot be "
                f"admitted even into an empty KV cache of {self.r.num_blocks - 1} blocks"
            )
        raise RuntimeError("a step scheduled nothing while requests were running")

    def _step_ticks(self, plan: StepPlan) -> int:
        """Roofline time of the scheduled batch (before the tokens are computed)."""
        tokens = attn = kv_read = 0
        for seq, n in plan.scheduled:
            ctx = seq.num_computed + n
            tokens += n
            attn += n * ctx
            kv_read += ctx
        return self.r.cost.step_ticks(tokens, attn, kv_read, len(plan.scheduled))

    # -- decode windows ------------------------------------------------------
    def _window_len(self) -> int:
        sched = self.sched
        return window_len(
            sched.running,
            block_size=self.B,
            token_budget=self.r.max_num_batched_tokens,
            free_blocks=self.kv.num_free,
            cost=self.r.cost,
            until_arrival=(
                self.next_arrival - self.now if self.next_arrival != NO_ARRIVAL else None
            ),
            waiting=sched.num_waiting() > 0,
            head_admissible=lambda: sched.can_admit_head(self.now),
            caching=self.cfg.enable_prefix_caching,
        )

    def _macro_step(self, k: int) -> None:
        """Advance ``k`` decode steps at once, replaying their block events in order."""
        running, cost, now0 = self.sched.running, self.r.cost, self.now
        n = len(running)
        s0 = sum(s.num_computed + 1 for s in running)
        self.kv.decode_window(running, k, now0, lambda i: now0 + cost.window_ticks(n, s0, i))
        self.now = now0 + cost.window_ticks(n, s0, k)
        self.c["num_steps"] += k
        finished = False
        for s in running:
            s.num_computed += k
            s.num_out += k - 1
            s.num_tokens += k - 1
            finished |= self._emit_token(s)
        if finished:
            running[:] = [s for s in running if s.status != FINISHED]
