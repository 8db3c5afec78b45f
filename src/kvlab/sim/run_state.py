"""The bookkeeping every engine loop shares: arrivals and sessions, the
per-request records, the counters, the time series and the result.

A loop (:mod:`kvlab.sim.step_loop`, :mod:`kvlab.sim.cohort_loop`) subclasses
:class:`RunState` and decides how the engine moves from event to event; what
happens to a request when it arrives, is admitted, emits a token or finishes,
and how the run is observed and summed up, is decided here, once.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import Any

from kvlab.results import (
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
    RunResult,
)
from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.hashing import OFFSET_BITS
from kvlab.sim.kv import KVCache, KVChoice
from kvlab.sim.metrics import TimeSeries
from kvlab.sim.offload import OffloadTier
from kvlab.sim.prepare import PreparedWorkload, ticks
from kvlab.sim.resolve import Resolved
from kvlab.sim.scheduler import Scheduler, StepPlan
from kvlab.sim.sequence import FINISHED, Seq

Progress = Callable[[int, int], None]

#: ``RunState.next_arrival`` when no arrival is left (later than any tick).
NO_ARRIVAL = 1 << 256

_ticks = ticks


class RunState:
    """The state of one run that every loop shares.

    Invariants: ``now`` (ticks) only grows; every request is in exactly one of:
    not yet arrived, waiting, running, done; ``records[i]`` is request i's record;
    ``c`` holds vLLM's prefix-cache counters (tokens) and the step count;
    ``next_arrival`` is the tick of the next arrival of either kind (open-loop
    arrivals ``arrival_ticks[arrived:]``, session follow-ups in the heap
    ``followups`` of (tick, index)), NO_ARRIVAL when none is left.
    """

    #: the loop's name, recorded in the run's provenance (``sim_loop``)
    loop_name = "base"

    def __init__(
        self,
        prepared: PreparedWorkload,
        cfg: SimConfig,
        r: Resolved,
        kv_choice: KVChoice,
        sched: Scheduler,
        offload: OffloadTier | None,
        progress: Progress | None = None,
    ) -> None:
        self.cfg = cfg
        self.r = r
        self.prepared = prepared
        self.workload = prepared.workload
        self.progress = progress
        self.B = r.block_size
        self.offload = offload
        self.kv_choice = kv_choice
        self.kv: KVCache = kv_choice.kv
        self.seq_class: Any = self.kv.seq_class
        self.sched = sched
        sched.on_free = self._note_cached
        if offload is not None:
            sched.lower_tier = self._lower_tier
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
        nan = math.nan
        self.records: list[RequestRecord] = [  # (by position, twice as fast as by keyword)
            RequestRecord(
                # request_id, arrival_s, prompt_tokens, output_tokens, session_id, cls, status
                q.request_id,
                nan,
                q.prompt_tokens,
                q.output_tokens,
                q.session_id,
                q.cls,
                STATUS_UNFINISHED,
            )
            for q in self.workload.requests
        ]
        #: a calibrated clock's time outside the engine: requests join the queue this
        #: many ticks after they arrive (their records keep the arrival)
        self.delay = delay = r.request_delay
        self.arrival_ticks = (
            [t + delay for t in prepared.arrival_ticks] if delay else prepared.arrival_ticks
        )
        self.arrival_index = prepared.arrival_index
        self.arrived = 0
        self.followups: list[tuple[int, int]] = []
        self.next_arrival = NO_ARRIVAL
        self.next_in_session = dict(prepared.next_in_session)
        self.num_done = 0
        self.num_arrived = 0
        self._next_arrival()
        self.setup()

    def setup(self) -> None:
        """The loop's own state, once the shared state is set (a loop's hook)."""

    def run(self) -> RunResult:
        """Run the workload to its end and return the result."""
        wall0 = time.perf_counter()
        self.run_loop()
        return self._result(time.perf_counter() - wall0)

    def run_loop(self) -> None:
        """Move from event to event until the workload is done (the loop's own)."""
        raise NotImplementedError

    # -- arrivals and sessions -------------------------------------------------
    def _next_arrival(self) -> None:
        j, f = self.arrived, self.followups
        if j < len(self.arrival_ticks):
            t = self.arrival_ticks[j]
            self.next_arrival = f[0][0] if f and f[0] < (t, self.arrival_index[j]) else t
        else:
            self.next_arrival = f[0][0] if f else NO_ARRIVAL

    def _arrive(self) -> None:
        ticks, index, followups = self.arrival_ticks, self.arrival_index, self.followups
        now, m, n = self.now, self.r.max_model_len, len(ticks)
        new_seq, static = self.seq_class, self.prepared.seq_static
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
            rec.arrival_s = (t - self.delay) / TICKS_PER_S
            self.num_arrived += 1
            if q.prompt_tokens >= m:  # vLLM rejects prompts that leave no room to generate
                rec.status = STATUS_REJECTED
                rec.error = f"prompt of {q.prompt_tokens} tokens >= max_model_len {m}"
                self._session_next(i, t)
                continue
            self.sched.add(new_seq(i, static(i), t, m, rec))
        self._next_arrival()

    def _session_next(self, i: int, t_end: int) -> None:
        j = self.next_in_session.pop(i, None)
        if j is not None:
            think = self.workload.requests[j].think_time_s or 0.0
            heapq.heappush(self.followups, (t_end + _ticks(think) + self.delay, j))
            self._next_arrival()

    # -- requests ----------------------------------------------------------
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
            assert rec.computed_tokens is not None  # the simulator counts every token
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
            if cap < seq.nknown and self.kv.is_cached(seq.key_at(cap)):
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

    # -- observation and results ------------------------------------------------
    def observe_with(self, observer: Callable[[RunState], None]) -> None:
        """Call ``observer(self)`` after every engine event (a step or a decode window),
        once the run's own time series has seen it, and count the scheduler's
        preemptions as they happen in ``num_preemptions_seen``.

        For watching a run event by event (``kvlab simulate --serve-metrics``).
        Optional and additive: it replaces this instance's ``_observe`` and wraps its
        scheduler's ``schedule``, so a run without an observer executes exactly the
        code it did before, at no cost. Call before :meth:`run`.
        """
        observe, schedule = self._observe, self.sched.schedule
        self.num_preemptions_seen = 0

        def observed() -> None:
            observe()
            observer(self)

        def counted(now: int) -> StepPlan:
            plan = schedule(now)
            self.num_preemptions_seen += len(plan.preempted)
            return plan

        self._observe = observed  # type: ignore[method-assign]
        self.sched.schedule = counted  # type: ignore[method-assign]

    def _observe(self) -> None:
        if self.series.tick(self.now, self.kv.usage()):
            self._sample()

    def _sample(self) -> None:
        """The time-series row :meth:`_observe` found due."""
        kv = self.kv
        usable = kv.num_blocks - 1
        row = {
            "kv_cache_usage_with_cached_perc": 1.0 - kv.num_clean / usable,
            "num_requests_running": float(len(self.sched.running)),
            "num_requests_waiting": float(self.sched.num_waiting()),
            "offload_usage_perc": self.offload.usage() if self.offload else 0.0,
            "prefix_cache_hit_tokens": float(self.c["prefix_cache_hits"]),
        }
        self.series.sample(self.now, row)

    def _result(self, wall_s: float) -> RunResult:
        from kvlab.backends.base import build_result

        recs = self.records
        if self.num_arrived < len(recs):  # some never arrived: a session stopped early
            for rec in recs:
                if math.isnan(rec.arrival_s):
                    rec.arrival_s = 0.0
        counters: dict[str, Any] = dict(self.c)
        counters.update(
            num_evicted_blocks=self.kv.num_evicted,
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
        return build_result(
            "sim",
            recs,
            wall_s=wall_s,
            duration_s=self.now / TICKS_PER_S,
            counters=counters,
            counter_source="simulated",
            record_source="simulated",
            config={
                **self.cfg.to_dict(),
                "num_blocks": self.r.num_blocks,
                "max_model_len": self.r.max_model_len,
                "max_num_seqs": self.r.max_num_seqs,
                "max_num_batched_tokens": self.r.max_num_batched_tokens,
                "kv_dtype": self.r.kv_dtype,
            },
            timeseries=self.series.cols,
            histograms=self.kv.histograms(TICKS_PER_S),
            seed=self.cfg.seed,
            workload=self.workload.name,
            provenance={
                "clock": self.r.cost.label,
                "kv_pool": self.kv_choice.pool,
                "kv_pool_reason": self.kv_choice.reason,
                "sim_loop": self.loop_name,
            },
        )
