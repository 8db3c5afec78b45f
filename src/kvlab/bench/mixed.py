"""Experiment ``mixed``: do long requests hurt short ones sharing the batch?

Run A: ``num_short`` short requests alone. Run B: the same short requests
plus ``num_long`` long ones, all due at t=0, everything in flight at once
(the long ones are sent first). Batching is real in both backends: the
transformers loop prefills arrivals together in one left-padded batch and
decodes every running request in one forward; a vLLM server schedules them
in shared steps. Figure: fig5 TTFT and E2E percentiles of the short
requests, alone vs mixed; plus the KV timeline of both runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kvlab.bench.experiment import ExperimentResult, Progress, save_run, start
from kvlab.bench.points import class_latency, run_point
from kvlab.bench.target import Target
from kvlab.bench.workloads import mixed, uniform
from kvlab.errors import ConfigError


@dataclass(frozen=True, slots=True)
class MixedParams:
    num_short: int = 8
    short_prompt_tokens: int = 16
    short_output_tokens: int = 8
    num_long: int = 4
    long_prompt_tokens: int = 192
    long_output_tokens: int = 48

    def __post_init__(self) -> None:
        if min(asdict(self).values()) < 1:
            raise ConfigError("every mixed-experiment size must be >= 1")


def run(
    target: Target,
    out_dir: Path,
    params: MixedParams | None = None,
    progress: Progress | None = None,
    latency: Mapping[str, Any] | None = None,
) -> ExperimentResult:
    from kvlab.report import plots

    p = params or MixedParams()
    exp = start("mixed", target, asdict(p), latency)
    short = (p.short_prompt_tokens, p.short_output_tokens)
    long = (p.long_prompt_tokens, p.long_output_tokens)
    alone_wl = uniform("alone-short", p.num_short, *short, cls="short")
    mixed_wl = mixed("mixed", p.num_short, short, p.num_long, long)
    results = {}
    for i, (label, wl) in enumerate((("alone", alone_wl), ("mixed", mixed_wl))):
        result = target.run(wl, len(wl.requests))
        save_run(result, out_dir, label, exp)
        point = run_point(result, target, variant=label)
        point["short"] = class_latency(result, "short")
        exp.points.append(point)
        results[label] = result
        if progress:
            progress(label, i + 1, 2)
    exp.save(out_dir)  # the points first: a missing plot extra loses nothing

    def draw() -> list[Path]:
        figs: list[Path] = []
        figs += plots.tail_latency(
            exp.points[0]["short"], exp.points[1]["short"], exp.title, out_dir / "fig5_tail_latency"
        )
        figs += plots.kv_timeline(
            {k: r.timeseries for k, r in results.items()}, exp.title, out_dir / "kv_timeline"
        )
        return figs

    exp.figures += plots.or_warning(draw)
    exp.save(out_dir)
    return exp


__all__ = ["MixedParams", "run"]
