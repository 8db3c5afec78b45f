"""The workload docs' numbers are computed: regenerate the shapes table and compare."""

from __future__ import annotations

from pathlib import Path

from kvlab.workload.generators import SHAPES, generate
from kvlab.workload.stats import workload_stats

DOC = Path(__file__).resolve().parents[2] / "docs" / "workloads.md"


def test_shapes_table_matches_generators() -> None:
    text = DOC.read_text()
    for shape in SHAPES:
        s = workload_stats(generate(shape, seed=0))
        row = (
            f"| {shape} | {s['num_requests']} | {s['num_sessions']} | "
            f"{s['prompt_tokens_total']:,} | {s['prompt_tokens']['mean']:,.0f} | "
            f"{s['prompt_tokens']['max']:,.0f} | {s['prefix_reuse']['hit_rate']:.1%} |"
        )
        assert row in text, row


def test_every_shape_is_documented() -> None:
    text = DOC.read_text()
    for shape in SHAPES:
        assert f"**{shape}**:" in text
