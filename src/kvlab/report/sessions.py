"""Session continuity: what happens to a multi-turn session's prefix between its turns.

Read from a run's request records (any backend), so a simulation and a replay
against a live server are analysed the same way. The records of a session are
its turns in workload order (turn ``k`` is the ``k``-th record of the session).

* **By turn index** and **by session age** (seconds from the session's first
  arrival to the turn's arrival, in 1-2-5 bins): requests, prefix-cache hit rate
  (cached prompt tokens / prompt tokens, over the records that know their cached
  tokens) and TTFT.
* **History share** of a follow-up turn: ``min(1, (previous prompt + previous
  output) / prompt)``, the share of its prompt the previous turns can make up
  when a session re-sends its conversation (as the ``sessions``, ``agentic`` and
  ``chat`` generators do). It is what a perfect cache could serve.
* **Prefix survival**: whether the session's prefix was still cached when the
  next turn arrived, against the think time (the next turn's arrival minus the
  previous turn's finish). It is derived from the next turn's hit, not from
  eviction times: the prefix *survived* when the next turn's cached tokens cover
  the previous prompt's full blocks (``cached >= floor(prev_prompt / B) * B``).
  A hit after a think time ``g`` shows the prefix lived at least ``g``; a miss
  shows it was evicted within ``g``. ``B`` is the run's block size when known
  (the simulator), else the greatest common divisor of the run's non-zero cached
  token counts (a server caches whole blocks, so every count is a multiple of
  its block size). Turns whose previous prompt is shorter than one block, whose
  previous turn did not finish, or that know no cached tokens are left out.
* **Miss threshold**: the think time that best separates survived from lost
  prefixes (predict "lost" above it, with the fewest wrong predictions; ties go
  to the shortest), as the midpoint between the two think times it falls
  between, with the number of turns it gets wrong.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kvlab.report.figure_dpi import png_dpi
from kvlab.results.records import STATUS_OK, RequestRecord
from kvlab.results.summary import dist

#: Where the survival verdicts come from (see the module docstring).
SURVIVAL_SOURCE = "next_turn_hit"


def session_turns(records: Sequence[RequestRecord]) -> list[list[RequestRecord]]:
    """The sessions with two turns or more, each its records in order (turn 0 first)."""
    by_session: dict[str, list[RequestRecord]] = {}
    for r in records:
        if r.session_id is not None:
            by_session.setdefault(r.session_id, []).append(r)
    return [turns for turns in by_session.values() if len(turns) > 1]


def session_continuity(
    records: Sequence[RequestRecord], *, block_size: int | None = None
) -> dict[str, Any] | None:
    """The session-continuity figures of a run (see the module docstring), or None
    when it has no session of two turns or more. JSON-ready."""
    sessions = session_turns(records)
    if not sessions:
        return None
    bs = block_size if block_size else _gcd_block(records)
    turn_rows: dict[int, list[RequestRecord]] = {}
    age_rows: dict[int, list[RequestRecord]] = {}
    shares: dict[int, list[float]] = {}
    pairs: list[tuple[float, bool]] = []
    for turns in sessions:
        start = turns[0].arrival_s
        for k, r in enumerate(turns):
            turn_rows.setdefault(k, []).append(r)
            age_rows.setdefault(_age_bin(r.arrival_s - start), []).append(r)
            if k == 0:
                continue
            prev = turns[k - 1]
            if r.prompt_tokens > 0:
                history = prev.prompt_tokens + prev.output_tokens
                shares.setdefault(k, []).append(min(1.0, history / r.prompt_tokens))
            verdict = _survived(prev, r, bs)
            if verdict is not None and prev.finish_s is not None:
                pairs.append((r.arrival_s - prev.finish_s, verdict))
    by_turn = []
    for k in sorted(turn_rows):
        row = {"turn": k, **_figures(turn_rows[k])}
        row["history_share_mean"] = _mean(shares.get(k, []))
        by_turn.append(row)
    by_age = [
        {"age_lo_s": _edge(i), "age_hi_s": _edge(i + 1), **_figures(age_rows[i])}
        for i in sorted(age_rows)
    ]
    all_shares = [s for v in shares.values() for s in v]
    return {
        "num_sessions": len(sessions),
        "num_follow_up_turns": sum(len(t) - 1 for t in sessions),
        "history_share_mean": _mean(all_shares),
        "block_size": bs,
        "by_turn": by_turn,
        "by_age": by_age,
        "survival": _survival(pairs),
    }


def _figures(rows: Sequence[RequestRecord]) -> dict[str, Any]:
    known = [r for r in rows if r.cached_tokens is not None and r.status == STATUS_OK]
    prompt = sum(r.prompt_tokens for r in known)
    cached = sum(r.cached_tokens or 0 for r in known)
    ttft = dist(r.ttft_s for r in rows if r.status == STATUS_OK and r.ttft_s is not None)
    return {
        "requests": len(rows),
        "prefix_cache_hit_rate": cached / prompt if prompt else None,
        "ttft_mean_s": ttft["mean"],
        "ttft_p50_s": ttft["p50"],
        "ttft_p90_s": ttft["p90"],
    }


def _gcd_block(records: Sequence[RequestRecord]) -> int | None:
    g = 0
    for r in records:
        if r.cached_tokens:
            g = math.gcd(g, r.cached_tokens)
    return g or None


def _survived(prev: RequestRecord, nxt: RequestRecord, block_size: int | None) -> bool | None:
    """Whether ``nxt`` hit the full blocks of ``prev``'s prompt; None when undecidable."""
    if nxt.cached_tokens is None or nxt.status != STATUS_OK or prev.status != STATUS_OK:
        return None
    if block_size is None:  # no record of the run hit anything
        return False
    full = prev.prompt_tokens // block_size * block_size
    if full == 0:
        return None
    return nxt.cached_tokens >= full


