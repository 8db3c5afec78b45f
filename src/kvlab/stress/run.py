"""A whole stress run: scenarios, safe ranges, curves, what-ifs and presets, written out.

:func:`run_stress` works through the parts in order. Each part is a list of independent
tasks (a scenario, one range search, one curve, the what-ifs of one model under one set
of SLOs, the presets of one model) run by an executor (:mod:`kvlab.stress.executor`:
this process, or a Dask cluster); results are kept in task order, so ``stress.json`` is
the same byte for byte whichever executor ran it. Wall-clock figures go to
``stress_timing.json`` instead. A task that fails twice is reported (a scenario as a
FAIL with the error; any other task in ``errors``), never losing finished ones.

Progress goes through a callback. Ctrl-C (KeyboardInterrupt) stops launching tasks:
what finished is kept, summarized and written with ``interrupted: true``; the caller
decides the exit code (the CLI's is 130).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.stress.matrix import Matrix, Scenario, SearchSpec
from kvlab.stress.slo import Slo

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
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    part_wall_s: dict[str, float] = field(default_factory=dict)
    num_prepared: int | None = 0
    executor: str = "local"

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
            "num_sim_runs": self.num_sim_runs,
            "verdicts": self.counts(),
            "errors": list(self.errors),
            "scenarios": [r.to_dict() for r in self.scenarios],
            "old_report": [old_vs_new(r) for r in self.scenarios if r.scenario.claimed],
            "ranges": [r.to_dict() for r in self.ranges],
            "curves": [c.to_dict() for c in self.curves],
            "whatifs": [w.to_dict() for w in self.whatifs],
            "presets": [p.to_dict() for p in self.presets],
        }

    def timing(self) -> dict[str, Any]:
        """``stress_timing.json``: what depends on the machine, not on the matrix."""
        return {
            "executor": self.executor,
            "wall_s": self.wall_s,
            "part_wall_s": self.part_wall_s,
            "num_sim_runs": self.num_sim_runs,
            "num_prepared_workloads": self.num_prepared,
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


# ------------------------------------------------------------------ tasks
# Top-level functions of (item, cache): picklable for a cluster; cache None there.


def scenario_task(item: tuple[Scenario, Slo, bool], cache: Any) -> Any:
    from kvlab.stress.evaluate import evaluate

    s, slo, keep = item
    return evaluate(s, slo, cache, keep_run=keep)


def range_task(item: tuple[Scenario, str, int, SearchSpec, Slo], cache: Any) -> Any:
    from kvlab.stress.ranges import search_range
    from kvlab.stress.scenario import WorkloadCache

    base, kind, seq, spec, slo = item
    return search_range(base, kind, seq, spec, slo, cache or WorkloadCache())


def curve_task(item: tuple[Scenario, Slo, int], cache: Any) -> Any:
    from kvlab.stress.curves import degradation_curve
    from kvlab.stress.scenario import WorkloadCache

    base, slo, gen = item
    return degradation_curve(base, slo, cache or WorkloadCache(), gen_len=gen)


def whatif_task(item: tuple[Scenario, SearchSpec, Slo, str], cache: Any) -> Any:
    from kvlab.stress.scenario import WorkloadCache
    from kvlab.stress.whatif import whatifs

    base, spec, slo, kind = item
    return whatifs(base, spec, slo, cache or WorkloadCache(), slo_kinds=(kind,))


def preset_task(item: tuple[Scenario, SearchSpec, Slo], cache: Any) -> Any:
    from kvlab.stress.presets import presets
    from kvlab.stress.scenario import WorkloadCache

    base, spec, slo = item
    return presets(base, spec, slo, cache or WorkloadCache())


def run_stress(
    matrix: Matrix,
    *,
    out: str | Path | None = None,
    parts: tuple[str, ...] = PARTS,
    progress: Callable[[str], None] | None = None,
    save_runs: bool = True,
    executor: Any = None,
) -> StressResult:
    """Run ``parts`` of the stress analysis for ``matrix``; write to ``out`` if given.

    ``executor``: a :mod:`kvlab.stress.executor` executor (default: this process)."""
    from kvlab.stress.executor import LocalExecutor, Outcome

    say = progress or (lambda _msg: None)
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    ex = executor or LocalExecutor()
    res = StressResult(matrix, executor=ex.name)
    t0 = time.perf_counter()
    bases = [_base(matrix, model, gpu) for model, gpu in matrix.pairs()]
    slo, spec = matrix.slo, matrix.search
    keep = save_runs and out_dir is not None

    def run_part(
        name: str,
        fn: Callable[[Any, Any], Any],
        items: list[Any],
        done: Callable[[int, Any], list[Any]],
        failed: Callable[[int, str], list[Any]],
    ) -> None:
        """Map ``fn`` over ``items``; keep the results in item order in the part's list."""
        got: dict[int, list[Any]] = {}
        t = time.perf_counter()

        def on_done(o: Outcome) -> None:
            got[o.index] = done(o.index, o.value) if o.ok else failed(o.index, o.error or "")

        try:
            ex.map(fn, items, on_done)
        finally:
            getattr(res, name).extend(v for i in sorted(got) for v in got[i])
            res.part_wall_s[name] = time.perf_counter() - t

    def task_error(part: str) -> Callable[[int, str], list[Any]]:
        def record(i: int, error: str) -> list[Any]:
            msg = f"{part} task {i + 1} failed twice: {error}"
            res.errors.append(msg)
            say(msg)
            return []

        return record

    try:
        if "scenarios" in parts:
            n = len(matrix.scenarios)

            def scen_done(i: int, r: Any) -> list[Any]:
                if r.run is not None and out_dir is not None:
                    r.run.save(out_dir / "scenarios" / slug(i, r.scenario.name))
                    object.__setattr__(r, "run", None)
                say(f"scenario {i + 1}/{n} {r.scenario.name}: {r.verdict.upper()} ({r.reasons[0]})")
                return [r]

            def scen_failed(i: int, error: str) -> list[Any]:
                from kvlab.stress.evaluate import _failed

                s = matrix.scenarios[i]
                say(f"scenario {i + 1}/{n} {s.name}: FAIL (task failed twice: {error})")
                return [_failed(s, f"task failed twice: {error}", {}, "high")]

            run_part(
                "scenarios",
                scenario_task,
                [(s, slo, keep) for s in matrix.scenarios],
                scen_done,
                scen_failed,
            )
        if "ranges" in parts:

            def range_done(_i: int, row: Any) -> list[Any]:
                cap = "+" if row.search.capped else ""
                say(
                    f"safe {row.kind} {row.model} seq {row.seq_len:,}: {row.best}{cap} "
                    f"({row.search.num_runs} runs)"
                )
                return [row]

            items = [
                (b, kind, seq, spec, slo)
                for b in bases
                for kind in ("batch", "concurrency")
                for seq in spec.seq_lens
            ]
            run_part("ranges", range_task, items, range_done, task_error("range"))
        if "curves" in parts:

            def curve_done(_i: int, c: Any) -> list[Any]:
                say(
                    f"curve {c.model} on {c.gpu}: knee {c.knee_rate_per_s}, "
                    f"saturation {c.saturation_rate_per_s} req/s ({c.num_runs} runs)"
                )
                return [c]

            run_part(
                "curves",
                curve_task,
                [(b, slo, spec.gen_len) for b in bases],
                curve_done,
                task_error("curve"),
            )
        if "whatifs" in parts:

            def whatif_done(_i: int, ws: list[Any]) -> list[Any]:
                for w in ws:
                    say(f"what-if {w.before.model}: {w.line()}")
                return ws

            pairs = [(b, spec, slo, kind) for b in bases for kind in ("matrix", "KV-bound")]
            run_part("whatifs", whatif_task, pairs, whatif_done, task_error("what-if"))
        if "presets" in parts:

            def preset_done(_i: int, ps: list[Any]) -> list[Any]:
                for p in ps:
                    say(f"preset {p.name} {p.model}: concurrency {p.concurrency}")
                return ps

            run_part(
                "presets",
                preset_task,
                [(b, spec, slo) for b in bases],
                preset_done,
                task_error("preset"),
            )
    except KeyboardInterrupt:
        res.interrupted = True
        say("interrupted: no new work launched; keeping what finished")
    res.wall_s = time.perf_counter() - t0
    res.num_prepared = ex.num_prepared
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
    atomic_write_text(out / "stress_timing.json", json.dumps(res.timing(), indent=1) + "\n")
    atomic_write_text(out / "stress.md", markdown(res.to_dict()))
