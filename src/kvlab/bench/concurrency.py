"""Experiment ``concurrency``: KV, memory and aggregate throughput vs requests in flight.

For each level ``c`` the same workload (``num_requests`` requests of
``prompt_tokens`` + ``output_tokens``, all due at t=0) runs with at most ``c``
in flight. Figures: fig1 peak KV and memory vs concurrency, fig2 aggregate
throughput (total tokens over wall time) vs concurrency, and the KV timeline of
the highest level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kvlab.bench.experiment import ExperimentResult, Progress, save_run, start
from kvlab.bench.points import run_point
from kvlab.bench.target import Target
from kvlab.bench.workloads import uniform
from kvlab.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ConcurrencyParams:
    levels: tuple[int, ...] = (1, 2, 4, 8)
    num_requests: int = 16
    prompt_tokens: int = 64
    output_tokens: int = 64

    def __post_init__(self) -> None:
        if not self.levels or min(self.levels) < 1:
            raise ConfigError("concurrency levels must be >= 1")
        if min(self.num_requests, self.prompt_tokens, self.output_tokens) < 1:
            raise ConfigError("num_requests, prompt_tokens and output_tokens must be >= 1")


def run(
    target: Target,
    out_dir: Path,
    params: ConcurrencyParams | None = None,
    progress: Progress | None = None,
    latency: Mapping[str, Any] | None = None,
) -> ExperimentResult:
    from kvlab.report import plots

    p = params or ConcurrencyParams()
    exp = start("concurrency", target, asdict(p), latency)
    timelines = {}
    for i, c in enumerate(p.levels):
        wl = uniform(f"conc{c}", p.num_requests, p.prompt_tokens, p.output_tokens)
        result = target.run(wl, c)
        save_run(result, out_dir, f"c{c}", exp)
        exp.points.append(run_point(result, target, concurrency=c))
        timelines = {f"concurrency {c}": result.timeseries}
        if progress:
            progress(f"concurrency {c}", i + 1, len(p.levels))
    exp.save(out_dir)  # the points first: a missing plot extra loses nothing

    def draw() -> list[Path]:
        figs: list[Path] = []
        figs += plots.kv_vs_concurrency(exp.points, exp.title, out_dir / "fig1_kv_vs_concurrency")
        figs += plots.throughput_vs_concurrency(
            exp.points, exp.title, out_dir / "fig2_throughput_vs_concurrency"
        )
        figs += plots.kv_timeline(timelines, exp.title, out_dir / "kv_timeline")
        return figs

    exp.figures += plots.or_warning(draw)
    exp.save(out_dir)
    return exp


__all__ = ["ConcurrencyParams", "run"]