def _survival(pairs: list[tuple[float, bool]]) -> dict[str, Any]:
    kept = [g for g, ok in pairs if ok]
    lost = [g for g, ok in pairs if not ok]
    out: dict[str, Any] = {
        "source": SURVIVAL_SOURCE,
        "num_turns": len(pairs),
        "num_survived": len(kept),
        "num_lost": len(lost),
        "think_time_survived_s": dist(kept),
        "think_time_lost_s": dist(lost),
        "longest_survived_think_s": max(kept) if kept else None,
        "shortest_lost_think_s": min(lost) if lost else None,
        "miss_threshold_s": None,
        "miss_threshold_errors": None,
        "by_think_time": _by_think(pairs),
    }
    if kept and lost:
        out["miss_threshold_s"], out["miss_threshold_errors"] = miss_threshold(pairs)
    return out


def miss_threshold(pairs: Sequence[tuple[float, bool]]) -> tuple[float, int]:
    """The think time above which the next turn's prefix is lost, and the turns it
    gets wrong: of the splits of the turns sorted by think time (survived below,
    lost above), the one with fewest errors, the shortest on ties; the threshold
    is the midpoint of the think times on either side (0.0 when every turn is
    called lost, the longest think time when every turn is called survived)."""
    ordered = sorted(pairs)
    n = len(ordered)
    total_kept = sum(ok for _, ok in ordered)
    best_errors = total_kept  # split before the first: everything called lost
    best_at = -1
    lost_below = kept_below = 0
    for i, (g, ok) in enumerate(ordered):
        kept_below += ok
        lost_below += not ok
        if i + 1 < n and ordered[i + 1][0] == g:
            continue  # a split falls between distinct think times only
        errors = lost_below + (total_kept - kept_below)
        if errors < best_errors:
            best_errors, best_at = errors, i
    if best_at < 0:
        return 0.0, best_errors
    if best_at == n - 1:
        return ordered[-1][0], best_errors
    return (ordered[best_at][0] + ordered[best_at + 1][0]) / 2, best_errors


def _by_think(pairs: Sequence[tuple[float, bool]]) -> list[dict[str, Any]]:
    bins: dict[int, list[bool]] = {}
    for g, ok in pairs:
        bins.setdefault(_age_bin(g), []).append(ok)
    return [
        {
            "think_lo_s": _edge(i),
            "think_hi_s": _edge(i + 1),
            "turns": len(v),
            "survived_share": sum(v) / len(v),
        }
        for i, v in sorted(bins.items())
    ]


_STEPS = (1.0, 2.0, 5.0)


def _edge(i: int) -> float:
    """Bin edges 0, 1, 2, 5, 10, 20, 50, ... seconds: edge ``i`` is the lower edge of bin ``i``."""
    if i == 0:
        return 0.0
    q, r = divmod(i - 1, 3)
    return _STEPS[r] * 10.0**q


#: The bin edges up to 10^15 s (far beyond any run); a longer age falls in the last bin.
_EDGES: tuple[float, ...] = tuple(_edge(i) for i in range(47))


