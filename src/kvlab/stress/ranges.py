"""Safe operating ranges: the largest batch and concurrency that meet the SLOs.

For a model on a GPU and each prompt length of the search grid, two searches
(:func:`kvlab.stress.search.largest_passing` over simulator runs):

* **batch**: one client submits n requests together, once (``batch = n``);
* **concurrency**: n closed-loop clients, one request in flight each, ``rounds``
  requests per client (``concurrency = n``, ``batch = 1``).

A value passes when its run's verdict is not ``fail`` (:mod:`kvlab.stress.evaluate`).
Each row keeps the figures of the run at the answer, the reason the next value fails,
the number of simulator runs and whether the passes were monotone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvlab.stress.evaluate import ScenarioResult, evaluate
from kvlab.stress.matrix import Scenario, SearchSpec
from kvlab.stress.scenario import WorkloadCache
from kvlab.stress.search import SearchResult, largest_passing
from kvlab.stress.slo import Slo

KINDS = ("batch", "concurrency")


@dataclass(frozen=True)
class RangeRow:
    """One search: ``kind`` (batch or concurrency) at ``seq_len`` prompt tokens."""

    model: str
    gpu: str
    kind: str
    seq_len: int
    gen_len: int
    search: SearchResult
    at_best: dict[str, Any] | None
    limit_reason: str | None

    @property
    def best(self) -> int:
        return self.search.best

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpu": self.gpu,
            "kind": self.kind,
            "seq_len": self.seq_len,
            "gen_len": self.gen_len,
            "best": self.best,
            "num_runs": self.search.num_runs,
            "monotone": self.search.monotone,
            "capped": self.search.capped,
            "violations": list(self.search.violations),
            "limit_reason": self.limit_reason,
            "at_best": self.at_best,
        }


def probe_scenario(
    base: Scenario, kind: str, n: int, seq_len: int, gen_len: int, rounds: int
) -> Scenario:
    """The scenario a search tries: ``n`` requests in one batch or ``n`` clients."""
    common = {
        "name": f"{kind}={n} seq={seq_len}",
        "seq_len": seq_len,
        "gen_len": gen_len,
        "arrival": "closed",
        "rate_per_s": None,
        "ramp_s": 0.0,
        "claimed": {},
    }
    if kind == "batch":
        return base.with_changes(batch=n, concurrency=1, rounds=1, **common)
    return base.with_changes(batch=1, concurrency=n, rounds=rounds, **common)


def search_range(
    base: Scenario,
    kind: str,
    seq_len: int,
    spec: SearchSpec,
    slo: Slo,
    cache: WorkloadCache,
    *,
    gen_len: int | None = None,
) -> RangeRow:
    """The largest ``kind`` value at ``seq_len`` for ``base``'s model, GPU and engine knobs."""
    gen = spec.gen_len if gen_len is None else gen_len
    results: dict[int, ScenarioResult] = {}

    def passes(n: int) -> bool:
        probe = probe_scenario(base, kind, n, seq_len, gen, spec.concurrency_rounds)
        r = evaluate(probe, slo, cache)
        results[n] = r
        return r.ok

    found = largest_passing(passes, spec.max_value)
    best = results.get(found.best)
    nxt = results.get(found.best + 1)
    if nxt is None:  # the first failing value the search saw above the answer
        above = sorted(v for v, ok in found.tried.items() if not ok and v > found.best)
        nxt = results.get(above[0]) if above else None
    return RangeRow(
        model=base.model,
        gpu=base.gpu,
        kind=kind,
        seq_len=seq_len,
        gen_len=gen,
        search=found,
        at_best=None if best is None else _brief(best),
        limit_reason=None if nxt is None else f"{kind} {_value(nxt, kind)}: {nxt.reasons[0]}",
    )


def _brief(r: ScenarioResult) -> dict[str, Any]:
    keys = (
        "ttft_p99_s",
        "tpot_p99_s",
        "kv_peak_usage",
        "num_preemptions",
        "output_throughput_tok_per_s",
        "goodput_req_per_s",
    )
    return {k: r.metrics.get(k) for k in keys}


def safe_ranges(
    base: Scenario,
    spec: SearchSpec,
    slo: Slo,
    cache: WorkloadCache,
    *,
    kinds: tuple[str, ...] = KINDS,
    on_row: Callable[[RangeRow], None] | None = None,
) -> list[RangeRow]:
    """Every (kind, seq_len) search of the grid for ``base``'s model and GPU."""
    rows = []
    for kind in kinds:
        for seq in spec.seq_lens:
            row = search_range(base, kind, seq, spec, slo, cache)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def _value(r: ScenarioResult, kind: str) -> int:
    return r.scenario.batch if kind == "batch" else r.scenario.concurrency
