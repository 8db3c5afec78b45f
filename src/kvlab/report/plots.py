"""Figures of the bench experiments (matplotlib, imported lazily; PNG + SVG).

Every function takes plain experiment points (dicts from
:mod:`kvlab.bench.points`), a title, and an output path without suffix; it
writes ``<base>.png`` and ``<base>.svg`` and returns both paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kvlab.errors import DependencyMissing

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
        fig.savefig(p, dpi=120)
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
    """KV over time of one or more runs: the server's ``kv_cache_usage_perc`` or
    the in-process cache bytes, with running requests on a second axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    ax2 = ax.twinx()
    ylabel = "KV"
    for label, ts in runs.items():
        t = list(ts.get("t_s", []))
        if not t:
            continue
        if ts.get("kv_cache_usage_perc"):
            ax.step(t, [100 * v for v in ts["kv_cache_usage_perc"]], where="post", label=label)
            ylabel = "kv_cache_usage_perc (%)"
        elif ts.get("kv_cache_bytes"):
            ax.step(t, _kib(list(ts["kv_cache_bytes"])), where="post", label=f"{label}: cache")
            if ts.get("kv_token_bytes"):
                ax.step(
                    t,
                    _kib(list(ts["kv_token_bytes"])),
                    where="post",
                    linestyle="--",
                    label=f"{label}: real tokens",
                )
            ylabel = "KV (KiB)"
        running = ts.get("num_requests_running")
        if running:
            ax2.plot(t[: len(running)], list(running), ":", alpha=0.6, label=f"{label}: running")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax2.set_ylim(bottom=0)
    ax2.set_ylabel("requests running")
    for axis, where in ((ax, "upper left"), (ax2, "upper right")):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc=where, fontsize="small")
    ax.set_title(f"KV usage timeline\n{title}")
    return _save(fig, base)


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
    "tail_latency",
    "throughput_vs_concurrency",
]
