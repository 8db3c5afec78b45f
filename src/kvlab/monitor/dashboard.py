"""The terminal dashboard: one Rich panel per server, side by side.

Rich rather than Textual: the dashboard is a read-only view redrawn once per
interval, which Rich's ``Live`` does in a few lines; Rich is already installed
with the CLI (Typer depends on it), starts in a few tens of milliseconds and
renders the same frame to a terminal, a pipe or a captured tmux pane. Textual
would add a dependency and an application framework (widgets, focus, CSS) that
a view without input does not use.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kvlab.monitor.sampler import Sample

if TYPE_CHECKING:
    from rich.console import RenderableType

    from kvlab.monitor.watch import ServerView

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int = 30) -> str:
    """Fractions 0-1 as block characters, one per value (the last ``width``); ``·`` unknown."""
    out = []
    for v in list(values)[-width:]:
        if v is None:
            out.append("·")
        else:
            out.append(SPARK[min(len(SPARK) - 1, max(0, int(v * len(SPARK))))])
    return "".join(out)


def bar(frac: float, width: int = 20) -> str:
    n = round(max(0.0, min(1.0, frac)) * width)
    return "█" * n + "░" * (width - n)


def _f(v: float | None, fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s")


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def cache_text(cc: dict[str, str]) -> str:
    """The cache config in a few words: ``16-token blocks, 8,192 blocks, dtype auto``."""
    parts = []
    if "block_size" in cc:
        parts.append(f"{cc['block_size']}-token blocks")
    if cc.get("num_gpu_blocks", "").isdigit():
        parts.append(f"{int(cc['num_gpu_blocks']):,} blocks")
    if "cache_dtype" in cc:
        parts.append(f"dtype {cc['cache_dtype']}")
    for k in ("max_total_num_tokens", "n_tokens_max"):
        if cc.get(k, "").isdigit():
            parts.append(f"{int(cc[k]):,} tokens")
    return ", ".join(parts)


def server_lines(view: ServerView) -> list[tuple[str, str]]:
    """The rows of one server's panel as (label, value) text."""
    s: Sample | None = view.last
    rows: list[tuple[str, str]] = []
    if s is None:
        return [("status", "waiting for the first scrape")]
    if not s.up:
        since = s.unreachable_since_unix or s.t_unix
        status = "UNREACHABLE" if s.problem == "unreachable" else "NO METRICS"
        rows.append(("status", f"{status} since {_clock(since)} ({s.t_unix - since:.0f} s)"))
        rows.append(("why", s.error or "-"))
    else:
        reset = " (counters reset: restarted)" if view.reset_seen_unix else ""
        rows.append(("status", f"up, {s.dialect}{reset}"))
    good = view.last_good
    if good is None:
        return rows + view.alert_rows()
    u = good.kv_cache_usage_perc
    rows.append(("KV usage", "-" if u is None else f"{bar(u)} {u * 100:5.1f} %"))
    rows.append(("history", sparkline(view.usage_history)))
    rate = good.prefix_hit_rate
    q = good.prefix_queries_tokens
    rows.append(
        (
            "prefix hit",
            "-" if rate is None else f"{rate * 100:.1f} % of {q:,.0f} tok" if q else f"{rate:.3f}",
        )
    )
    rows.append(("preempt/s", _f(good.preemptions_per_s, ".2f")))
    rows.append(
        (
            "run / wait",
            f"{_f(good.num_requests_running, '.0f')} / {_f(good.num_requests_waiting, '.0f')}",
        )
    )
    rows.append(("TTFT p50/p99", f"{_ms(good.ttft_p50_s)} / {_ms(good.ttft_p99_s)}"))
    per_request = (good.itl_metric or "").endswith("request_time_per_output_token_seconds")
    rows.append(
        (
            "TPOT p50/p99" if per_request else "ITL p50/p99",
            f"{_ms(good.itl_p50_s)} / {_ms(good.itl_p99_s)}",
        )
    )
    rows.append(("gen tok/s", _f(good.generation_tokens_per_s, ",.1f")))
    if good.cache_config:
        rows.append(("cache", cache_text(good.cache_config)))
    return rows + view.alert_rows()


def render(views: Sequence[ServerView], interval_s: float) -> RenderableType:
    """The whole dashboard: a header and the servers' panels side by side."""
    from rich.columns import Columns
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    panels = []
    for v in views:
        t = Table.grid(padding=(0, 1))
        t.add_column(style="bold", no_wrap=True)
        t.add_column(overflow="fold")
        for label, value in server_lines(v):
            style = "bold red" if value.startswith(("FIRING", "UNREACH", "NO METRICS")) else ""
            t.add_row(label, Text(value, style=style))
        panels.append(Panel(t, title=v.url, title_align="left", width=60))
    head = Text(
        f"kvlab monitor  {time.strftime('%H:%M:%S')}  every {interval_s:g} s  "
        f"({len(views)} server{'s' if len(views) != 1 else ''}; Ctrl-C quits)",
        style="bold",
    )
    return Group(head, Columns(panels))


def plain_line(view: ServerView) -> str:
    """One line per server and interval, for a pipe (no dashboard)."""
    s = view.last
    if s is None:
        return f"{view.url}: -"
    if not s.up:
        return f"{_clock(s.t_unix)} {view.url}: {s.error}"
    u = s.kv_cache_usage_perc
    firing = ",".join(sorted(view.alerts.firing)) or "-"
    return (
        f"{_clock(s.t_unix)} {view.url}: usage {'-' if u is None else f'{u:.3f}'} "
        f"hit {_f(s.prefix_hit_rate, '.3f')} preempt/s {_f(s.preemptions_per_s, '.2f')} "
        f"run {_f(s.num_requests_running, '.0f')} wait {_f(s.num_requests_waiting, '.0f')} "
        f"ttft_p99 {_ms(s.ttft_p99_s)} alerts {firing}"
    )


__all__ = ["bar", "plain_line", "render", "server_lines", "sparkline"]
