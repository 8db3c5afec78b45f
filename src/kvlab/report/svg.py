"""Figures as inline SVG text for the self-contained HTML report (matplotlib, lazy).

Each function takes plain data and returns one ``<svg>`` element as a string (no XML
prologue, no external reference: fonts are drawn as paths' text with the default
family, nothing is linked), plus it can write the same figure as PNG and SVG files.
Series longer than :data:`MAX_POINTS` are thinned by an even stride, so a report's
size does not grow with a run's length.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kvlab.errors import DependencyMissing
from kvlab.report.figure_dpi import png_dpi

#: The most points drawn per line.
MAX_POINTS = 1500


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyMissing("matplotlib", "plot") from None
    plt.rcParams["svg.hashsalt"] = "kvlab"  # deterministic ids
    plt.rcParams["svg.fonttype"] = "none"  # text as text: smaller, and nothing loaded
    return plt


def thin(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """At most :data:`MAX_POINTS` points, by an even stride (the last point kept)."""
    n = len(xs)
    if n <= MAX_POINTS:
        return list(xs), list(ys)
    step = -(-n // MAX_POINTS)
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def to_svg(fig: Any, files: Path | None = None) -> str:
    """The figure as an inline ``<svg>`` string; also ``files``.png/.svg when given."""
    plt = _plt()
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    if files is not None:
        files.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(files.with_suffix(".png"), dpi=png_dpi(110))
        files.with_suffix(".svg").write_text(buf.getvalue())
    plt.close(fig)
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    # drop fixed pt sizes so the figure scales with the page
    svg = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", svg, count=1)
    return svg


def lines(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    files: Path | None = None,
    right: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    right_label: str = "",
    markers: bool = False,
) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    style = {"marker": "o", "markersize": 3} if markers else {}
    for name, (xs, ys) in series.items():
        x, y = thin(xs, ys)
        ax.plot(x, y, label=name, linewidth=1.3, **style)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if right:
        ax2 = ax.twinx()
        for name, (xs, ys) in right.items():
            x, y = thin(xs, ys)
            ax2.plot(x, y, label=name, linewidth=1.0, linestyle="--", color="tab:gray", **style)
        ax2.set_ylabel(right_label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if labels:
        ax.legend(handles, labels, fontsize=8, loc="best")
    return to_svg(fig, files)


def histogram(
    values: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    bins: int = 40,
    files: Path | None = None,
) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    for name, vs in values.items():
        if vs:
            ax.hist(list(vs), bins=bins, alpha=0.6, label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("requests")
    ax.grid(alpha=0.3)
    if any(values.values()):
        ax.legend(fontsize=8)
    return to_svg(fig, files)


def panels(
    rows: Sequence[tuple[str, Mapping[str, tuple[Sequence[float], Sequence[float | None]]]]],
    *,
    title: str,
    xlabel: str,
    marks: Sequence[tuple[float, str, str]] = (),
    files: Path | None = None,
) -> str:
    """Stacked panels over one shared x axis: ``rows`` is (y label, {name: (xs, ys)});
    a None in ys is a break in the line. ``marks`` are vertical lines (x, label, color)
    drawn across every panel, labelled in the top one."""
    plt = _plt()
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 1, figsize=(7.5, 1.6 * n + 0.6), sharex=True, squeeze=False)
    for ax, (ylabel, series) in zip(axes[:, 0], rows, strict=False):
        for name, (xs, ys) in series.items():
            x, y = thin(xs, [float("nan") if v is None else v for v in ys])
            ax.plot(x, y, label=name, linewidth=1.1)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="upper left")
        for x0, _label, color in marks:
            ax.axvline(x0, color=color, linewidth=0.9, linestyle=":")
    top = axes[0, 0]
    for x0, label, color in marks:
        top.annotate(
            label,
            (x0, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=6,
            color=color,
            rotation=90,
            va="top",
            ha="right",
        )
    top.set_title(title, fontsize=10)
    axes[-1, 0].set_xlabel(xlabel)
    return to_svg(fig, files)
