"""Seeded scenarios of ``kvlab/KVPressure-v0``: a workload from kvlab's own generators,
a memory budget and an arrival regime, drawn from a difficulty tier.

A scenario is a pure function of ``(difficulty, kind, seed, pool_blocks)``: the same
arguments give the same workload and budget on every machine (numpy ``PCG64``).

========  ===============  =========================================================
tier      memory budget    arrival regimes (one drawn per scenario)
========  ===============  =========================================================
easy      0.90 - 1.00      low, medium
medium    0.75 - 0.90      medium, high
hard      0.65 - 0.80      high, bursty
========  ===============  =========================================================

The budget is the share of the KV pool (``pool_blocks`` blocks) the episode may use:
the engine runs on ``floor(budget * pool_blocks)`` usable blocks. A regime scales the
kind's base session rate (:data:`REGIME_RATE`, times a uniform jitter in 0.8 - 1.25);
``bursty`` is the high rate with gamma arrivals of burstiness
:data:`BURSTY_BURSTINESS` (clumps of sessions, then gaps).

Episodes draw from a fixed, seeded set of scenarios, the way a dataset of examples
works: with ``num_scenarios = n`` (:data:`DEFAULT_NUM_SCENARIOS` = 256 by default) a
reset draws a scenario seed in ``0 .. n-1`` of the tier and kind (its workload, regime
and rate) and, from the same reset seed, a fresh budget in the tier's range, so the
same reset seed gives the same episode. ``num_scenarios=None`` draws a brand-new
scenario seed (``0 .. 2**31 - 1``) and its own budget at every reset (held-out
evaluation: those seeds are almost never in ``0 .. n-1``).

:func:`cached_scenario` makes each scenario once per process: the workload, prepared
for the engine (:func:`kvlab.sim.prepare.prepare`: arrivals, sessions, block key
names), in a bounded cache (:data:`CACHE_SIZE` entries, least recently used out;
about 50 KB each).
Workloads are immutable and runs on a prepared workload are independent, so a cached
scenario plays exactly as a freshly made one (a test compares the trajectories).

Kinds (:data:`KINDS`): ``chat`` (32 two-turn chats over a shared system prompt),
``agentic`` (tool loops whose prompts grow with tool outputs), ``mixed`` (one of the
two per scenario, drawn from the seed), ``trace`` (a slice of a real trace: below).
The generated kinds' sizes are scaled down from the generators' defaults so that a
request fits the smallest budget of the hardest tier and a handful of requests fill
the pool.

``trace``: :data:`TRACE_REQUESTS` consecutive requests of the shipped Azure LLM
inference trace (2023, conversation), from a start drawn from the seed, their real
prompt and output lengths (capped at :data:`TRACE_MAX_PROMPT` and
:data:`TRACE_MAX_OUTPUT` tokens so that a request fits the hardest tier's smallest
budget; the cap touches about 1% of the trace's requests) and their real arrival
pattern, time-scaled so that the slice's mean rate is the regime's
(:data:`BASE_RATE_PER_S` ``trace``: requests/s). Every regime keeps the trace's own
gaps (``bursty`` is the high rate with them). The Mooncake traces are not used: their
prompts (thousands of tokens each) do not fit the default pool. The Azure trace has
no prefix information, so no two requests share a block.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from kvlab.errors import ConfigError
from kvlab.sim.prepare import PreparedWorkload, prepare
from kvlab.workload.records import Request, Workload

DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
KINDS: tuple[str, ...] = ("chat", "agentic", "mixed", "trace")

#: tier -> (lowest budget, highest budget), shares of the pool
BUDGETS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"easy": (0.90, 1.00), "medium": (0.75, 0.90), "hard": (0.65, 0.80)}
)
#: tier -> the arrival regimes a scenario draws from
REGIMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"easy": ("low", "medium"), "medium": ("medium", "high"), "hard": ("high", "bursty")}
)
#: regime -> multiplier of the kind's base session rate
REGIME_RATE: Mapping[str, float] = MappingProxyType(
    {"low": 0.5, "medium": 1.0, "high": 2.0, "bursty": 2.0}
)
BURSTY_BURSTINESS = 4.0
#: kind -> base arrival rate at the "medium" regime (sessions/s; trace: requests/s)
BASE_RATE_PER_S: Mapping[str, float] = MappingProxyType({"chat": 4.0, "agentic": 0.6, "trace": 6.0})
#: the trace of kind ``trace`` (a built-in trace name) and the requests of a slice
TRACE, TRACE_REQUESTS = "azure-conv", 64
#: the longest prompt and output a trace slice keeps (tokens): together at most 4,608,
#: inside the hardest tier's smallest budget of the default pool (0.65 x 512 blocks of 16)
TRACE_MAX_PROMPT, TRACE_MAX_OUTPUT = 4096, 512
#: scenarios per (tier, kind) an environment draws from by default
DEFAULT_NUM_SCENARIOS = 256
#: prepared scenarios kept per process (all tiers and kinds together)
CACHE_SIZE = 1024


@dataclass(frozen=True)
class Scenario:
    """One episode's workload and budget. ``num_blocks`` is the engine's pool (the
    usable ``floor(budget * pool_blocks)`` blocks plus vLLM's null block)."""

    difficulty: str
    kind: str
    seed: int
    budget: float
    regime: str
    rate_per_s: float
    pool_blocks: int
    workload: Workload

    @property
    def num_blocks(self) -> int:
        return int(self.budget * self.pool_blocks) + 1


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def make_scenario(difficulty: str, kind: str, seed: int, pool_blocks: int) -> Scenario:
    """The scenario of ``seed`` in tier ``difficulty`` (see module doc)."""
    check_choice("difficulty", difficulty, DIFFICULTIES)
    check_choice("workload kind", kind, KINDS)
    rng = np.random.default_rng(seed)
    lo, hi = BUDGETS[difficulty]
    budget = float(rng.uniform(lo, hi))
    regime = str(rng.choice(REGIMES[difficulty]))
    real_kind = str(rng.choice(("chat", "agentic"))) if kind == "mixed" else kind
    rate = BASE_RATE_PER_S[real_kind] * REGIME_RATE[regime] * float(rng.uniform(0.8, 1.25))
    arrival = (
        {"arrival": "gamma", "burstiness": BURSTY_BURSTINESS}
        if regime == "bursty"
        else {"arrival": "poisson"}
    )
    wseed = int(rng.integers(0, 2**31))
    if real_kind == "trace":
        w = _trace_slice(wseed, rate)
    elif real_kind == "chat":
        w = _generate(
            "chat",
            wseed,
            sessions=32,
            turns=2,
            rate_per_s=rate,
            think_time_s=2.0,
            system_tokens=512,
            user_tokens=256,
            output_tokens=256,
            **arrival,
        )
    else:
        w = _generate(
            "agentic",
            wseed,
            sessions=12,
            companies=3,
            rate_per_s=rate,
            think_time_s=0.5,
            system_tokens=300,
            tool_catalog_tokens=500,
            task_tokens=100,
            call_tokens=40,
            report_tokens=600,
            montecarlo_tokens=300,
            synthesis_tokens=300,
            **arrival,
        )
    return Scenario(difficulty, real_kind, seed, budget, regime, rate, pool_blocks, w)


def _generate(shape: str, seed: int, **params: Any) -> Workload:
    """``kvlab.workload.generators.generate(shape, seed, **params)`` for parameters of
    the right types (the same requests; the generic entry point's type coercion, which
    costs more than the generation of a small workload, is skipped)."""
    from kvlab.workload.generators import get_shape

    shape_ = get_shape(shape)
    p = shape_.params_cls(**params)
    p.check()
    requests = shape_.build(p, np.random.default_rng(seed))
    return Workload(requests=requests, name=shape, meta={"generator": shape, "seed": seed})


@functools.cache
def _trace_requests() -> tuple[Request, ...]:
    """The requests of :data:`TRACE`, loaded once per process."""
    from kvlab.workload.detect import load_workload

    return load_workload(TRACE, None, seed=0).requests


def _trace_slice(seed: int, rate_per_s: float) -> Workload:
    """:data:`TRACE_REQUESTS` consecutive requests of :data:`TRACE` from a start drawn
    from ``seed``, lengths capped, arrivals time-scaled to ``rate_per_s`` (module doc)."""
    reqs = _trace_requests()
    start = int(np.random.default_rng(seed).integers(0, len(reqs) - TRACE_REQUESTS + 1))
    part = reqs[start : start + TRACE_REQUESTS]
    t0 = part[0].arrival_s or 0.0
    span = (part[-1].arrival_s or 0.0) - t0
    # stretch (or squeeze) the slice's time so that its mean rate is rate_per_s
    scale = (len(part) - 1) / (span * rate_per_s) if span > 0 else 1.0
    out = []
    for i, q in enumerate(part):
        seg = q.segments[0]
        seg = replace(seg, tokens=min(seg.tokens, TRACE_MAX_PROMPT))
        out.append(
            Request(
                f"t{i}",
                (seg,),
                min(q.output_tokens, TRACE_MAX_OUTPUT),
                arrival_s=((q.arrival_s or 0.0) - t0) * scale,
            )
        )
    meta = {"trace": TRACE, "first_request": start, "time_scale": scale}
    return Workload(requests=tuple(out), name=f"{TRACE}[{start}:{start + len(part)}]", meta=meta)


def given_scenario(
    difficulty: str, workload: Workload, seed: int, pool_blocks: int, budget: float | None
) -> Scenario:
    """A scenario on a given workload: its budget drawn from the tier (or ``budget``)."""
    check_choice("difficulty", difficulty, DIFFICULTIES)
    if budget is None:
        lo, hi = BUDGETS[difficulty]
        budget = float(np.random.default_rng(seed).uniform(lo, hi))
    return Scenario(difficulty, "given", seed, budget, "given", 0.0, pool_blocks, workload)


def draw_budget(difficulty: str, rng: np.random.Generator) -> float:
    """A budget uniform in the tier's range (:data:`BUDGETS`)."""
    lo, hi = BUDGETS[difficulty]
    return float(rng.uniform(lo, hi))


_CacheKey = tuple[str, str, int, int, int]
_cache: OrderedDict[_CacheKey, tuple[Scenario, PreparedWorkload]] = OrderedDict()


def cached_scenario(
    difficulty: str, kind: str, seed: int, pool_blocks: int, block_size: int
) -> tuple[Scenario, PreparedWorkload]:
    """:func:`make_scenario` and its workload prepared for blocks of ``block_size``
    tokens, made once per process and kept in a bounded cache (module doc)."""
    key = (difficulty, kind, seed, pool_blocks, block_size)
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    sc = make_scenario(difficulty, kind, seed, pool_blocks)
    out = _cache[key] = (sc, prepare(sc.workload, block_size))
    if len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return out


def cache_info() -> int:
    """Prepared scenarios in this process's cache."""
    return len(_cache)


def clear_cache() -> None:
    """Empty this process's scenario cache."""
    _cache.clear()
