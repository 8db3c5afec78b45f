"""``kvlab/KVPressure-v0``: keep, evict, compress or swap running requests under KV
pressure, on kvlab's own engine (issue 14).

An episode is a seeded scenario (:mod:`kvlab.rl.pressure_scenario`: a generated chat or
agentic workload, a memory budget, an arrival regime of the difficulty tier; by default
one of the tier's fixed set of ``num_scenarios`` workloads, made once per process, with
a budget drawn by the reset) played on the simulator's step loop stopped at decision
points (:mod:`kvlab.rl.engine_steps`):

- reset: build the engine on the scenario's budgeted pool, run it until usage first
  reaches ``warmup_usage`` (at most ``warmup_events`` events), then to the first
  decision point;
- a decision point comes every ``every_events`` engine events, or sooner when the KV
  usage crosses ``usage_threshold`` upwards;
- step: apply the action to the top-K candidates (the running requests holding the
  most blocks, :func:`kvlab.rl.pressure_observation.candidates`), run the engine to the
  next decision point, score; ``steps`` decisions per episode (15), fewer when the
  workload ends first.

Actions: ``MultiDiscrete([4] * k)``, per candidate slot :data:`ACTIONS` ``keep`` (0),
``evict`` (1), ``compress`` (2), ``swap_to_cpu`` (3). ``evict`` preempts the request by
recompute (:meth:`SteppedLoop.preempt`: its blocks are freed, it goes back to the
waiting queue) or, with ``evict_mode="drop"``, drops it (a failure). ``compress`` and
``swap_to_cpu`` call the loop's ``compress(seq)`` (one KV dtype tier down, exact blocks,
re-quantization on the clock) / ``swap_out(seq)`` (to host memory, the transfer on the
clock; it comes back by itself), on the per-block pool the engine runs here; the loop's
``can_compress`` / ``can_swap`` decide the mask. ``info["action_mask"]`` is
a ``(k, 4)`` bool array (:meth:`KVPressureEnv.action_masks` the same, flat, for
MaskablePPO): an empty slot allows only ``keep``; a masked action is played as ``keep``.

Observation: the Box vector of :mod:`kvlab.rl.pressure_observation`; the compact dict
for LLM policies is :meth:`KVPressureEnv.compact_observation` (also
``info["compact"]``).

Reward: the seven terms of :mod:`kvlab.rl.pressure_rewards` over the episode's tallies,
paid as it goes: a step's reward is the change of the weighted episode score since the
previous step (the first step's: the score itself), so an episode's rewards sum to its
score. ``info["reward_terms"]`` splits the step's reward by term (weighted; the values
sum to the reward), ``info["episode_terms"]`` holds the episode's unweighted scores so
far and the weight-0 metrics. The tallies read the engine: failures = requests the
scheduler preempted on its own because a running request found no free block (the
overflow a policy should prevent), requests dropped by ``evict_mode="drop"`` and
requests rejected on arrival; tokens = output tokens made in the episode; usage = KV
usage at each decision; overflow = any such scheduler preemption; evicted tokens =
computed tokens of evicted requests, protected = those in system or context segments;
swap latency = seconds of swap transfers the loop charged on its clock in the episode
(out and back in).

Invariant: the same constructor arguments and reset seed give the same trajectory
under the same actions (the engine and the scenarios are deterministic).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from kvlab.errors import ConfigError
from kvlab.results import STATUS_FAILED, STATUS_REJECTED
from kvlab.rl.engine_steps import SteppedLoop
from kvlab.rl.pressure_observation import (
    CANDIDATE_FEATURES,
    GLOBAL_FEATURES,
    NUM_CAND,
    NUM_GLOBAL,
    OBS_HIGH,
    OBS_LOW,
    SeqFacts,
    candidate_row,
    candidates,
    facts_of,
    protected_tokens_in,
    request_summary,
)
from kvlab.rl.pressure_rewards import PRESSURE_USAGE, EpisodeTally, breakdown, check_weights
from kvlab.rl.pressure_scenario import (
    DEFAULT_NUM_SCENARIOS,
    DIFFICULTIES,
    KINDS,
    Scenario,
    cached_scenario,
    check_choice,
    draw_budget,
    given_scenario,
)
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.prepare import PreparedWorkload, prepare
from kvlab.sim.sequence import FINISHED, Seq
from kvlab.workload.records import Workload

__all__ = [
    "ACTIONS",
    "CANDIDATE_FEATURES",
    "GLOBAL_FEATURES",
    "KVPressureEnv",
    "PressureLoop",
    "heuristic_action",
]

ACTIONS: tuple[str, ...] = ("keep", "evict", "compress", "swap_to_cpu")
KEEP, EVICT, COMPRESS, SWAP = range(4)
EVICT_MODES: tuple[str, ...] = ("recompute", "drop")
#: the most compressions of one request (fp16 -> int8 -> int4)
MAX_TIER = 2


class PressureLoop(SteppedLoop):
    """The stepped loop, counting the output tokens of finished requests
    (``finished_out``): with the running, waiting and swapped requests' own counts, the
    output tokens made so far."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.finished_out = 0

    def _finish(self, seq: Seq) -> None:
        super()._finish(seq)
        self.finished_out += seq.num_out

    def output_tokens(self) -> int:
        n = self.finished_out
        for s in self.sched.running:
            n += s.num_out
        for x in self.sched.waiting:
            n += (x[3] if isinstance(x, tuple) else x).num_out
        for s, _ in self.swapped:
            n += s.num_out
        return n


