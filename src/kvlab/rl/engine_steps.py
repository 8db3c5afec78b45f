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
does); :meth:`SteppedLoop.compress` moves a running request's KV one dtype tier down
(:mod:`kvlab.rl.kv_tiers`: fewer blocks, exact); :meth:`SteppedLoop.swap_out` moves it to
host memory, and it comes back by itself when its blocks fit (the transfer both ways on
the clock). Compression and swapping need the per-block pool (``SimConfig(extents=False)``,
no hybrid KV cache groups); :attr:`SteppedLoop.tiers_blocker` says why they are off.

Swapping follows vLLM v0's scheduler (``swap_space``, ``_schedule_default``): a step
serves the running requests first, then brings swapped requests back, in the order they
left, while their blocks (with the watermark, while others run), a running slot and the
token budget allow, and schedules them in that step; a step that starts with any
request swapped out admits no waiting request (v0 schedules prefills only when nothing
is swapped). So a swapped request stays out only while the running requests' growth
keeps its blocks taken. A swap copies the request's whole blocks over the host link
(``Resolved.offload_bw``, the CPU offload tier's bandwidth, and one
``offload_latency_s`` per transfer): ``latency + blocks * block_bytes / bandwidth``
each way. The swap-out is charged on the clock at once, the swap-in is added to the
time of the step that brings it back (the engine stalls: v0's worker swaps before the
step's forward pass). Host memory holds ``swap_space_gb`` (vLLM's default 4 GiB) in
whole blocks; a request swapped out keeps its tier.

Compression re-quantizes the request's KV: the clock is charged reading its bytes at
the old tier and writing them at the new one at the GPU's memory bandwidth (derated by
``SimConfig.mbu`` as the roofline's memory-bound steps are). Decode steps of a
compressed request are charged as at tier 0 (kvlab claims no attention speedup from a
smaller KV dtype), and kvlab does not model the accuracy a lower tier loses. While a
compressed request runs, the loop takes single steps instead of decode windows (the
window arithmetic assumes one block per ``block_size`` tokens): the same results, more
events. A compressed request that is preempted is recomputed at tier 0.

:func:`stepped_engine` builds an :class:`kvlab.sim.engine.Engine` with this loop.

Invariants: after :meth:`advance_until` returns False the workload is done (nothing
running, waiting or swapped) and :meth:`SteppedLoop.result` may be taken (once); every
request is in exactly one of: not arrived, waiting, running, swapped (status
:data:`SWAPPED`, in :attr:`SteppedLoop.swapped`, holding no GPU block), done.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kvlab.errors import ConfigError
from kvlab.results import RunResult
from kvlab.rl.kv_tiers import TieredKV, max_tier
from kvlab.sim.config import SimConfig
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.engine import Engine
from kvlab.sim.kv_manager import BlockSeq, KVManager
from kvlab.sim.run_state import NO_ARRIVAL
from kvlab.sim.scheduler import StepPlan
from kvlab.sim.sequence import RUNNING, Seq
from kvlab.sim.step_loop import StepLoop
from kvlab.workload.records import Workload

#: ``Seq.status`` of a request swapped out to host memory (the simulator's own
#: statuses are WAITING 0, RUNNING 1, FINISHED 2).
SWAPPED = 3
#: vLLM's default ``swap_space`` (GiB of host memory per GPU for swapped KV).
DEFAULT_SWAP_SPACE_GB = 4.0
GIB = 1 << 30