def _age_bin(seconds: float) -> int:
    """The bin of ``seconds``: the last edge at or below it (negative ages in bin 0)."""
    return max(0, bisect_right(_EDGES, seconds) - 1)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------- rendering


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _sec(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def to_markdown(runs: Mapping[str, Mapping[str, Any] | None]) -> str:
    """The session tables of named runs' ``summary["sessions"]``, side by side."""
    names = [n for n, s in runs.items() if s]
    if not names:
        return ""
    lines = ["## Sessions: by turn", ""]
    lines.append(
        "| turn | "
        + " | ".join(f"{n} hit | {n} TTFT mean s | {n} history share" for n in names)
        + " |"
    )
    lines.append("|---|" + "---|---|---|" * len(names))
    turns = sorted({row["turn"] for n in names for row in runs[n]["by_turn"]})  # type: ignore[index]
    for t in turns:
        cells = []
        for n in names:
            row = _row(runs[n]["by_turn"], "turn", t)  # type: ignore[index]
            cells += [
                _pct(row.get("prefix_cache_hit_rate")),
                _sec(row.get("ttft_mean_s")),
                _pct(row.get("history_share_mean")),
            ]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "## Sessions: by age", ""]
    lines.append("| age s | " + " | ".join(f"{n} hit | {n} TTFT mean s" for n in names) + " |")
    lines.append("|---|" + "---|---|" * len(names))
    ages = sorted({row["age_lo_s"] for n in names for row in runs[n]["by_age"]})  # type: ignore[index]
    for a in ages:
        cells = []
        for n in names:
            row = _row(runs[n]["by_age"], "age_lo_s", a)  # type: ignore[index]
            cells += [_pct(row.get("prefix_cache_hit_rate")), _sec(row.get("ttft_mean_s"))]
        lines.append(f"| {a:g}+ | " + " | ".join(cells) + " |")
    lines += ["", "## Sessions: prefix survival over the think time (from the next turn's hit)", ""]
    lines.append("| figure | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for key, label, f in (
        ("num_turns", "follow-up turns judged", str),
        ("num_survived", "prefix survived", str),
        ("num_lost", "prefix lost", str),
        ("longest_survived_think_s", "longest think time survived (s)", _sec),
        ("shortest_lost_think_s", "shortest think time lost (s)", _sec),
        ("miss_threshold_s", "miss threshold (s)", _sec),
        ("miss_threshold_errors", "turns the threshold gets wrong", str),
    ):
        vals = [runs[n]["survival"].get(key) for n in names]  # type: ignore[index]
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f(v) for v in vals) + " |")
    return "\n".join(lines) + "\n"


def _row(rows: Sequence[Mapping[str, Any]], key: str, value: Any) -> Mapping[str, Any]:
    for row in rows:
        if row[key] == value:
            return row
    return {}


def sessions_figure(
    runs: Mapping[str, Mapping[str, Any] | None], title: str, base: Path, *, dpi: int = 120
) -> list[Path]:
    """Four panels per named run's ``summary["sessions"]``: hit rate and TTFT by
    turn, hit rate by session age, and the share of prefixes that survived by
    think time. Writes ``base.png`` and ``base.svg``."""
    from kvlab.report.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for name, s in runs.items():
        if not s:
            continue
        turns = [r["turn"] for r in s["by_turn"]]
        axes[0][0].plot(
            turns, _nan([r["prefix_cache_hit_rate"] for r in s["by_turn"]]), marker="o", label=name
        )
        axes[0][1].plot(
            turns, _nan([r["ttft_mean_s"] for r in s["by_turn"]]), marker="o", label=name
        )
        ages = [max(r["age_lo_s"], 0.1) for r in s["by_age"]]
        axes[1][0].plot(
            ages, _nan([r["prefix_cache_hit_rate"] for r in s["by_age"]]), marker="o", label=name
        )
        rows = s["survival"]["by_think_time"]
        axes[1][1].plot(
            [max(r["think_lo_s"], 0.1) for r in rows],
            [r["survived_share"] for r in rows],
            marker="o",
            label=name,
        )
        thr = s["survival"].get("miss_threshold_s")
        if thr:
            axes[1][1].axvline(thr, linestyle="--", linewidth=1)
    axes[0][0].set(xlabel="turn", ylabel="prefix-cache hit rate", title="hit rate by turn")
    axes[0][1].set(xlabel="turn", ylabel="TTFT mean (s)", title="TTFT by turn")
    axes[1][0].set(
        xlabel="session age (s, bin start)",
        ylabel="prefix-cache hit rate",
        title="hit rate by session age",
        xscale="log",
    )
    axes[1][1].set(
        xlabel="think time (s, bin start)",
        ylabel="prefix survived (share)",
        title="prefix survival by think time (dashed: miss threshold)",
        xscale="log",
    )
    for ax in (a for row in axes for a in row):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Session continuity - {title}")
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=png_dpi(dpi))
    plt.close(fig)
    return paths


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]