class KVPressureEnv(gym.Env[np.ndarray, np.ndarray]):
    """See the module doc. ``seed`` seeds the first :meth:`reset` that gives none;
    ``num_scenarios``: the scenarios a reset draws from, per tier and kind (scenario
    seeds ``0 .. num_scenarios - 1``, each made and prepared once per process, the
    budget drawn afresh by each reset; ``None``: a new scenario every reset, see
    :mod:`kvlab.rl.pressure_scenario`). ``workload``
    replaces the generated workloads (every episode plays it, e.g. a trace slice);
    ``budget`` fixes the budget instead of drawing it from the tier."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's own type)

    def __init__(
        self,
        difficulty: str = "easy",
        seed: int | None = None,
        kind: str = "mixed",
        *,
        k: int = 8,
        steps: int = 15,
        every_events: int = 4,
        usage_threshold: float = 0.9,
        warmup_usage: float = 0.5,
        warmup_events: int = 8,
        pool_blocks: int = 512,
        block_size: int = 16,
        max_num_seqs: int = 32,
        evict_mode: str = "recompute",
        weights: Mapping[str, float] | None = None,
        num_scenarios: int | None = DEFAULT_NUM_SCENARIOS,
        compact_info: bool = True,
        workload: Workload | None = None,
        budget: float | None = None,
    ) -> None:
        check_choice("difficulty", difficulty, DIFFICULTIES)
        check_choice("workload kind", kind, KINDS)
        check_choice("evict mode", evict_mode, EVICT_MODES)
        for name, v, lo in (
            ("k", k, 1),
            ("steps", steps, 1),
            ("every_events", every_events, 1),
            ("pool_blocks", pool_blocks, 64),
            ("block_size", block_size, 1),
            ("max_num_seqs", max_num_seqs, 1),
            ("warmup_events", warmup_events, 0),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name, x in (("usage_threshold", usage_threshold), ("warmup_usage", warmup_usage)):
            if not 0.0 < x <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {x}")
        if budget is not None and not 0.0 < budget <= 1.0:
            raise ConfigError(f"budget must be in (0, 1], got {budget}")
        if num_scenarios is not None and (
            isinstance(num_scenarios, bool)
            or not isinstance(num_scenarios, int)
            or num_scenarios < 1
        ):
            raise ConfigError(f"num_scenarios must be >= 1, got {num_scenarios}")
        self.difficulty = difficulty
        self.kind = kind
        self.k = k
        self.steps = steps
        self.every_events = every_events
        self.usage_threshold = usage_threshold
        self.warmup_usage = warmup_usage
        self.warmup_events = warmup_events
        self.pool_blocks = pool_blocks
        self.block_size = block_size
        self.max_num_seqs = max_num_seqs
        self.evict_mode = evict_mode
        self.weights = check_weights(weights or {})
        self.num_scenarios = num_scenarios
        self.compact_info = compact_info
        self.workload = workload
        self.budget = budget
        self._first_seed = seed
        self._given: PreparedWorkload | None = None
        n = NUM_GLOBAL + k * NUM_CAND
        self.observation_space = gym.spaces.Box(OBS_LOW, OBS_HIGH, (n,), np.float32)
        self.action_space = gym.spaces.MultiDiscrete(np.full(k, len(ACTIONS), dtype=np.int64))
        self.loop: PressureLoop | None = None
        self._engine: Any = None
        self.scenario: Scenario | None = None
        self._cands: list[Seq] = []
        self._mask = np.zeros((k, len(ACTIONS)), dtype=bool)
        self._mask_flat = self._mask.reshape(-1)  # a view: the mask's bits in one row
        self._cand_tiers: list[int] = []
        self._obs = np.zeros(n, dtype=np.float32)

    # -- episode -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        super().reset(seed=seed)
        rng = self.np_random
        budget = self.budget
        if options and "scenario" in options:
            sseed = int(options["scenario"])
        elif self.num_scenarios is not None:
            sseed = int(rng.integers(0, self.num_scenarios))
            if budget is None:
                budget = draw_budget(self.difficulty, rng)
        else:
            sseed = int(rng.integers(0, 2**31))
        self.scenario, prepared = self._scenario(sseed, budget)
        self._start(self.scenario, prepared)
        self._warm_up()
        self._advance()
        self._usage_prev = self._usage
        self._observe()
        return self._obs.copy(), self._info({}, 0.0)

    def _scenario(self, sseed: int, budget: float | None) -> tuple[Scenario, PreparedWorkload]:
        """The episode's scenario and its prepared workload."""
        if self.workload is not None:
            sc = given_scenario(self.difficulty, self.workload, sseed, self.pool_blocks, budget)
            if self._given is None:
                self._given = prepare(self.workload, self.block_size)
            return sc, self._given
        sc, prepared = cached_scenario(
            self.difficulty, self.kind, sseed, self.pool_blocks, self.block_size
        )
        return (sc if budget is None else dataclasses.replace(sc, budget=budget)), prepared

    def prepare_scenarios(self) -> int:
        """Make and prepare every scenario of the set now (block key names included),
        instead of at the first reset that draws each; returns how many (0 with
        ``num_scenarios=None`` or a given ``workload``). For long runs: the first
        episodes then cost what the later ones do."""
        if self.workload is not None or self.num_scenarios is None:
            return 0
        for sseed in range(self.num_scenarios):
            _, prepared = cached_scenario(
                self.difficulty, self.kind, sseed, self.pool_blocks, self.block_size
            )
            if prepared.workload.requests:
                prepared.key_names(0)  # names every request of the workload at once
        return self.num_scenarios

    def _start(self, sc: Scenario, prepared: PreparedWorkload) -> None:
        from kvlab.sim.config import SimConfig
        from kvlab.sim.engine import Engine

        if self._engine is not None:
            self._engine.close()
        cfg = SimConfig(
            model="meta-llama/Llama-3.1-8B",
            gpu="h100-sxm",
            block_size=self.block_size,
            num_blocks=sc.num_blocks,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=2048,
            extents=False,  # compress and swap need the per-block pool
        )
        # as kvlab.rl.engine_steps.stepped_engine builds it, with this loop class (the
        # swap space: its default, vLLM's 4 GiB)
        self._engine = Engine(prepared, cfg, loop_class=PressureLoop)
        loop = self._engine.loop
        assert isinstance(loop, PressureLoop)
        self._engine.kv = loop.kv  # the tiered manager, over the same pool
        self.loop = loop
        loop.observe_with(self._on_event)
        self._usable = sc.num_blocks - 1
        mml = loop.r.max_model_len
        self._may_reject = any(q.prompt_tokens >= mml for q in sc.workload.requests)
        self._step = 0
        self._done = False
        self._tally = EpisodeTally()
        self._score = 0.0
        self._pressure_steps = 0
        self._terms_prev: dict[str, float] = {}
        self._facts: dict[int, SeqFacts] = {}
        self._last_now = 0
        self._above_ticks = 0
        self._usage = 0.0
        self._since = 0
        self._sched_preempt0 = 0
        self._rejected0 = 0
        self._drops = 0
        self._tokens0 = 0
        self._swap_ticks0 = 0
        self._t0 = 0
        self._waiting_prev = 0
        self._actions_done: dict[str, int] = dict.fromkeys(ACTIONS[1:], 0)

    def _on_event(self, loop: Any) -> None:
        """After every engine event: time spent at usage >= 0.95 (the usage the
        previous event left holds until this one)."""
        now = loop.now
        if self._usage >= PRESSURE_USAGE:
            self._above_ticks += now - self._last_now
        self._last_now = now
        self._prev_event_usage = self._usage
        self._usage = loop.kv.usage()
        self._since += 1

    def _warm_up(self) -> None:
        loop = self.loop
        assert loop is not None
        target, limit = self.warmup_usage, self.warmup_events
        if limit > 0:
            more = loop.advance_until(lambda s: self._usage >= target or self._since >= limit)
            self._done = not more
        # the episode's tallies start here
        self._since = 0
        self._above_ticks = 0
        self._t0 = self._last_now = loop.now
        self._sched_preempt0 = loop.num_preemptions_seen
        self._rejected0 = self._num_rejected() if self._may_reject else 0
        self._tokens0 = loop.output_tokens()
        self._swap_ticks0 = loop.swap_ticks
        self._waiting_prev = loop.sched.num_waiting()

    def _num_rejected(self) -> int:
        loop = self.loop
        assert loop is not None
        return sum(1 for r in loop.records if r.status == STATUS_REJECTED)

    def _advance(self) -> None:
        """Run the engine to the next decision point (or the workload's end)."""
        if self._done:
            return
        loop = self.loop
        assert loop is not None
        every, thr = self.every_events, self.usage_threshold
        self._since = 0

        def stop(_: Any) -> bool:
            return self._since >= every or (self._usage >= thr > self._prev_event_usage)

        self._prev_event_usage = self._usage
        self._done = not loop.advance_until(stop)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        loop = self.loop
        if loop is None or self.scenario is None:
            raise RuntimeError("call reset() first")
        if self._step >= self.steps:
            raise RuntimeError("the episode is over; call reset()")
        acts = np.asarray(action, dtype=np.int64).reshape(-1)
        if acts.shape != (self.k,):
            raise ValueError(f"action must have {self.k} entries, got shape {acts.shape}")
        applied = self._apply(acts)
        self._usage_prev = self._usage
        self._advance()
        self._step += 1
        reward, terms = self._score_step()
        self._observe()
        terminated = self._step >= self.steps or self._done
        return self._obs.copy(), reward, terminated, False, self._info(terms, reward, applied)

    def _apply(self, acts: np.ndarray) -> dict[str, int]:
        """Play each slot's action on its candidate, in slot order (masked ones as keep;
        a compress or swap that an earlier slot's action made impossible as keep too)."""
        loop = self.loop
        assert loop is not None
        mask, cands, t = self._mask, self._cands, self._tally
        applied = dict.fromkeys(ACTIONS[1:], 0)
        for i, seq in enumerate(cands):
            a = int(acts[i])
            if a == KEEP or not 0 <= a < len(ACTIONS) or not mask[i, a]:
                continue
            if seq.status == FINISHED or seq not in loop.sched.running:
                continue
            if a == EVICT:
                done = seq.num_out / seq.max_out if seq.max_out > 0 else 1.0
                computed = seq.num_computed
                t.evicted_tokens += computed
                t.evicted_protected_tokens += protected_tokens_in(seq, computed)
                t.evicted_progress.append(done)
                loop.preempt(seq)
                if self.evict_mode == "drop":
                    self._drop(seq)
            elif a == COMPRESS:
                if not loop.can_compress(seq):  # an earlier slot's action took the room
                    continue
                loop.compress(seq)
            else:
                if not loop.can_swap(seq):
                    continue
                loop.swap_out(seq)
            applied[ACTIONS[a]] += 1
            self._actions_done[ACTIONS[a]] += 1
        self._usage = loop.kv.usage()
        return applied

    def _drop(self, seq: Seq) -> None:
        """Take a just-preempted request out of the waiting queue for good: it fails
        (its session stops there)."""
        loop = self.loop
        assert loop is not None
        sched = loop.sched
        if sched.priority:
            heap = sched._heap
            heap[:] = [x for x in heap if x[3] is not seq]
            import heapq

            heapq.heapify(heap)
        else:
            sched._fifo.remove(seq)
        seq.status = FINISHED
        loop.finished_out += seq.num_out
        rec = seq.rec
        rec.status = STATUS_FAILED
        rec.error = "dropped under KV pressure"
        rec.output_tokens = seq.num_out
        self._drops += 1

    def _score_step(self) -> tuple[float, dict[str, float]]:
        loop = self.loop
        assert loop is not None
        t = self._tally
        sched_preempt = loop.num_preemptions_seen - self._sched_preempt0
        rejected = self._num_rejected() - self._rejected0 if self._may_reject else 0
        t.failures = sched_preempt + self._drops + rejected
        t.overflowed = sched_preempt > 0
        t.tokens = loop.output_tokens() - self._tokens0
        t.swap_latency_s = (loop.swap_ticks - self._swap_ticks0) / TICKS_PER_S
        t.usage.append(self._usage)
        w = self.weights
        info = breakdown(t)
        terms = {name: w[name] * v for name, v in info.items()}
        score = sum(terms.values())
        info["tokens"] = float(t.tokens)
        info["failures"] = float(t.failures)
        info["swap_latency_s"] = t.swap_latency_s
        self._pressure_steps += self._usage >= PRESSURE_USAGE
        info["pressure_steps"] = float(self._pressure_steps)
        step_terms = {name: v - self._terms_prev.get(name, 0.0) for name, v in terms.items()}
        reward = score - self._score
        self._score = score
        self._terms_prev = terms
        self._episode_terms = info
        return reward, step_terms

    # -- observation -----------------------------------------------------------
    def _observe(self) -> None:
        """The observation vector and the mask of the current decision point. The mask
        is the loop's ``can_compress`` / ``can_swap`` (a test compares them), with
        their common parts read once per decision: the free blocks, the host room."""
        loop = self.loop
        assert loop is not None
        sched = loop.sched
        cands = self._cands = [] if self._done else candidates(sched.running, self.k)
        m = self.max_num_seqs
        waiting = sched.num_waiting()
        span = loop.now - self._t0
        free = loop.kv.num_free
        t = self._tally
        vals = [
            self._usage,
            self.scenario.budget if self.scenario is not None else 0.0,
            (self.steps - self._step) / self.steps,
            len(sched.running) / m,
            min(waiting / m, 8.0),
            min(max((waiting - self._waiting_prev) / m, -1.0), 8.0),
            self._above_ticks / span if span > 0 else 0.0,
            free / self._usable,
            min(math.log1p(t.failures), OBS_HIGH),
            min(t.swap_latency_s, OBS_HIGH),
            len(loop.swapped) / m,
        ]
        self._pending_growth = waiting - self._waiting_prev
        self._waiting_prev = waiting
        usable, now, facts = self._usable, loop.now, self._facts
        # the mask, row by row (keep, evict, compress, swap), set in one assignment
        bits = [True, False, False, False] * self.k
        tiers: list[int] = []
        self._cand_tiers = tiers
        kv = loop.tiers
        if kv is not None:
            tier_of = kv.tier
            room = loop.swap_capacity_blocks - (loop.swapped_blocks if loop.swapped else 0)
            top = loop.max_tier
        for i, seq in enumerate(cands):
            if kv is not None:
                tier = tier_of.get(seq.idx, 0) if tier_of else 0
                # can_compress of a running candidate: the new blocks fit in the free
                # ones (or do once its own are released)
                can_c = tier < top and (
                    free >= kv.blocks_for(seq.num_computed, tier + 1)
                    or kv.compress_gain(seq, tier + 1) + free >= 0  # type: ignore[arg-type]
                )
                can_s = seq.nblocks <= room
            else:
                tier, can_c, can_s = 0, False, False
            tiers.append(tier)
            vals += candidate_row(seq, facts_of(seq, facts), usable, now, tier, can_c, can_s)
            j = 4 * i
            bits[j + EVICT] = True
            bits[j + COMPRESS] = can_c
            bits[j + SWAP] = can_s
        self._mask_flat[:] = bits
        obs = self._obs
        obs[: len(vals)] = vals
        obs[len(vals) :] = 0.0

    def _tier_of(self, seq: Seq) -> int:
        loop = self.loop
        return loop.tier(seq) if loop is not None and loop.tiers is not None else 0

    def action_masks(self) -> np.ndarray:
        """The mask, flat (``k * 4``), as sb3-contrib's MaskablePPO reads it."""
        return self._mask.reshape(-1).copy()

    def compact_observation(self) -> dict[str, Any]:
        """The state for an LLM policy, as plain JSON-able values: memory (usage,
        budget, free and usable blocks), episode (step, remaining, difficulty),
        pressure signals, cache overview, the top memory entries, the candidates in
        slot order with their allowed actions and an eviction order (safest first:
        least protected, least progressed), the pending queue, the visible seq ids."""
        loop = self.loop
        if loop is None or self.scenario is None:
            raise RuntimeError("call reset() first")
        sched = loop.sched
        usable = self._usable
        facts = self._facts
        running = sched.running
        tiers = loop.tiers
        tier_table: dict[int, int] = tiers.tier if tiers is not None else {}
        tier_of = tier_table.get
        summaries = [
            request_summary(s, facts_of(s, facts), usable, tier_of(s.idx, 0)) for s in self._cands
        ]
        # the top memory entries are the first candidates (the same order) when k >= 5
        top = (
            summaries[:5]
            if self.k >= 5 or self._done
            else [
                request_summary(s, facts_of(s, facts), usable, tier_of(s.idx, 0))
                for s in candidates(running, 5)
            ]
        )
        bits = self._mask_flat.tolist()
        cands = []
        for i, d in enumerate(summaries):
            row = bits[4 * i : 4 * i + 4]
            c = dict(d)
            c["slot"] = i
            c["actions"] = [a for a, ok in zip(ACTIONS, row, strict=True) if ok]
            cands.append(c)
        order = sorted(
            range(len(cands)),
            key=lambda i: (cands[i]["protected_share"], cands[i]["progress"], i),
        )
        waiting = [x[3] if isinstance(x, tuple) else x for x in sched.waiting]
        waiting_tokens = preempted_waiting = 0
        for w in waiting:
            waiting_tokens += w.num_tokens
            if w.rec.admitted_s is not None:
                preempted_waiting += 1
        span = loop.now - self._t0
        return {
            "memory": {
                "usage": round(self._usage, 4),
                "budget": round(self.scenario.budget, 4),
                "free_blocks": loop.kv.num_free,
                "usable_blocks": usable,
            },
            "episode": {
                "step": self._step,
                "remaining": self.steps - self._step,
                "difficulty": self.difficulty,
                "kind": self.scenario.kind,
            },
            "pressure": {
                "time_above_0_95": round(self._above_ticks / span, 4) if span > 0 else 0.0,
                "pending_queue_growth": self._pending_growth,
                "failures": self._tally.failures,
            },
            "cache_overview": {
                "running": len(running),
                "waiting": len(waiting),
                "blocks_running": sum(s.nblocks for s in running),
                "swapped": len(loop.swapped),
                "swap_blocks_host": loop.swapped_blocks if loop.tiers is not None else 0,
                # the tier table holds exactly the running requests above tier 0
                "compressed": len(tiers.tier) if tiers is not None else 0,
            },
            "top_memory": top,
            "candidates": cands,
            "eviction_order": [cands[i]["slot"] for i in order],
            "pending": {
                "waiting": len(waiting),
                "waiting_prompt_tokens": waiting_tokens,
                "preempted_waiting": preempted_waiting,
            },
            "visible_seq_ids": [s.req.request_id for s in self._cands],
        }

    def _info(
        self, terms: dict[str, float], reward: float, applied: dict[str, int] | None = None
    ) -> dict[str, Any]:
        loop = self.loop
        sc = self.scenario
        assert loop is not None and sc is not None
        info: dict[str, Any] = {
            "action_mask": self._mask.copy(),
            "reward_terms": terms,
            "episode_terms": dict(getattr(self, "_episode_terms", {})) if self._step else {},
            "episode_reward": self._score,
            "step": self._step,
            "usage": self._usage,
            "budget": sc.budget,
            "scenario": {
                "seed": sc.seed,
                "kind": sc.kind,
                "regime": sc.regime,
                "rate_per_s": sc.rate_per_s,
                "usable_blocks": self._usable,
            },
            "applied": applied or dict.fromkeys(ACTIONS[1:], 0),
            "time_s": (loop.now - self._t0) / TICKS_PER_S,
        }
        if self.compact_info:
            info["compact"] = self.compact_observation()
        return info

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
            self.loop = None


