"""Side-by-side comparison of runs (RunResult directories).

:func:`compare` takes named :class:`~kvlab.results.RunResult` objects, the
first being the baseline, and returns a plain dict (JSON-ready) with, for
every metric, each run's value, its delta and relative delta against the
baseline, and which run is best (each metric knows whether lower or higher is
better). The same is done per group (request class by default, or session),
and prompt hit tokens are broken down by segment retention class from the
records (``RequestRecord.hit_tokens_by_retention``).

A value a run does not know (None: a live server that reported no cached
tokens, a simulator figure a server has no counter for) stays None: it is
shown as "-", has no delta and is never taken for 0.

Metric names are dotted paths into a run's summary (``ttft_s.p99``,
``prefix_cache_hit_rate``); see :data:`DEFAULT_METRICS`. A simulation compared with a
measured run (a live or in-process backend) is not ranked: ``ranked`` is False, every
``best`` is empty and the tables show "-" in the best column. Group summaries come
from the run's ``summary["by_class"]`` when present, else are recomputed from
its records with :func:`kvlab.results.group_summaries`.
:func:`parse_condition` and :func:`check_conditions` implement
``--fail-if METRIC>X`` for CI.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvlab.errors import ConfigError
from kvlab.results import RunResult, group_summaries, prefix_queried
from kvlab.workload.records import RETENTION_CLASSES


@dataclass(frozen=True)
class Metric:
    """A summary metric: dotted ``key`` into the summary, and which direction is better."""

    key: str
    higher_is_better: bool = False

    def value(self, summary: Mapping[str, Any]) -> float | None:
        return metric_value(summary, self.key)


#: The metrics compared by default, in table order.
DEFAULT_METRICS: tuple[Metric, ...] = (
    Metric("num_completed", True),
    Metric("prefix_cache_hit_rate", True),
    Metric("prefix_cache_hits", True),
    Metric("ttft_s.mean"),
    Metric("ttft_s.p50"),
    Metric("ttft_s.p99"),
    Metric("tpot_s.mean"),
    Metric("tpot_s.p99"),
    Metric("e2e_s.mean"),
    Metric("e2e_s.p99"),
    Metric("request_throughput_per_s", True),
    Metric("output_throughput_tok_per_s", True),
    Metric("num_preemptions"),
    Metric("num_evicted_blocks"),
    Metric("external_prefix_cache_hits", True),
    Metric("num_rejected"),
    Metric("simulated_duration_s"),
    Metric("itl_s.mean"),
    Metric("itl_s.p99"),
    Metric("goodput.good_requests", True),
    Metric("goodput.request_goodput_per_s", True),
    *(Metric(f"miss_causes.{c}") for c in ("cold", "evicted", "below_block", "last_token")),
)

#: Metrics where higher is better, for names not in DEFAULT_METRICS.
_HIGHER = re.compile(r"(hit|throughput|completed|usage)", re.IGNORECASE)


def metric(key: str) -> Metric:
    """The Metric for ``key`` (a default one, or inferred direction from its name)."""
    for m in DEFAULT_METRICS:
        if m.key == key:
            return m
    return Metric(key, bool(_HIGHER.search(key)))


def metric_value(summary: Mapping[str, Any], key: str) -> float | None:
    """The number at dotted path ``key`` in ``summary`` (None when absent or not a number)."""
    cur: Any = summary
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    if isinstance(cur, bool) or not isinstance(cur, int | float):
        return None
    x = float(cur)
    return x if math.isfinite(x) else None


def compare_values(m: Metric, values: Sequence[float | None]) -> dict[str, Any]:
    """Values, deltas vs the first, relative deltas, and the indices of the best runs.

    ``best`` lists every run with the best value; it is empty when fewer than two
    runs have a value or all values are equal (a tie).
    """
    base = values[0] if values else None
    deltas: list[float | None] = []
    rel: list[float | None] = []
    for v in values:
        if v is None or base is None:
            deltas.append(None)
            rel.append(None)
        else:
            deltas.append(v - base)
            rel.append((v - base) / abs(base) if base != 0 else None)
    present = [v for v in values if v is not None]
    best: list[int] = []
    if len(present) >= 2 and len(set(present)) > 1:
        top = max(present) if m.higher_is_better else min(present)
        best = [i for i, v in enumerate(values) if v == top]
    return {
        "values": list(values),
        "deltas": deltas,
        "rel_deltas": rel,
        "best": best,
        "higher_is_better": m.higher_is_better,
    }


def group_table(run: RunResult, by: str) -> dict[str, dict[str, Any]]:
    """Per-group summaries of a run: ``by`` is ``cls`` (request class) or ``session_id``."""
    if by == "cls" and isinstance(run.summary.get("by_class"), Mapping):
        return {str(k): v for k, v in run.summary["by_class"].items()}
    return group_summaries(run.records, by)


def hits_by_retention(run: RunResult) -> dict[str, int] | None:
    """Prompt hit tokens per segment retention class, summed over the records that
    queried the prefix cache; None when one of them hit without saying which
    classes it hit (live servers: usage has no breakdown)."""
    out: dict[str, int] = {}
    for r in prefix_queried(run.records):
        if r.hit_tokens_by_retention is None:
            if r.cached_tokens == 0:
                continue  # no hit, nothing to break down
            return None
        for k, v in r.hit_tokens_by_retention.items():
            out[k] = out.get(k, 0) + int(v)
    order = {k: i for i, k in enumerate(RETENTION_CLASSES)}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def compare(
    runs: Sequence[tuple[str, RunResult]],
    metrics: Sequence[Metric] = DEFAULT_METRICS,
    *,
    by: str | None = "cls",
) -> dict[str, Any]:
    """Compare named runs; the first is the baseline. Returns a JSON-ready dict."""
    if len(runs) < 1:
        raise ConfigError("compare needs at least one run")
    names = [n for n, _ in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names must be distinct, got {names}")
    overall = {m.key: compare_values(m, [m.value(r.summary) for _, r in runs]) for m in metrics}
    out: dict[str, Any] = {"runs": names, "baseline": names[0], "overall": overall}
    kinds = {None if r.backend is None else r.backend == "sim" for _, r in runs}
    out["ranked"] = not {True, False} <= kinds  # True: simulated, False: measured
    if by is not None:
        tables = [group_table(r, by) for _, r in runs]
        groups = sorted({g for t in tables for g in t})
        out["by"] = by
        out["groups"] = {
            g: {
                m.key: compare_values(m, [m.value(t[g]) if g in t else None for t in tables])
                for m in metrics
            }
            for g in groups
        }
    ret = [hits_by_retention(r) for _, r in runs]
    classes = list(dict.fromkeys(k for d in ret if d is not None for k in d))
    out["hit_tokens_by_retention"] = {
        k: compare_values(Metric(k, True), [None if d is None else float(d.get(k, 0)) for d in ret])
        for k in classes
    }
    if not out["ranked"]:  # a simulation is not a contender against a measured run
        tables = [out["overall"], *out.get("groups", {}).values(), out["hit_tokens_by_retention"]]
        for table in tables:
            for c in table.values():
                c["best"] = []
    sessions = {n: r.summary.get("sessions") for n, r in runs}
    if any(sessions.values()):  # multi-turn runs: kvlab.report.sessions, run by run
        out["sessions"] = sessions
    return out


# ----------------------------------------------------------------------------- rendering


def fmt(v: float | None, key: str = "") -> str:
    """A compact number: rates as percent, seconds with 3-4 significant digits."""
    if v is None:
        return "-"
    if key.endswith("hit_rate") or key.endswith("_perc"):
        return f"{v:.1%}"
    if float(v).is_integer() and abs(v) < 1e12:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    return f"{v:.4g}"


def _fmt_delta(d: float | None, rel: float | None, key: str) -> str:
    if d is None:
        return "-"
    sign = "+" if d > 0 else ""
    if key.endswith("hit_rate") or key.endswith("_perc"):
        return f"{sign}{d * 100:.1f} pt"
    s = sign + fmt(d, key)
    if rel is None:
        return s
    return s + (f" ({rel:+.0%})" if abs(rel) >= 0.1 else f" ({rel:+.1%})")


def _table(
    names: Sequence[str], rows: Mapping[str, Mapping[str, Any]], label: str, ranked: bool = True
) -> list[str]:
    head = [label, *names, *(f"Δ {n}" for n in names[1:]), "best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, c in rows.items():
        if all(v is None for v in c["values"]):
            continue
        cells = [key, *(fmt(v, key) for v in c["values"])]
        cells += [
            _fmt_delta(d, r, key) for d, r in zip(c["deltas"][1:], c["rel_deltas"][1:], strict=True)
        ]
        cells.append((" = ".join(names[i] for i in c["best"]) or "tie") if ranked else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(cmp: Mapping[str, Any]) -> str:
    """The comparison as Markdown tables: overall, per group, hits by retention class."""
    names = cmp["runs"]
    ranked = cmp.get("ranked", True)
    lines = [f"## Overall (baseline: {cmp['baseline']})", ""]
    if not ranked:
        lines += ["Simulated and measured runs side by side: not ranked (best: -).", ""]
    lines += _table(names, cmp["overall"], "metric", ranked)
    groups = cmp.get("groups", {})
    for g, rows in groups.items() if len(groups) > 1 else ():
        label = "class" if cmp.get("by") == "cls" else cmp.get("by", "group")
        lines += ["", f"## {label} {g}", ""]
        lines += _table(names, rows, "metric", ranked)
    if cmp.get("hit_tokens_by_retention"):
        lines += ["", "## Prompt hit tokens by retention class", ""]
        lines += _table(names, cmp["hit_tokens_by_retention"], "retention", ranked)
    if cmp.get("sessions"):
        from kvlab.report.sessions import to_markdown as sessions_markdown

        lines += ["", sessions_markdown(cmp["sessions"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- --fail-if

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_COND = re.compile(r"^\s*(?:(delta|rel):)?([A-Za-z0-9_.]+)\s*(>=|<=|>|<)\s*(-?[0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class Condition:
    """``[delta:|rel:]METRIC OP THRESHOLD``.

    A plain condition fails when it holds for any run; ``delta:`` and ``rel:``
    conditions compare each non-baseline run with the baseline (first run).
    """

    kind: str  # "value", "delta" or "rel"
    key: str
    op: str
    threshold: float

    def __str__(self) -> str:
        pre = "" if self.kind == "value" else self.kind + ":"
        return f"{pre}{self.key}{self.op}{self.threshold:g}"


def parse_condition(text: str) -> Condition:
    m = _COND.match(text)
    if not m:
        raise ConfigError(
            f"bad --fail-if {text!r}; write METRIC>X, METRIC<=X, delta:METRIC>X or rel:METRIC>X "
            "(e.g. ttft_s.p99>2.0)"
        )
    kind, key, op, thr = m.groups()
    try:
        value = float(thr)
    except ValueError:
        raise ConfigError(f"bad threshold in --fail-if {text!r}") from None
    return Condition(kind or "value", key, op, value)


def check_conditions(
    runs: Sequence[tuple[str, RunResult]], conditions: Sequence[Condition]
) -> list[str]:
    """Messages for every condition that holds (empty list: all passed)."""
    failures: list[str] = []
    if not runs:
        return failures
    for c in conditions:
        vals = [metric_value(r.summary, c.key) for _, r in runs]
        if all(v is None for v in vals):
            raise ConfigError(f"--fail-if metric {c.key!r} is in no run's summary")
        base = vals[0]
        for i, ((name, _), v) in enumerate(zip(runs, vals, strict=True)):
            if v is None:
                continue
            if c.kind == "value":
                x: float | None = v
            elif i == 0 or base is None:
                continue
            elif c.kind == "delta":
                x = v - base
            else:
                x = (v - base) / abs(base) if base else None
            if x is not None and _OPS[c.op](x, c.threshold):
                failures.append(f"{name}: {c} ({c.kind} {x:.6g})")
    return failures


__all__ = [
    "DEFAULT_METRICS",
    "Condition",
    "Metric",
    "check_conditions",
    "compare",
    "compare_values",
    "fmt",
    "group_table",
    "hits_by_retention",
    "metric",
    "metric_value",
    "parse_condition",
    "to_markdown",
]
