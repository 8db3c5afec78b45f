"""The simulation engine: a vLLM-v1-like serving engine over a workload.

Where things are:

* :func:`simulate` / :class:`Engine` (this file): wire the parts together and
  pick the loop that runs them.
* The loops, one per file, all moving from event to event as
  schedule -> cost -> advance. With vLLM's async scheduling (the default on a
  GPU, :func:`kvlab.sim.resolve.scheduling_mode`):

  - :class:`kvlab.sim.async_cohort_loop.AsyncCohortLoop`, **the default run's
    loop** (extent pool, FCFS, decode windows on): two batches in flight, the
    decoding requests advanced lazily as a cohort; any other event is taken by
    the async loop's code;
  - :class:`kvlab.sim.async_loop.AsyncLoop`: vLLM's ``AsyncScheduler``, every
    batch through the scheduler, one exact batch or a decode window (priority
    scheduling, the per-block pool, ``exact_steps``, a batch observer).

  With the synchronous scheduler (``--no-async-scheduling``, an offload tier, a
  calibrated clock):

  - :class:`kvlab.sim.cohort_loop.CohortLoop` (extent pool, FCFS, decode windows
    on): decoding requests advanced lazily as a cohort; any other event is taken
    by the step loop's code;
  - :class:`kvlab.sim.step_loop.StepLoop`: every event through the scheduler,
    one exact step or one decode window (priority scheduling, the per-block
    pool, ``exact_steps``, the offload tier).

* What every loop shares (arrivals, sessions, records, counters, time series,
  the result): :class:`kvlab.sim.run_state.RunState`.
* The KV cache behind one interface (:class:`kvlab.sim.kv.KVCache`), per-block,
  extents or hybrid groups (:mod:`kvlab.sim.hybrid`, for sliding-window models),
  chosen in :func:`kvlab.sim.kv.make_kv`; the scheduler
  (:mod:`kvlab.sim.scheduler`); the clock (:mod:`kvlab.sim.cost_model`); a
  workload prepared once for every run on it (:mod:`kvlab.sim.prepare`).

The pool, loop and scheduler a run used are in its provenance (``kv_pool``,
``kv_pool_reason``, ``sim_loop``, ``scheduler``). Nothing here forks, switches the garbage
collector, starts a process or reads the wall clock for simulated time.
"""

from __future__ import annotations

from dataclasses import replace

from kvlab.errors import ConfigError
from kvlab.results import RunResult
from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.hybrid import group_rules
from kvlab.sim.kv import KVChoice, make_kv
from kvlab.sim.offload import OffloadTier
from kvlab.sim.policies import make_policy
from kvlab.sim.prepare import PreparedWorkload, prepare
from kvlab.sim.resolve import resolve
from kvlab.sim.run_state import Progress, RunState
from kvlab.sim.scheduler import Scheduler
from kvlab.sim.step_loop import StepLoop
from kvlab.workload.records import Workload

#: why a run with a synchronous ``loop_class`` (e.g. the RL environment's) is synchronous
SYNC_LOOP = "synchronous: the loop given steps vLLM's synchronous scheduler"


def choose_loop(cfg: SimConfig, kv_choice: KVChoice, use_async: bool) -> type[RunState]:
    """With async scheduling (``use_async``, :func:`kvlab.sim.resolve.scheduling_mode`)
    the async cohort loop where it applies (extent pool, FCFS, decode windows on),
    else the async loop; synchronously the cohort loop where it applies, else the
    step loop."""
    fast = kv_choice.pool == "extent" and not cfg.exact_steps and cfg.scheduling == "fcfs"
    if use_async:
        if fast:
            from kvlab.sim.async_cohort_loop import AsyncCohortLoop

            return AsyncCohortLoop
        from kvlab.sim.async_loop import AsyncLoop

        return AsyncLoop
    if fast:
        from kvlab.sim.cohort_loop import CohortLoop

        return CohortLoop
    return StepLoop