class SteppedLoop(StepLoop):
    """The step loop, advanced by the caller (see module doc)."""

    loop_name = "step"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.num_events = 0
        self.num_forced_preemptions = 0
        self.num_compressions = 0
        self.num_swaps_out = 0
        self.num_swaps_in = 0
        #: clock ticks charged for re-quantizing and for swap transfers (both ways)
        self.compress_ticks = 0
        self.swap_ticks = 0
        #: swapped requests in the order they left, with their tier
        self.swapped: deque[tuple[Seq, int]] = deque()
        self._swap_in_pending = 0
        self._wall_s = 0.0
        r = self.r
        self._latency_ticks = round(r.offload_latency_s * TICKS_PER_S)
        self._block_ticks = round(r.block_bytes / r.offload_bw * TICKS_PER_S)
        self.swap_capacity_blocks = int(DEFAULT_SWAP_SPACE_GB * GIB // r.block_bytes)
        #: why compress / swap are off in this run (None: they are on)
        self.tiers_blocker: str | None = None
        self.tiers: TieredKV | None = None
        self.max_tier = max_tier(r.kv_dtype)
        kv = self.kv
        if type(kv) is KVManager:
            # the tiered manager replaces the plain one before any request exists (a
            # manager keeps no state but its pool and rules); the scheduler's admission
            # is wrapped so that swapped requests come first (both no-ops while none is)
            self.tiers = TieredKV(kv)
            self.kv = self.sched.kv = self.tiers
            sched = self.sched
            self._admit_waiting = sched.admit_waiting
            self._probe_head = sched.probe_head
            sched.admit_waiting = self._admit_unless_swapped  # type: ignore[method-assign]
            sched.probe_head = self._probe_unless_swapped  # type: ignore[method-assign]
        elif self.kv_choice.pool == "extent":
            self.tiers_blocker = (
                "compress and swap need block identities: build the stepped engine with "
                "SimConfig(extents=False) (the per-block pool)"
            )
        else:
            self.tiers_blocker = (
                f"compress and swap are not modelled on the {self.kv_choice.pool!r} KV "
                "cache (hybrid KV cache groups)"
            )

    # -- the event loop --------------------------------------------------------
    def advance_until(self, stop: Callable[[SteppedLoop], bool]) -> bool:
        """Run events until ``stop(self)`` holds after one (True) or the workload is
        done (False)."""
        sched = self.sched
        wall0 = time.perf_counter()
        try:
            while True:
                if self.next_arrival <= self.now:
                    self._arrive()
                if not sched.running and not sched.num_waiting() and not self.swapped:
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

    def _window_len(self) -> int:
        # a compressed request grows by other block arithmetic than the window's:
        # take single steps while one runs (the same results, more events)
        # and a step, not a window, takes a swapped request back
        if self.tiers is not None and (
            self.tiers.tier or (self.swapped and self._swap_head_fits())
        ):
            return 0
        return super()._window_len()

    # -- preemption ------------------------------------------------------------
    def preempt(self, seq: Seq) -> int:
        """Preempt running ``seq`` by recompute; the blocks it freed (its cached ones
        stay in the prefix cache, evictable). A compressed request is recomputed at
        tier 0."""
        running = self.sched.running
        if seq not in running:
            raise ValueError(f"request {seq.req.request_id!r} is not running")
        before = self.kv.num_free
        running.remove(seq)
        self.sched._preempt(seq, self.now)
        self.num_forced_preemptions += 1
        return self.kv.num_free - before

    # -- compression -------------------------------------------------------------
    def tier(self, seq: Seq) -> int:
        """The request's KV tier (0: the run's KV dtype; each tier halves its bytes)."""
        return self._tiers().tier_of(seq)

    def compress_gain(self, seq: Seq) -> int:
        """Net free blocks :meth:`compress` would give now (no side effects; may be
        <= 0 when the request shares its blocks with other running ones)."""
        kv = self._tiers()
        return kv.compress_gain(_blocks(seq), kv.tier_of(seq) + 1)

    def can_compress(self, seq: Seq) -> bool:
        """Whether :meth:`compress` would succeed: ``seq`` runs, is above the lowest
        tier, and its new blocks fit in the free blocks once its own are released."""
        kv = self._tiers()
        if seq.status != RUNNING or seq not in self.sched.running:
            return False
        t = kv.tier_of(seq) + 1
        return t <= self.max_tier and kv.compress_gain(_blocks(seq), t) + kv.num_free >= 0

    def compress(self, seq: Seq) -> int:
        """Move running ``seq``'s KV one tier down (:mod:`kvlab.rl.kv_tiers`) and charge
        the re-quantization on the clock; returns the net blocks freed.

        Raises ValueError when it is not possible (:meth:`can_compress`)."""
        kv = self._tiers()
        if not self.can_compress(seq):
            rid = seq.req.request_id
            if seq not in self.sched.running:
                raise ValueError(f"request {rid!r} is not running")
            if kv.tier_of(seq) >= self.max_tier:
                raise ValueError(
                    f"request {rid!r} is already at the lowest KV tier ({self.max_tier})"
                )
            raise ValueError(f"request {rid!r}: its compressed blocks do not fit")
        old = kv.tier_of(seq)
        ticks = self.requantize_ticks(seq.num_computed, old, old + 1)
        self.now += ticks
        self.compress_ticks += ticks
        self._note_cached(seq)
        self.num_compressions += 1
        return kv.requantize(_blocks(seq), old + 1, self.now)

    def requantize_ticks(self, num_tokens: int, old: int, new: int) -> int:
        """Clock ticks to re-quantize ``num_tokens`` tokens of KV from tier ``old`` to
        ``new``: their bytes read at ``old`` and written at ``new`` at the GPU's memory
        bandwidth times ``SimConfig.mbu``."""
        per_token = self.r.kv_bytes_per_token
        nbytes = num_tokens * per_token / (1 << old) + num_tokens * per_token / (1 << new)
        bw = self.r.gpu.mem_bw_bytes_per_s * self.cfg.mbu
        return round(nbytes / bw * TICKS_PER_S)

    # -- swapping ------------------------------------------------------------------
    @property
    def swapped_blocks(self) -> int:
        """Host-memory blocks the swapped requests hold."""
        kv = self._tiers()
        return sum(kv.blocks_for(s.num_computed, t) for s, t in self.swapped)

    def swap_ticks_for(self, num_blocks: int) -> int:
        """Clock ticks one transfer of ``num_blocks`` blocks takes over the host link."""
        return self._latency_ticks + num_blocks * self._block_ticks

    def can_swap(self, seq: Seq) -> bool:
        """Whether :meth:`swap_out` would succeed: ``seq`` runs and its blocks fit in
        the host memory left."""
        self._tiers()
        if seq.status != RUNNING or seq not in self.sched.running:
            return False
        return self.swapped_blocks + seq.nblocks <= self.swap_capacity_blocks

    def swap_out(self, seq: Seq) -> float:
        """Copy running ``seq``'s blocks to host memory, release them (its cached full
        blocks stay in the prefix cache, evictable) and move it to :attr:`swapped`;
        returns the seconds of transfer charged on the clock.

        Raises ValueError when it is not possible (:meth:`can_swap`)."""
        kv = self._tiers()
        if not self.can_swap(seq):
            rid = seq.req.request_id
            if seq not in self.sched.running:
                raise ValueError(f"request {rid!r} is not running")
            raise ValueError(
                f"request {rid!r}: its {seq.nblocks} blocks do not fit in the swap space "
                f"({self.swap_capacity_blocks - self.swapped_blocks} blocks left)"
            )
        tier = kv.tier_of(seq)
        ticks = self.swap_ticks_for(seq.nblocks)
        self.now += ticks
        self.swap_ticks += ticks
        self.sched.running.remove(seq)
        self._note_cached(seq)
        kv.free(_blocks(seq), self.now)
        seq.status = SWAPPED
        self.swapped.append((seq, tier))
        self.num_swaps_out += 1
        return ticks / TICKS_PER_S

    def _swap_in_need(self, seq: Seq, tier: int, num_new_tokens: int) -> int:
        """Free blocks a swapped request needs to come back and take its next
        ``num_new_tokens`` (with the watermark while others run)."""
        kv = self._tiers()
        slot = min(seq.num_computed + num_new_tokens, kv.max_model_len)
        return kv.blocks_for(slot, tier) + (kv.watermark_blocks if self.sched.running else 0)

    def _swap_head_fits(self) -> bool:
        """Whether the first swapped request could come back in the next step (a
        sufficient check for ending a decode window: a step decides exactly)."""
        seq, tier = self.swapped[0]
        return (
            len(self.sched.running) < self.sched.max_num_seqs
            and self._swap_in_need(seq, tier, 1) <= self._tiers().num_free
        )

    def _swap_in(self, plan: StepPlan, budget: int, now: int) -> None:
        """Inside a step, after the running requests took their blocks (vLLM v0's
        ``_schedule_swapped``): bring swapped requests back in the order they left
        while a running slot, the token budget and their blocks allow, and schedule
        them in this step; their transfers are added to the step's time
        (:meth:`_admitted`)."""
        kv, sched = self._tiers(), self.sched
        running, swapped, mml = sched.running, self.swapped, kv.max_model_len
        while swapped and budget > 0 and len(running) < sched.max_num_seqs:
            seq, tier = swapped[0]
            n = min(seq.num_tokens - seq.num_computed, budget, mml - seq.num_computed - 1)
            if self._swap_in_need(seq, tier, n) > kv.num_free:
                break
            swapped.popleft()
            blocks = kv.blocks_for(seq.num_computed, tier)
            ticks = self.swap_ticks_for(blocks)
            self._swap_in_pending += ticks
            self.swap_ticks += ticks
            kv.restore(_blocks(seq), tier, now)
            ok = kv.extend(_blocks(seq), n, now)
            assert ok  # checked above
            seq.status = RUNNING
            running.append(seq)
            plan.scheduled.append((seq, n))
            budget -= n
            self.num_swaps_in += 1

    def _admitted(self, plan: StepPlan) -> int:
        load = super()._admitted(plan)
        if self._swap_in_pending:
            load += self._swap_in_pending
            self._swap_in_pending = 0
        return load

    def _admit_unless_swapped(
        self, plan: StepPlan, budget: int, now: int, head_hit: Any = None
    ) -> None:
        # swapped requests first; a step that starts with any swapped admits no
        # waiting request (vLLM v0 schedules prefills only when none is swapped)
        if self.swapped:
            self._swap_in(plan, budget, now)
            return
        self._admit_waiting(plan, budget, now, head_hit)

    def _probe_unless_swapped(self, now: int, budget: int | None = None) -> Any:
        return None if self.swapped else self._probe_head(now, budget)

    def _tiers(self) -> TieredKV:
        if self.tiers is None:
            raise ConfigError(self.tiers_blocker or "compress and swap are off")
        return self.tiers

    @property
    def swap_s(self) -> float:
        """Seconds of swap transfers charged on the clock so far (both ways)."""
        return self.swap_ticks / TICKS_PER_S

    @property
    def compress_s(self) -> float:
        """Seconds of re-quantization charged on the clock so far."""
        return self.compress_ticks / TICKS_PER_S

    def result(self) -> RunResult:
        """The run's result (after :meth:`advance_until` returned False)."""
        return self._result(self._wall_s)


def _blocks(seq: Seq) -> BlockSeq:
    """A request of the per-block pool (the only pool with tiers)."""
    assert isinstance(seq, BlockSeq)
    return seq


def _never(loop: SteppedLoop) -> bool:
    return False


def stepped_engine(
    workload: Workload, cfg: SimConfig, *, swap_space_gb: float = DEFAULT_SWAP_SPACE_GB
) -> tuple[Engine, SteppedLoop]:
    """An engine on ``workload`` whose loop is a :class:`SteppedLoop` (the per-block or
    extent pool ``cfg`` asks for; priority or FCFS scheduling). ``swap_space_gb``: host
    memory for swapped KV (vLLM's ``swap_space``)."""
    if not swap_space_gb >= 0:
        raise ConfigError(f"swap_space_gb must be >= 0, got {swap_space_gb!r}")
    engine = Engine(workload, cfg, loop_class=SteppedLoop)
    loop = engine.loop
    assert isinstance(loop, SteppedLoop)
    loop.swap_capacity_blocks = int(swap_space_gb * GIB // loop.r.block_bytes)
    engine.kv = loop.kv  # the tiered manager, over the same pool
    return engine, loop
