"""The figure of ``kvlab agents compare --plot``: prompt tokens per model call, per run.

Solid lines are the prompt tokens the server reported for each agent call of agent 0;
dashed lines of the same colour the cached tokens (prefix hits); a cross marks an
overflow. PNG and SVG side by side (the plot extra: matplotlib).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from kvlab.errors import DependencyMissing, RunDirError
from kvlab.report.figure_dpi import png_dpi


def _steps(run_dir: Path) -> list[dict]:
    p = run_dir / "steps.jsonl"
    rows = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise RunDirError(f"{p}: unreadable: {e.strerror or e}") from None
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunDirError(f"{p}:{n}: not a JSON object") from None
    return rows


def plot_prompts(runs: Sequence[Path], labels: Sequence[str], base: Path) -> list[Path]:
    """Draw the figure to ``base``.png and ``base``.svg; returns the two paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyMissing("matplotlib", "plot") from None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (d, label) in enumerate(zip(runs, labels, strict=True)):
        rows = [r for r in _steps(d) if r.get("agent") == 0 and r.get("kind") == "agent"]
        color = f"C{i % 10}"
        ok = [r for r in rows if r.get("status") == "ok"]
        ax.plot([r["step"] + 1 for r in ok], [r["prompt_tokens"] for r in ok], color=color,
                label=label, marker=".")  # fmt: skip
        cached = [r for r in ok if r.get("cached_tokens") is not None]
        ax.plot([r["step"] + 1 for r in cached], [r["cached_tokens"] for r in cached],
                color=color, linestyle="--", linewidth=1)  # fmt: skip
        for r in rows:
            if r.get("status") == "overflow":
                top = max((x["prompt_tokens"] for x in ok), default=0)
                ax.plot([r["step"] + 1], [top], color=color, marker="x", markersize=10)
    ax.set_xlabel("model call")
    ax.set_ylabel("prompt tokens (dashed: cached)")
    ax.set_title("Prompt per model call (server usage; x: overflow)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=png_dpi(120))
    plt.close(fig)
    return paths
