"""A whole stress run: scenarios, safe ranges, curves, what-ifs and presets, written out.

:func:`run_stress` works through the parts in order, reports progress through a
callback, and writes ``stress.json`` and ``stress.md`` (and each scenario's run
directory under ``scenarios/``) into ``out``. Ctrl-C (KeyboardInterrupt) stops it
launching more work: what finished is kept, summarized and written, with
``interrupted: true``; the caller decides the exit code (the CLI's is 130).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.stress.matrix import Matrix, Scenario

PARTS = ("scenarios", "ranges", "curves", "whatifs", "presets")
GB = 1e9


@dataclass
class StressResult:
    """Everything a stress run finished; ``to_dict()`` is ``stress.json``."""

    matrix: Matrix
    scenarios: list[Any] = field(default_factory=list)
    ranges: list[Any] = field(default_factory=list)
    curves: list[Any] = field(default_factory=list)
    whatifs: list[Any] = field(default_factory=list)
    presets: list[Any] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    num_prepared: int = 0

    @property
    def num_sim_runs(self) -> int:
        n = sum(1 for r in self.scenarios if "simulated_duration_s" in r.metrics)
        n += sum(r.search.num_runs for r in self.ranges)
        n += sum(c.num_runs for c in self.curves)
        n += sum(w.before.search.num_runs + w.after.search.num_runs for w in self.whatifs)
        n += sum(p.num_runs for p in self.presets)
        return n

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in ("pass", "warn", "fail")}
        for r in self.scenarios:
            out[r.verdict] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        from kvlab import __version__

        return {
            "kind": "stress",
            "kvlab_version": __version__,
            "matrix": self.matrix.source,
            "slo": self.matrix.slo.to_dict(),
            "search": {
                "seq_lens": list(self.matrix.search.seq_lens),
                "gen_len": self.matrix.search.gen_len,
                "max_value": self.matrix.search.max_value,
                "concurrency_rounds": self.matrix.search.concurrency_rounds,
            },
            "interrupted": self.interrupted,
            "wall_s": self.wall_s,
            "num_sim_runs": self.num_sim_runs,
            "num_prepared_workloads": self.num_prepared,
            "verdicts": self.counts(),
            "scenarios": [r.to_dict() for r in self.scenarios],
            "old_report": [old_vs_new(r) for r in self.scenarios if r.scenario.claimed],
            "ranges": [r.to_dict() for r in self.ranges],
            "curves": [c.to_dict() for c in self.curves],
            "whatifs": [w.to_dict() for w in self.whatifs],
            "presets": [p.to_dict() for p in self.presets],
        }


def old_vs_new(r: Any) -> dict[str, Any]:
    """The old report's claims for a scenario beside kvlab's computed figures."""
    s, m, c = r.scenario, r.metrics, r.scenario.claimed
    seqs = s.batch * s.concurrency
    claimed_gb = c.get("peak_kv_gb")
    util = c.get("util_pct")
    implied = None if claimed_gb is None else claimed_gb * GB / (seqs * s.seq_len)
    return {
        "name": s.name,
        "claimed": dict(c),
        "claimed_bytes_per_token": implied,
        "claimed_denominator_gb": None if not (claimed_gb and util) else claimed_gb / (util / 100),
        "kv_bytes_per_token": r.plan.get("kv_bytes_per_token"),
        "kv_demand_gb": _gb(m.get("kv_demand_bytes")),
        "kv_capacity_gb": _gb(m.get("kv_capacity_bytes")),
        "kv_peak_gb": _gb(m.get("kv_peak_bytes")),
        "kv_peak_usage": m.get("kv_peak_usage"),
        "prefix_cache_hit_rate": m.get("prefix_cache_hit_rate"),
        "num_evicted_blocks": m.get("num_evicted_blocks"),
        "num_preemptions": m.get("num_preemptions"),
        "ttft_p99_s": m.get("ttft_p99_s"),
        "verdict": r.verdict,
        "reason": r.reasons[0],
    }


def _gb(x: Any) -> float | None:
    return None if x is None else x / GB


def slug(i: int, name: str) -> str:
    return f"{i + 1:02d}-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "scenario")


def run_stress(
    matrix: Matrix,
    *,
    out: str | Path | None = None,
    parts: tuple[str, ...] = PARTS,
    progress: Callable[[str], None] | None = None,
    save_runs: bool = True,
) -> StressResult:
    """Run ``parts`` of the stress analysis for ``matrix``; write to ``out`` if given."""
    from kvlab.stress.curves import degradation_curve
    from kvlab.stress.evaluate import evaluate
    from kvlab.stress.presets import presets
    from kvlab.stress.ranges import safe_ranges
    from kvlab.stress.scenario import WorkloadCache
    from kvlab.stress.whatif import whatifs

    say = progress or (lambda _msg: None)
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    res = StressResult(matrix)
    cache = WorkloadCache()
    t0 = time.perf_counter()
    bases = [_base(matrix, model, gpu) for model, gpu in matrix.pairs()]
    try:
        if "scenarios" in parts:
            n = len(matrix.scenarios)
            for i, s in enumerate(matrix.scenarios):
                r = evaluate(s, matrix.slo, cache, keep_run=save_runs and out_dir is not None)
                res.scenarios.append(r)
                if r.run is not None and out_dir is not None:
                    r.run.save(out_dir / "scenarios" / slug(i, s.name))
                    object.__setattr__(r, "run", None)
                say(f"scenario {i + 1}/{n} {s.name}: {r.verdict.upper()} ({r.reasons[0]})")
        if "ranges" in parts:

            def on_row(row: Any) -> None:
                res.ranges.append(row)
                cap = "+" if row.search.capped else ""
                say(
                    f"safe {row.kind} {row.model} seq {row.seq_len:,}: {row.best}{cap} "
                    f"({row.search.num_runs} runs)"
                )

            for b in bases:
                safe_ranges(b, matrix.search, matrix.slo, cache, on_row=on_row)
        if "curves" in parts:
            for b in bases:
                c = degradation_curve(b, matrix.slo, cache, gen_len=matrix.search.gen_len)
                res.curves.append(c)
                say(
                    f"curve {b.model} on {b.gpu}: knee {c.knee_rate_per_s}, "
                    f"saturation {c.saturation_rate_per_s} req/s ({c.num_runs} runs)"
                )
        if "whatifs" in parts:

            def on_item(w: Any) -> None:
                res.whatifs.append(w)
                say(f"what-if {w.line()}")

            for b in bases:
                whatifs(b, matrix.search, matrix.slo, cache, on_item=on_item)
        if "presets" in parts:
            for b in bases:
                for p in presets(b, matrix.search, matrix.slo, cache):
                    res.presets.append(p)
                    say(f"preset {p.name} {p.model}: concurrency {p.concurrency}")
    except KeyboardInterrupt:
        res.interrupted = True
        say("interrupted: no new work launched; keeping what finished")
    res.wall_s = time.perf_counter() - t0
    res.num_prepared = cache.num_prepared
    if out_dir is not None:
        write(res, out_dir)
    return res


def _base(matrix: Matrix, model: str, gpu: str) -> Scenario:
    """The engine settings of the first scenario on (model, gpu), as the search's base."""
    first = next(s for s in matrix.scenarios if s.model == model and s.gpu == gpu)
    return first.with_changes(name=f"{model} on {gpu}", claimed={}, shared_prefix=0.0)


def write(res: StressResult, out: Path) -> None:
    import json

    from kvlab.results import atomic_write_text
    from kvlab.stress.render import markdown

    atomic_write_text(out / "stress.json", json.dumps(res.to_dict(), indent=1) + "\n")
    atomic_write_text(out / "stress.md", markdown(res.to_dict()))
