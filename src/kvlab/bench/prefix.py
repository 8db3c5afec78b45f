"""Experiment ``prefix``: a system prompt shared by every request vs unique prompts.

Both runs send ``num_requests`` requests of ``prefix_tokens`` + ``suffix_tokens``
prompt tokens, all in flight together; in one the prefix is the same content
for all, in the other it differs per request. A paged server with prefix
caching stores a shared prefix once (its prefix-cache hit rate and KV usage
show it; the run resets the prefix cache first when the server allows); the
transformers backend has no prefix cache and stores it once per sequence,
which its measured cache bytes show. Figures: peak KV and TTFT for both
variants, and their KV timelines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kvlab.bench.experiment import ExperimentResult, Progress, save_run, start
from kvlab.bench.points import run_point
from kvlab.bench.target import Target
from kvlab.bench.workloads import shared_prefix
from kvlab.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PrefixParams:
    num_requests: int = 8
    prefix_tokens: int = 128
    suffix_tokens: int = 16
    output_tokens: int = 8

    def __post_init__(self) -> None:
        if min(asdict(self).values()) < 1:
            raise ConfigError("every prefix-experiment size must be >= 1")


def run(
    target: Target,
    out_dir: Path,
    params: PrefixParams | None = None,
    progress: Progress | None = None,
    latency: Mapping[str, Any] | None = None,
) -> ExperimentResult:
    from kvlab.report import plots

    p = params or PrefixParams()
    exp = start("prefix", target, asdict(p), latency)
    bpt = target.kv_bytes_per_token()
    timelines = {}
    for i, shared in enumerate((False, True)):
        label = "shared" if shared else "unique"
        wl = shared_prefix(
            f"prefix-{label}",
            p.num_requests,
            p.prefix_tokens,
            p.suffix_tokens,
            p.output_tokens,
            shared=shared,
        )
        result = target.run(wl, p.num_requests)
        save_run(result, out_dir, label, exp)
        point = run_point(result, target, variant=label)
        if bpt is not None:
            per_seq = p.suffix_tokens + p.output_tokens - 1
            stored_once = p.prefix_tokens + p.num_requests * per_seq
            per_request = p.num_requests * (p.prefix_tokens + per_seq)
            point["kv_bytes_formula_prefix_once"] = stored_once * bpt
            point["kv_bytes_formula_prefix_per_request"] = per_request * bpt
        exp.points.append(point)
        timelines[label] = result.timeseries
        if progress:
            progress(label, i + 1, 2)
    kv_key = (
        "kv_bytes_measured_peak"
        if "kv_bytes_measured_peak" in exp.points[0]
        else "kv_bytes_server_peak"
    )
    exp.save(out_dir)  # the points first: a missing plot extra loses nothing

    def draw() -> list[Path]:
        figs: list[Path] = []
        figs += plots.prefix_sharing(
            exp.points, exp.title, out_dir / "prefix_sharing", kv_key=kv_key
        )
        figs += plots.kv_timeline(timelines, exp.title, out_dir / "kv_timeline")
        return figs

    exp.figures += plots.or_warning(draw)
    exp.save(out_dir)
    return exp


__all__ = ["PrefixParams", "run"]