def heuristic_action(
    env: KVPressureEnv, high_usage: float = 0.9, target_usage: float = 0.75
) -> np.ndarray:
    """A value-aware rule (see docs/rl.md): act only when usage is at or above
    ``high_usage``; then, on the candidates ordered least valuable first (protected
    share, then progress, then the most blocks), free blocks until usage would fall
    below ``target_usage``: compress where allowed, else swap where allowed, else
    evict; never evict a request more than 80% done."""
    out = np.zeros(env.k, dtype=np.int64)
    loop = env.loop
    if loop is None or not env._cands:
        return out
    usage = env._usage
    if usage < high_usage:
        return out
    usable = env._usable
    need = int((usage - target_usage) * usable) + 1
    facts = env._facts
    mask = env._mask
    order = sorted(
        range(len(env._cands)),
        key=lambda i: (
            round(facts_of(env._cands[i], facts).protected_share, 2),
            _progress(env._cands[i]),
            -env._cands[i].nblocks,
        ),
    )
    for i in order:
        if need <= 0:
            break
        seq = env._cands[i]
        if mask[i, COMPRESS]:
            out[i] = COMPRESS
            need -= loop.compress_gain(seq)
        elif mask[i, SWAP]:
            out[i] = SWAP
            need -= seq.nblocks
        elif _progress(seq) <= 0.8:
            out[i] = EVICT
            need -= seq.nblocks
    return out


def _progress(seq: Seq) -> float:
    return seq.num_out / seq.max_out if seq.max_out > 0 else 1.0