class Engine:
    """One simulation run: the parts for ``cfg`` and the loop that drives them."""

    def __init__(
        self,
        workload: Workload | PreparedWorkload,
        cfg: SimConfig,
        progress: Progress | None = None,
        loop_class: type[RunState] | None = None,
    ) -> None:
        """``loop_class`` replaces the loop :func:`choose_loop` picks (a subclass of
        :class:`~kvlab.sim.step_loop.StepLoop` that stops at decision points, e.g.
        :class:`kvlab.rl.engine_steps.SteppedLoop`)."""
        self.cfg = cfg
        self.r = r = resolve(cfg)
        if loop_class is not None and r.async_scheduling:
            from kvlab.sim.async_loop import AsyncLoop

            if not issubclass(loop_class, AsyncLoop):  # a loop of the synchronous scheduler
                if cfg.async_scheduling:
                    raise ConfigError(
                        f"{loop_class.__name__} steps vLLM's synchronous scheduler: "
                        "async_scheduling must be off"
                    )
                self.r = r = replace(r, async_scheduling=False, scheduling_reason=SYNC_LOOP)
        # a plain workload is prepared for this run only: nothing kept for later runs
        prepared = prepare(workload, r.block_size, keep=False)
        prepared.check_capacity(r.max_model_len, r.num_blocks)
        offload = None
        if r.offload_blocks > 0:
            offload = OffloadTier(
                r.offload_blocks, r.block_bytes, r.offload_bw, r.offload_latency_s, cfg.offload_mode
            )
        groups, groups_reason = group_rules(
            r.model, kv_dtype=r.kv_dtype, tp=cfg.tp, block_size=r.block_size
        )
        self.kv_choice = make_kv(
            groups=groups,
            in_flight_tokens=r.max_num_batched_tokens,
            num_blocks=r.num_blocks,
            block_size=r.block_size,
            max_model_len=r.max_model_len,
            enable_caching=cfg.enable_prefix_caching,
            policy=make_policy(cfg.policy, TICKS_PER_S, **dict(cfg.policy_params)),
            offload=offload,
            extents=cfg.extents,
            reserve_full_prompt=cfg.reserve_full_prompt,
            watermark_blocks=int(cfg.watermark * r.num_blocks),
        )
        if groups_reason is not None:  # groups the hybrid cache does not model
            why = "; ".join(x for x in (self.kv_choice.reason, groups_reason) if x)
            self.kv_choice = replace(self.kv_choice, reason=why)
        self.kv = self.kv_choice.kv
        #: the pool behind the KV cache (for inspection)
        self.pool = self.kv.pool  # type: ignore[attr-defined]
        sched_class = Scheduler
        if r.async_scheduling:
            from kvlab.sim.async_loop import AsyncScheduler, check_async

            check_async(r.offload_blocks)
            sched_class = AsyncScheduler
        self.sched = sched_class(
            self.kv,
            max_num_seqs=r.max_num_seqs,
            max_num_batched_tokens=r.max_num_batched_tokens,
            max_model_len=r.max_model_len,
            priority=cfg.scheduling == "priority",
            caching=cfg.enable_prefix_caching,
        )
        if loop_class is None:
            loop_class = choose_loop(cfg, self.kv_choice, r.async_scheduling)
        self.loop = loop_class(prepared, cfg, r, self.kv_choice, self.sched, offload, progress)

    def run(self) -> RunResult:
        result = self.loop.run()
        # which of vLLM's schedulers the run follows
        result.provenance["scheduler"] = (
            "AsyncScheduler (async scheduling, 2 batches in flight)"
            if self.r.async_scheduling
            else "Scheduler (synchronous)"
        )
        # why: set, vLLM's GPU default, or what rules it out (kvlab.sim.resolve.scheduling_mode)
        result.provenance["scheduler_reason"] = self.r.scheduling_reason
        return result

    def close(self) -> None:
        """Break the run's reference cycles (the extent pool's free-queue ring, the
        scheduler's callbacks) once its result is out; the engine is unusable afterwards."""
        self.sched.on_free = None
        self.sched.lower_tier = None
        self.kv.close()


def simulate(
    workload: Workload | PreparedWorkload,
    config: SimConfig,
    progress: Progress | None = None,
) -> RunResult:
    """Run ``workload`` through the simulated engine and return its RunResult.

    ``workload`` may be prepared (:func:`kvlab.sim.prepare.prepare`) for runs that
    share it. ``progress(done, total)`` is called every 500 finished requests."""
    engine = Engine(workload, config, progress)
    try:
        return engine.run()
    finally:
        engine.close()
