"""Figures of the bench experiments and of single runs (matplotlib, imported
lazily; PNG + SVG).

Every function takes plain data (experiment points from :mod:`kvlab.bench.points`,
a run's time series or histograms), a title, and an output path without suffix;
it writes ``<base>.png`` and ``<base>.svg`` and returns both paths.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kvlab.errors import DependencyMissing
from kvlab.report.figure_dpi import png_dpi

MIB = 1024 * 1024


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyMissing("matplotlib", "plot") from None
    return plt


def _save(fig: Any, base: Path) -> list[Path]:
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=png_dpi(120))
    _plt().close(fig)
    return paths


def _get(points: Sequence[Mapping[str, Any]], key: str, sub: str | None = None) -> list[Any]:
    out = []
    for p in points:
        v = p.get(key)
        if sub is not None:
            v = v.get(sub) if isinstance(v, Mapping) else None
        out.append(v)
    return out


def _kib(values: Sequence[Any]) -> list[float | None]:
    return [None if v is None else v / 1024 for v in values]


def kv_vs_concurrency(points: Sequence[Mapping[str, Any]], title: str, base: Path) -> list[Path]:
    """fig1: KV bytes (measured or server-reported) and process memory vs concurrency."""
    plt = _plt()
    c = _get(points, "concurrency")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    plotted = False
    for key, label, style in (
        ("kv_bytes_measured_peak", "KV cache tensors (measured)", "o-"),
        ("kv_bytes_tokens_peak", "KV of real tokens (formula)", "s--"),
        ("kv_bytes_server_peak", "server KV in use (usage x blocks)", "^-"),
    ):
        ys = _get(points, key)
        if any(y is not None for y in ys):
            ax.plot(c, _kib(ys), style, label=label)
            plotted = True
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("peak KV (KiB)")
    ax.set_ylim(bottom=0)
    ax.set_xscale("log", base=2)
    rss = _get(points, "peak_rss_bytes")
    usage = _get(points, "kv_usage_peak")
    if any(v is not None for v in rss):
        ax2 = ax.twinx()
        ax2.plot(c, [None if v is None else v / MIB for v in rss], "k:", label="process RSS")
        ax2.set_ylabel("peak RSS (MiB)")
        ax2.legend(loc="lower right")
    elif any(v is not None for v in usage):
        ax2 = ax.twinx()
        ax2.plot(c, [None if v is None else 100 * v for v in usage], "k:", label="kv usage %")
        ax2.set_ylabel("peak kv_cache_usage_perc (%)")
        ax2.legend(loc="lower right")
    if plotted:
        ax.legend(loc="upper left")
    ax.set_title(f"KV usage vs concurrency\n{title}")
    return _save(fig, base)


def throughput_vs_concurrency(
    points: Sequence[Mapping[str, Any]], title: str, base: Path
) -> list[Path]:
    """fig2: aggregate throughput (total tokens / wall time) vs concurrency."""
    plt = _plt()
    c = _get(points, "concurrency")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(c, _get(points, "total_throughput_tok_per_s"), "o-", label="prompt + output tokens")
    ax.plot(c, _get(points, "output_throughput_tok_per_s"), "s--", label="output tokens")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("tokens / s (total over wall time)")
    ax.legend()
    ax.set_title(f"Aggregate throughput vs concurrency\n{title}")
    return _save(fig, base)


def latency_vs_seqlen(points: Sequence[Mapping[str, Any]], title: str, base: Path) -> list[Path]:
    """fig3: TTFT, TPOT and E2E (p50 with p90 whiskers) vs prompt length."""
    plt = _plt()
    L = _get(points, "prompt_tokens")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, key, name in zip(
        axes, ("ttft_s", "tpot_s", "e2e_s"), ("TTFT", "TPOT", "E2E"), strict=True
    ):
        p50 = [None if v is None else 1000 * v for v in _get(points, key, "p50")]
        p90 = [None if v is None else 1000 * v for v in _get(points, key, "p90")]
        ax.plot(L, p50, "o-", label="p50")
        ax.plot(L, p90, "s--", label="p90")
        ax.set_xlabel("prompt tokens")
        ax.set_ylim(bottom=0)
        ax.set_ylabel(f"{name} (ms)")
        ax.set_title(name)
        ax.legend()
    fig.suptitle(f"Latency vs sequence length - {title}")
    return _save(fig, base)


def kv_vs_seqlen(points: Sequence[Mapping[str, Any]], title: str, base: Path) -> list[Path]:
    """fig4: measured KV bytes of one sequence vs the formula, against sequence length."""
    plt = _plt()
    L = _get(points, "sequence_tokens")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(L, _kib(_get(points, "kv_bytes_formula")), "k-", label="formula (tokens x B/token)")
    for key, label, style in (
        ("kv_bytes_measured_peak", "measured: cache tensors", "o"),
        ("kv_bytes_server_peak", "measured: server blocks in use", "^"),
        ("kv_bytes_formula_blocks", "formula rounded up to blocks", "s--"),
    ):
        ys = _get(points, key)
        if any(y is not None for y in ys):
            ax.plot(L, _kib(ys), style, label=label, fillstyle="none")
    ax.set_xlabel("tokens in the sequence (prompt + output - 1)")
    ax.set_ylabel("KV (KiB)")
    ax.legend()
    ax.set_title(f"KV bytes vs sequence length\n{title}")
    return _save(fig, base)


def tail_latency(
    alone: Mapping[str, Any], mixed: Mapping[str, Any], title: str, base: Path
) -> list[Path]:
    """fig5: short requests' TTFT and E2E percentiles, alone vs mixed with long ones."""
    plt = _plt()
    qs = ("p50", "p90", "p99")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.38
    for ax, key, name in zip(axes, ("ttft_s", "e2e_s"), ("TTFT", "E2E"), strict=True):
        xs = range(len(qs))
        a = [1000 * (alone[key].get(q) or 0.0) for q in qs]
        m = [1000 * (mixed[key].get(q) or 0.0) for q in qs]
        ax.bar([x - width / 2 for x in xs], a, width, label="short alone")
        ax.bar([x + width / 2 for x in xs], m, width, label="short mixed with long")
        ax.set_xticks(list(xs), qs)
        ax.set_ylabel(f"{name} (ms)")
        ax.set_title(f"short requests: {name}")
        ax.legend()
    fig.suptitle(f"Tail latency of short requests - {title}")
    return _save(fig, base)


