"""Plot of a cache curve (hit rate against capacity); matplotlib is imported lazily."""

from __future__ import annotations

from pathlib import Path

from kvlab.errors import DependencyMissing
from kvlab.report.figure_dpi import png_dpi
from kvlab.sim.cache_curve import CacheCurve


def plot_cache_curve(
    curve: CacheCurve,
    path: str | Path,
    *,
    title: str = "",
    block_bytes: float | None = None,
) -> Path:
    """Write a PNG (or any format matplotlib infers from the suffix) of ``curve``.

    The x axis is capacity in blocks, or in GB when ``block_bytes`` is given.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyMissing("matplotlib", "plot") from None
    scale = 1.0 if block_bytes is None else block_bytes / 1e9
    xs = [max(p.capacity_blocks, 1) * scale for p in curve.points]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(xs, [p.token_hit_rate for p in curve.points], marker="o", label="token hit rate")
    ax.plot(xs, [p.block_hit_rate for p in curve.points], marker=".", label="block hit rate")
    ax.axhline(curve.infinite.token_hit_rate, color="grey", ls="--", lw=1, label="infinite cache")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("cache capacity (GB)" if block_bytes is not None else "cache capacity (blocks)")
    ax.set_ylabel("prefix hit rate")
    ax.set_title(title or f"LRU prefix cache, block size {curve.block_size}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=png_dpi(120))
    plt.close(fig)
    return out


__all__ = ["plot_cache_curve"]
