"""Experiment ``seqlen``: latency and KV bytes vs sequence length, one request at a time.

For each prompt length ``L``, ``repeats`` requests of ``L`` prompt tokens and
``output_tokens`` run one after another (each sent when the previous one
finished), so a request never queues and its KV is the whole cache. The
sequence then holds ``L + output_tokens - 1`` tokens at its peak (the last
generated token is never written back). Figures: fig3 TTFT/TPOT/E2E vs
length, fig4 measured KV bytes vs the formula ``tokens x kv_bytes_per_token``
(and, on a server, rounded up to blocks).
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
class SeqlenParams:
    prompt_lengths: tuple[int, ...] = (16, 32, 64, 128, 192)
    output_tokens: int = 32
    repeats: int = 3

    def __post_init__(self) -> None:
        if not self.prompt_lengths or min(self.prompt_lengths) < 1:
            raise ConfigError("prompt lengths must be >= 1")
        if self.output_tokens < 1 or self.repeats < 1:
            raise ConfigError("output_tokens and repeats must be >= 1")


def run(
    target: Target,
    out_dir: Path,
    params: SeqlenParams | None = None,
    progress: Progress | None = None,
    latency: Mapping[str, Any] | None = None,
) -> ExperimentResult:
    from kvlab.report import plots

    p = params or SeqlenParams()
    limit = target.max_model_len
    if limit is not None and max(p.prompt_lengths) + p.output_tokens > limit:
        raise ConfigError(
            f"prompt {max(p.prompt_lengths)} + output {p.output_tokens} tokens exceed the "
            f"model's {limit}-token context; lower --max-len"
        )
    exp = start("seqlen", target, asdict(p), latency)
    bpt = target.kv_bytes_per_token()
    for i, L in enumerate(p.prompt_lengths):
        wl = uniform(f"len{L}", p.repeats, L, p.output_tokens, sequential=True)
        result = target.run(wl, 1)
        save_run(result, out_dir, f"len{L}", exp)
        tokens = L + p.output_tokens - 1
        point = run_point(result, target, prompt_tokens=L, sequence_tokens=tokens)
        point["kv_bytes_formula"] = None if bpt is None else tokens * bpt
        block = point.get("block_size")
        if bpt is not None and isinstance(block, int):
            point["kv_bytes_formula_blocks"] = -(-tokens // block) * block * bpt
        exp.points.append(point)
        if progress:
            progress(f"length {L}", i + 1, len(p.prompt_lengths))
    exp.save(out_dir)  # the points first: a missing plot extra loses nothing

    def draw() -> list[Path]:
        figs: list[Path] = []
        figs += plots.latency_vs_seqlen(exp.points, exp.title, out_dir / "fig3_latency_vs_seqlen")
        figs += plots.kv_vs_seqlen(exp.points, exp.title, out_dir / "fig4_kv_vs_seqlen")
        return figs

    exp.figures += plots.or_warning(draw)
    exp.save(out_dir)
    return exp


__all__ = ["SeqlenParams", "run"]
