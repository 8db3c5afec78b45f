"""The simulation engine: schedule -> cost -> advance, until the workload is done.

Between events, when every running request is decoding and nothing can be
admitted, the engine jumps over a whole run of decode steps at once (a
*window*): the step times have a closed-form sum (integer ticks), and the
block allocations and cachings the window implies are replayed in the order
the per-step engine would perform them. A window ends at the next arrival,
completion, allocation that would not fit, or (while requests wait) block fill
that could become a hit. ``exact_steps`` runs the same windows step by step
through the scheduler instead; both give identical results.
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any

from kvlab.errors import CapacityError, WorkloadError
from kvlab.results import (
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
    RunResult,
    summary_with_groups,
)
from kvlab.sim.block_pool import BlockPool
from kvlab.sim.cohort import Cohort
from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.extents import ExtentKV, ExtentPool, Hit
from kvlab.sim.hashing import OFFSET_BITS
from kvlab.sim.kv_manager import KVManager, cdiv
from kvlab.sim.metrics import TimeSeries
from kvlab.sim.names import open_names
from kvlab.sim.offload import OffloadTier
from kvlab.sim.policies import make_policy
from kvlab.sim.resolve import Resolved, resolve
from kvlab.sim.scheduler import Scheduler, StepPlan
from kvlab.sim.sequence import FINISHED, NEVER, Seq
from kvlab.sim.windows import window_len
from kvlab.workload.records import Request, Workload

Progress = Callable[[int, int], None]


#: ``Engine.next_arrival`` when no arrival is left (later than any tick).
NO_ARRIVAL = 1 << 256


def _ticks(x: float) -> int:
    return round(x * TICKS_PER_S)


class Engine:
    """One simulation run. Invariant: ``now`` (ticks) only grows; every request
    is in exactly one of: not yet arrived, waiting, running, done.
    """

    def __init__(self, workload: Workload, cfg: SimConfig, progress: Progress | None = None):
        self.cfg = cfg
        self.r: Resolved = resolve(cfg)
        self.workload = workload
        self.progress = progress
        #: called with the records once they are final (see :func:`simulate`)
        self.on_records: Callable[[list[RequestRecord]], None] | None = None
        r = self.r
        self.B = r.block_size
        self.offload: OffloadTier | None = None
        if r.offload_blocks > 0:
            self.offload = OffloadTier(
                r.offload_blocks, r.block_bytes, r.offload_bw, r.offload_latency_s, cfg.offload_mode
            )
        policy = make_policy(cfg.policy, TICKS_PER_S, **dict(cfg.policy_params))
        kv_args: dict[str, Any] = dict(
            reserve_full_prompt=cfg.reserve_full_prompt,
            watermark_blocks=int(cfg.watermark * r.num_blocks),
        )
        self.pool: BlockPool | ExtentPool
        self.kv: KVManager | ExtentKV
        self.extents = cfg.extents and policy.supports_extents and self.offload is None
        if self.extents:
            self.pool = ExtentPool(
                r.num_blocks, self.B, enable_caching=cfg.enable_prefix_caching, policy=policy
            )
            self.kv = ExtentKV(self.pool, self.B, r.max_model_len, **kv_args)
        else:
            self.pool = BlockPool(
                r.num_blocks,
                enable_caching=cfg.enable_prefix_caching,
                policy=policy,
                tier=self.offload,
            )
            self.kv = KVManager(self.pool, self.B, r.max_model_len, **kv_args)
        self.sched = Scheduler(
            self.kv,
            max_num_seqs=r.max_num_seqs,
            max_num_batched_tokens=r.max_num_batched_tokens,
            max_model_len=r.max_model_len,
            priority=cfg.scheduling == "priority",
            caching=cfg.enable_prefix_caching,
            lower_tier=self._lower_tier if self.offload is not None else None,
        )
        self.sched.on_free = self._note_cached
        #: lazily advanced decoding requests (extent pool, FCFS, windows on)
        self.cohort: Cohort | None = None
        #: the clock's step ends up to a deadline, when it has them (RooflineCost)
        self.step_ends = getattr(self.r.cost, "step_ends", None)
        if self.extents and not cfg.exact_steps and cfg.scheduling == "fcfs":
            self.cohort = Cohort(self.B, cfg.enable_prefix_caching)
        self.series = TimeSeries(_ticks(cfg.sample_interval_s))
        self.seen: dict[int, int] = {}
        self.c: dict[str, int] = dict.fromkeys(
            (
                "prefix_cache_queries",
                "prefix_cache_hits",
                "preempted_prefix_cache_queries",
                "preempted_prefix_cache_hits",
                "external_prefix_cache_queries",
                "external_prefix_cache_hits",
                "num_steps",
            ),
            0,
        )
        self.now = 0
        self.records: list[RequestRecord] = []
        #: arrivals known up front as (tick, index) in order (``arrival_ticks`` and
        #: ``arrival_index`` from ``arrived`` on), and the session follow-ups scheduled
        #: as requests finish (a heap of (tick, index))
        self.arrival_ticks: list[int] = []
        self.arrival_index: list[int] = []
        self.arrived = 0
        self.followups: list[tuple[int, int]] = []
        #: tick of the next arrival of either kind (NO_ARRIVAL when none is left)
        self.next_arrival = NO_ARRIVAL
        self.next_in_session: dict[int, int] = {}
        self.num_done = 0
        self.num_arrived = 0
        self._prepare()

    # -- setup --------------------------------------------------------------
    def _prepare(self) -> None:
        last_of_session: dict[str, int] = {}
        arrivals: list[tuple[int, int]] = []
        usable = self.r.num_blocks - 1
        for i, q in enumerate(self.workload.requests):
            self.records.append(
                RequestRecord(
                    request_id=q.request_id,
                    arrival_s=math.nan,
                    prompt_tokens=q.prompt_tokens,
                    output_tokens=q.output_tokens,
                    session_id=q.session_id,
                    cls=q.cls,
                    status=STATUS_UNFINISHED,
                )
            )
            _check_times(q, i)
            if q.arrival_s is not None:
                arrivals.append((_ticks(q.arrival_s), i))
            elif q.session_id in last_of_session:
                self.next_in_session[last_of_session[q.session_id]] = i
            else:
                raise WorkloadError(
                    "the first request of a session needs arrival_s", field=f"requests[{i}]"
                )
            if q.session_id is not None:
                last_of_session[q.session_id] = i
            p, m = q.prompt_tokens, self.r.max_model_len
            if p < m and cdiv(p + min(q.output_tokens, m - p) - 1, self.B) > usable:
                raise CapacityError(
                    f"request {q.request_id!r} needs {p + q.output_tokens} tokens of KV but the "
                    f"cache holds {usable * self.B} ({usable} blocks of {self.B}); "
                    "give more --num-blocks or GPU memory, or shorten the request"
                )
        if arrivals:
            arrivals.sort()
            self.arrival_ticks, self.arrival_index = map(list, zip(*arrivals, strict=True))
        self._next_arrival()
        #: every request's block keys, named ahead (kvlab.sim.names)
        self.names = open_names(self.workload.requests, self.B)

    def _next_arrival(self) -> None:
        j, f = self.arrived, self.followups
        if j < len(self.arrival_ticks):
            t = self.arrival_ticks[j]
            self.next_arrival = f[0][0] if f and f[0] < (t, self.arrival_index[j]) else t
        else:
            self.next_arrival = f[0][0] if f else NO_ARRIVAL

    # -- main loop ---------------------------------------------------------
    def run(self) -> RunResult:
        wall0 = time.perf_counter()
        if self.cohort is not None:
            self._run_fast()
            self.names.close()
            return self._result(time.perf_counter() - wall0)
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
        self.names.close()
        return self._result(time.perf_counter() - wall0)

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

    def _arrive(self) -> None:
        ticks, index, followups = self.arrival_ticks, self.arrival_index, self.followups
        now, m, n = self.now, self.r.max_model_len, len(ticks)
        while True:
            j = self.arrived
            if followups and (j == n or followups[0] < (ticks[j], index[j])):
                if followups[0][0] > now:
                    break
                t, i = heapq.heappop(followups)
            elif j < n and ticks[j] <= now:
                t, i = ticks[j], index[j]
                self.arrived = j + 1
            else:
                break
            q = self.workload.requests[i]
            rec = self.records[i]
            rec.arrival_s = t / TICKS_PER_S
            self.num_arrived += 1
            if q.prompt_tokens >= m:  # vLLM rejects prompts that leave no room to generate
                rec.status = STATUS_REJECTED
                rec.error = f"prompt of {q.prompt_tokens} tokens >= max_model_len {m}"
                self._session_next(i, t)
                continue
            self.sched.add(Seq(i, q, t, self.names.get(i), self.B, m, rec))
        self._next_arrival()

    def _session_next(self, i: int, t_end: int) -> None:
        j = self.next_in_session.pop(i, None)
        if j is not None:
            think = self.workload.requests[j].think_time_s or 0.0
            heapq.heappush(self.followups, (t_end + _ticks(think), j))
            self._next_arrival()

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
        return self.r.cost.step_ticks(tokens, attn, kv_read)

    def _advance(self, scheduled: list[tuple[Seq, int]]) -> None:
        """Credit the computed tokens; requests that caught up sample one token."""
        finished = False
        for seq, n in scheduled:
            c = seq.num_computed + n
            seq.num_computed = c
            if c >= seq.num_tokens:
                if seq.num_out + 1 < seq.max_out and seq.rec.first_token_s is not None:
                    seq.num_out += 1
                    seq.num_tokens += 1
                else:
                    finished |= self._emit_token(seq)
        if finished:
            self.sched.running[:] = [s for s in self.sched.running if s.status != FINISHED]

    def _emit_token(self, seq: Seq) -> bool:
        seq.num_out += 1
        seq.num_tokens += 1
        rec = seq.rec
        if rec.first_token_s is None:
            rec.first_token_s = self.now / TICKS_PER_S
        if seq.num_out < seq.max_out:
            return False
        self._finish(seq)
        return True

    def _finish(self, seq: Seq) -> None:
        self._note_cached(seq)
        self.kv.free(seq, self.now, final=True)
        seq.status = FINISHED
        seq.rec.finish_s = self.now / TICKS_PER_S
        seq.rec.status = STATUS_OK
        seq.rec.output_tokens = seq.num_out
        seq.drop_keys()
        self._session_next(seq.idx, self.now)
        self.num_done += 1
        if self.progress is not None and self.num_done % 500 == 0:
            self.progress(self.num_done, len(self.records))

    def _admitted(self, plan: StepPlan) -> int:
        load = 0
        bs = self.B
        for seq, n_hit, ext in plan.admitted:
            rec = seq.rec
            hit_tok, ext_tok = n_hit * bs, ext * bs
            rec.computed_tokens += seq.num_tokens - hit_tok - ext_tok
            if ext and self.offload is not None:
                load += self.offload.load(seq.keys, n_hit, ext)
            if rec.admitted_s is not None:
                self.c["preempted_prefix_cache_queries"] += seq.num_tokens
                self.c["preempted_prefix_cache_hits"] += hit_tok
                continue
            rec.admitted_s = self.now / TICKS_PER_S
            rec.cached_tokens = hit_tok + ext_tok
            rec.offload_hit_tokens = ext_tok
            if self.cfg.enable_prefix_caching:
                self.c["prefix_cache_queries"] += seq.num_tokens
                self.c["prefix_cache_hits"] += hit_tok
                rec.miss_cause = self._miss_cause(seq, n_hit + ext)
                rec.hit_tokens_by_retention = seq.hit_tokens_by_retention(hit_tok + ext_tok)
            if self.offload is not None:
                self.c["external_prefix_cache_queries"] += seq.num_tokens - hit_tok
                self.c["external_prefix_cache_hits"] += ext_tok
        return load

    def _miss_cause(self, seq: Seq, got: int) -> str:
        p, bs = seq.prompt_len, self.B
        if p < bs:
            return "below_block"
        cap = (p - 1) // bs
        if got >= cap:
            if cap < seq.nknown and self.pool.get(seq.key_at(cap)) is not None:
                return "last_token"
            return "none"
        key = seq.key_at(got)
        return "evicted" if self.seen.get(key >> OFFSET_BITS, -1) >= key else "cold"

    def _note_cached(self, seq: Seq) -> None:
        """Remember how far each key run was ever cached (miss causes): ``seen[run]``
        is the largest key of it cached so far (a run's keys lie on one trie path,
        so every smaller key of it was cached too)."""
        covered = seq.num_cached_blocks * self.B
        if covered <= 0 or not self.cfg.enable_prefix_caching:
            return
        seen = self.seen
        start = 0
        for base, n in seq.seg_runs:
            if start >= covered:
                break
            key = base + (n if n < covered - start else covered - start)
            run = key >> OFFSET_BITS
            if seen.get(run, -1) < key:
                seen[run] = key
            start += n
        if covered > seq.prompt_len and seq.out_content is not None:
            # (a fresh output is looked up by nobody: its runs need no record)
            key = seq.out_base + covered
            run = key >> OFFSET_BITS
            if seen.get(run, -1) < key:
                seen[run] = key

    def _lower_tier(self, seq: Seq, n_hit: int, now: int, reserve: bool) -> int:
        assert self.offload is not None
        cap = (seq.num_tokens - 1) // self.B
        seq.ensure_keys(cap)
        return self.offload.lookup(seq.keys, n_hit, cap, now, reserve)

    # -- the lazy fast path -------------------------------------------------------
    def _run_fast(self) -> None:
        """The main loop with the cohort: :meth:`_lazy_event` with its most frequent
        cases taken first (a window, a decode + admission step), the general path
        when it declines."""
        sched, co = self.sched, self.cohort
        assert co is not None
        running, fifo = sched.running, sched._fifo
        budget = self.r.max_num_batched_tokens
        while True:
            now = self.now
            if self.next_arrival <= now:
                self._arrive()
            n = len(running)
            if not n and not fifo:
                if self.next_arrival == NO_ARRIVAL:
                    return
                self.now = self.next_arrival
                continue
            general = False
            if n and co.n == n and n <= budget:
                hit = sched.probe_head(now, budget - n) if fifo else None
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
        assert co is not None
        running = sched.running
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
        assert co is not None and isinstance(pool, ExtentPool)
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
        assert co is not None and isinstance(pool, ExtentPool) and isinstance(kv, ExtentKV)
        running = sched.running
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
        sched._admit_waiting(plan, budget, now, head_hit)
        if not co.n and not plan.scheduled:
            return False  # nothing changed: the general path says why
        tokens = co.n
        attn = kv_read = co.ctx
        for seq, c in plan.scheduled:
            ctx = seq.num_computed + c
            tokens += c
            attn += c * ctx
            kv_read += ctx
        self.now = now + self.r.cost.step_ticks(tokens, attn, kv_read) + self._admitted(plan)
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
        assert self.cohort is not None
        done = self.cohort.finishing()
        if done:
            running = self.sched.running
            for s in done:
                self._finish(s)
                running.remove(s)  # (identity comes first in list.remove)

    # -- decode windows ------------------------------------------------------
    def _window_len(self) -> int:
        sched = self.sched
        return window_len(
            sched.running,
            block_size=self.B,
            token_budget=self.r.max_num_batched_tokens,
            free_blocks=self.pool.num_free,
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
        if self.extents:
            self._window_events_ext(k, n, s0)
        else:
            self._window_events(k, n, s0)
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

    def _window_events(self, k: int, n: int, s0: int) -> None:
        """Allocations and cachings of a window, one by one in per-step order
        (the per-block pool)."""
        running, bs, kv = self.sched.running, self.B, self.kv
        assert isinstance(kv, KVManager)
        cost, now0 = self.r.cost, self.now
        events: list[tuple[int, int, int]] = []
        caching = self.cfg.enable_prefix_caching
        for pos, s in enumerate(running):
            c = s.num_computed
            events.extend((i, pos, 0) for i in range(s.nblocks * bs - c, k, bs))
            if caching:
                events.extend((i, pos, 1) for i in range((bs - 1 - c) % bs, k, bs))
        events.sort()
        t_cache: dict[int, int] = {}
        for i, pos, kind in events:
            t = t_cache.get(i)
            if t is None:
                t = t_cache[i] = now0 + cost.window_ticks(n, s0, i)
            s = running[pos]
            if kind == 0:
                kv.grow_one(s, t)
            else:
                kv.cache_upto(s, s.num_computed + i + 1, t)

    def _window_events_ext(self, k: int, n: int, s0: int) -> None:
        """The same over the extent pool, batched: the blocks one step hands out go
        together (one tick); cachings key held blocks only, which no allocation can
        evict, so they follow, in per-step order (it fixes which duplicate a hit takes)."""
        running, bs, cost, now0 = self.sched.running, self.B, self.r.cost, self.now
        pool = self.pool
        assert isinstance(pool, ExtentPool)
        events: list[int] = []  # step * n + position: sorts like (step, position)
        kn, bn = k * n, bs * n
        for pos, s in enumerate(running):
            first = s.nblocks * bs - s.num_computed
            if first < k:
                events.extend(range(first * n + pos, kn, bn))
        if events:
            events.sort()
            ticks, take = cost.window_ticks, pool.take
            last_i = -1
            t = 0
            for e in events:
                i = e // n
                if i != last_i:
                    t = now0 + ticks(n, s0, i)
                    last_i = i
                take(1, t)
                s = running[e - i * n]
                s.pending.append([t, 1])
                s.nblocks += 1
        if self.cfg.enable_prefix_caching:
            fills: list[int] = []
            for pos, s in enumerate(running):
                first = (bs - 1 - s.num_computed) % bs
                if first < k:
                    if s.lazy_from < NEVER:  # fresh output: keyed when released
                        s.num_cached_blocks = (s.num_computed + k) // bs
                    else:
                        fills.extend(range(first * n + pos, kn, bn))
            if fills:
                fills.sort()
                cache_upto = self.kv.cache_upto
                for e in fills:
                    i = e // n
                    s = running[e - i * n]
                    cache_upto(s, s.num_computed + i + 1, now0)

    def close(self) -> None:
        """Break the engine's reference cycles (the free-queue ring, the scheduler's
        callback) once its result is out; the engine is unusable afterwards."""
        self.sched.on_free = None
        self.names.close()
        if isinstance(self.pool, ExtentPool):
            self.pool.close()

    # -- observation and results ------------------------------------------------
    def _observe(self) -> None:
        if self.series.tick(self.now, self.pool.usage()):
            self._sample()

    def _sample(self) -> None:
        """The time-series row :meth:`_observe` found due."""
        pool = self.pool
        usable = pool.num_blocks - 1
        row = {
            "kv_cache_usage_with_cached_perc": 1.0 - pool.num_clean / usable,
            "num_requests_running": float(len(self.sched.running)),
            "num_requests_waiting": float(self.sched.num_waiting()),
            "offload_usage_perc": self.offload.usage() if self.offload else 0.0,
            "prefix_cache_hit_tokens": float(self.c["prefix_cache_hits"]),
        }
        self.series.sample(self.now, row)

    def _result(self, wall_s: float) -> RunResult:
        recs = self.records
        if self.num_arrived < len(recs):  # some never arrived: a session stopped early
            for rec in recs:
                if math.isnan(rec.arrival_s):
                    rec.arrival_s = 0.0
        if self.on_records is not None:
            self.on_records(recs)
        counters: dict[str, Any] = dict(self.c)
        counters.update(
            num_preemptions=sum(r.num_preemptions for r in recs),
            num_evicted_blocks=self.pool.num_evicted,
            kv_cache_usage_perc_max=self.series.usage_max,
            kv_cache_usage_perc_mean=self.series.usage_mean(),
            num_gpu_blocks=self.r.num_blocks,
            block_size=self.B,
            clock=self.r.cost.label,
        )
        if self.offload is not None:
            o = self.offload
            counters.update(
                offload_capacity_blocks=o.capacity_blocks,
                offload_stored_blocks=o.num_stored,
                offload_loaded_blocks=o.num_loaded,
                offload_evicted_blocks=o.num_evicted,
                offload_load_s=o.load_ticks / TICKS_PER_S,
            )
        summary = summary_with_groups(recs, duration_s=self.now / TICKS_PER_S, counters=counters)
        summary["wall_s"] = wall_s
        return RunResult(
            records=recs,
            summary=summary,
            config={
                **self.cfg.to_dict(),
                "num_blocks": self.r.num_blocks,
                "max_model_len": self.r.max_model_len,
                "max_num_seqs": self.r.max_num_seqs,
                "max_num_batched_tokens": self.r.max_num_batched_tokens,
                "kv_dtype": self.r.kv_dtype,
            },
            timeseries=self.series.cols,
            histograms=self.pool.histograms(TICKS_PER_S),
            provenance={
                "backend": "sim",
                "kvlab_version": _version(),
                "seed": self.cfg.seed,
                "workload": self.workload.name,
                "clock": self.r.cost.label,
            },
        )


def _version() -> str:
    from kvlab import __version__

    return __version__


#: Latest arrival or longest think time accepted (ages stay far below 2**255 ticks).
MAX_TIME_S = 1e30


def _check_times(q: Request, i: int) -> None:
    for name in ("arrival_s", "think_time_s"):
        v = getattr(q, name)
        if v is not None and (not math.isfinite(v) or v < 0 or v > MAX_TIME_S):
            raise WorkloadError(
                f"must be finite, >= 0 and <= {MAX_TIME_S:g} s, got {v!r}",
                field=f"requests[{i}].{name}",
            )


def simulate(
    workload: Workload,
    config: SimConfig,
    progress: Progress | None = None,
    *,
    on_records: Callable[[list[RequestRecord]], None] | None = None,
) -> RunResult:
    """Run ``workload`` through the simulated engine and return its RunResult.

    ``on_records`` gets the per-request records as soon as they are final (the
    run is over), before the summary is computed: a caller can start writing
    them meanwhile (``kvlab simulate`` does, in a child process)."""
    from kvlab._gc import paused_gc

    with paused_gc():  # closed, the engine's objects are acyclic: reference counting frees them
        engine = Engine(workload, config, progress)
        engine.on_records = on_records
        try:
            return engine.run()
        finally:
            engine.close()