def kv_timeline(
    runs: Mapping[str, Mapping[str, Sequence[float]]], title: str, base: Path
) -> list[Path]:
    """KV over time of one or more runs (top): the server's ``kv_cache_usage_perc``
    (and, for a simulation, the usage that counts cached free blocks as used) or the
    in-process cache bytes; running and waiting requests below. One color per run,
    one line style per quantity."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(7.2, 5.4), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    ylabel = "KV"
    for k, (label, ts) in enumerate(runs.items()):
        t = list(ts.get("t_s", []))
        if not t:
            continue
        color = f"C{k % 10}"
        if ts.get("kv_cache_usage_perc"):
            lines = [
                ("kv_cache_usage_perc", label, "-"),
                ("kv_cache_usage_with_cached_perc", f"{label}: cached free counted as used", "--"),
            ]
            ylabel, scale = "kv_cache_usage_perc (%)", 100.0
        else:
            lines = [
                ("kv_cache_bytes", f"{label}: cache", "-"),
                ("kv_token_bytes", f"{label}: real tokens", "--"),
            ]
            ylabel, scale = "KV (KiB)", 1 / 1024
        for col, name, style in lines:
            values = ts.get(col)
            if values:
                ys = [None if v is None else scale * v for v in values]
                ax.step(t, ys, style, where="post", color=color, label=name)
        for col, name, style in (
            ("num_requests_running", "running", "-"),
            ("num_requests_waiting", "waiting", ":"),
        ):
            counts = ts.get(col)
            if counts and any(counts):
                ax2.step(
                    t[: len(counts)],
                    list(counts),
                    style,
                    where="post",
                    color=color,
                    alpha=0.7,
                    label=f"{label}: {name}",
                )
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax2.set_xlabel("time (s)")
    ax2.set_ylim(bottom=0)
    ax2.set_ylabel("requests")
    for axis in (ax, ax2):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="upper right", fontsize="small")
    ax.set_title(f"KV usage timeline\n{title}")
    return _save(fig, base)


#: The residency histograms of a simulation (``histograms.json``) and their titles.
RESIDENCY = (
    ("block_lifetime_s", "lifetime: allocated to evicted", "no evictions"),
    ("block_idle_before_evict_s", "idle: last use to evicted", "no evictions"),
    ("block_reuse_gap_s", "reuse gap: last use to hit", "no hits"),
)


def _age(seconds: float) -> str:
    """A bin edge for an axis label: ``17.6 s``, ``1.1 ms``, ``550 us``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def residency(histograms: Mapping[str, Any], title: str, base: Path) -> list[Path]:
    """The block residency histograms of a simulation side by side: blocks per
    power-of-two bin of age on a log time axis; blocks of age 0 (the same tick)
    are counted in the panel's corner, and an empty panel says so."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(RESIDENCY), figsize=(12, 3.6))
    for ax, (key, name, empty) in zip(axes, RESIDENCY, strict=True):
        h = histograms.get(key) or {}
        edges, counts = h.get("edges") or [], h.get("counts") or []
        bars = [  # bin i holds ages in [edges[i], edges[i + 1])
            (edges[i], edges[i + 1], c)
            for i, c in enumerate(counts)
            if c and 0 < i < len(edges) - 1
        ]
        if bars:
            ax.bar(
                [lo for lo, _, _ in bars],
                [c for _, _, c in bars],
                width=[hi - lo for lo, hi, _ in bars],
                align="edge",
            )
            ax.set_xscale("log")
            ticks = [lo for lo, _, _ in bars] + [bars[-1][1]]
            ticks = ticks[:: -(-len(ticks) // 6)]  # at most 6 labelled edges
            ax.set_xticks(ticks, [_age(x) for x in ticks])
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        zero = counts[0] if counts and edges and edges[0] == 0 else 0
        if zero:
            ax.text(0.98, 0.95, f"{zero:,} at age 0", ha="right", va="top", transform=ax.transAxes)
        if not bars and not zero:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("age (bins of powers of two)")
    axes[0].set_ylabel("blocks")
    fig.suptitle(f"KV block residency - {title}")
    return _save(fig, base)


def or_warning(draw: Callable[[], list[Path]]) -> list[Path]:
    """The figures ``draw`` writes; without the plot extra, none, and one warning
    line on stderr instead of an error (the results are written before plots)."""
    try:
        return draw()
    except DependencyMissing as e:
        print(f"warning: plots skipped: {e}", file=sys.stderr)
        return []


def run_figures(run: Any, out: Path, title: str) -> list[Path]:
    """The figures of one RunResult in its directory: ``kv_timeline``, for a
    simulation (which has residency histograms) ``residency``, and for a run with
    multi-turn sessions ``sessions`` (:mod:`kvlab.report.sessions`)."""
    paths = kv_timeline({run.backend or "run": run.timeseries}, title, out / "kv_timeline")
    if any(key in run.histograms for key, _, _ in RESIDENCY):
        paths += residency(run.histograms, title, out / "residency")
    if run.summary.get("sessions"):
        from kvlab.report.sessions import sessions_figure

        paths += sessions_figure(
            {run.backend or "run": run.summary["sessions"]}, title, out / "sessions"
        )
    return paths


def prefix_sharing(
    points: Sequence[Mapping[str, Any]], title: str, base: Path, *, kv_key: str
) -> list[Path]:
    """Shared vs unique system prefix: peak KV and TTFT p50 side by side."""
    plt = _plt()
    labels = [str(p.get("variant")) for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    axes[0].bar(labels, [(p.get(kv_key) or 0) / 1024 for p in points])
    axes[0].set_ylabel("peak KV (KiB)")
    axes[0].set_title("peak KV")
    for p, x in zip(points, labels, strict=True):
        rate = p.get("prefix_cache_hit_rate")
        if isinstance(rate, float):
            axes[0].annotate(f"hit rate {rate:.0%}", (x, 0), ha="center", va="bottom")
    axes[1].bar(labels, [1000 * (p["ttft_s"].get("p50") or 0.0) for p in points])
    axes[1].set_ylabel("TTFT p50 (ms)")
    axes[1].set_title("time to first token")
    fig.suptitle(f"Shared system prefix - {title}")
    return _save(fig, base)


__all__ = [
    "kv_timeline",
    "kv_vs_concurrency",
    "kv_vs_seqlen",
    "latency_vs_seqlen",
    "prefix_sharing",
    "residency",
    "run_figures",
    "tail_latency",
    "throughput_vs_concurrency",
]
