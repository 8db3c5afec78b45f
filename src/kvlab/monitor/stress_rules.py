"""Alert rules derived from a finished ``kvlab stress`` run (``stress.json`` and its
``scenarios/*`` run directories): ``kvlab monitor --rules-from-stress DIR``.

Each threshold comes from a figure the stress run computed, and says which
(:attr:`DerivedRule.source`, written as a comment above the rule):

* ``KvCacheHigh`` (warning): mean KV usage at the start of the degradation curve's
  *warning* band (the last rate before the TTFT knee); without a curve that bends,
  the stress verdict's warning edge, ``warn_fraction x max_kv_usage`` of the run's SLO;
* ``KvCacheNearlyFull`` (critical): mean KV usage at the start of the *danger* band
  (the first rate that preempted or saturated), capped at the SLO's ``max_kv_usage``
  (above it a stress scenario fails); without one, that ceiling;
* ``Preempting``: the highest preemption rate (preemptions / simulated seconds) of a
  scenario that met every SLO (verdict pass or warn); 0 (any preemption) when none
  preempted;
* ``RequestsQueued``: the peak of waiting requests in a scenario that met every SLO
  (its run directory's time series); 0 when none queued or none was saved;
* ``TtftP99AboveSlo``: the run's TTFT p99 limit;
* ``LoadAboveKnee``: output tokens per second at the last rate before the TTFT knee;
  only when a curve has a knee;
* ``PrefixHitRateDrop``: not a stress figure (the stress workloads share prefixes by
  construction); the monitor's default.

A run with several curves (models or GPUs) gives the most conservative value (the
lowest usage, rate or level), and the comment names the curve. A directory that is
not a stress run, or a ``stress.json`` that does not read, is one
:class:`~kvlab.errors.RunDirError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvlab.errors import RunDirError
from kvlab.monitor.alerts import DEFAULT_RULES, Rule


@dataclass(frozen=True)
class DerivedRule:
    """A rule and the stress figure its threshold came from (one sentence)."""

    rule: Rule
    source: str


def _load(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise RunDirError("not a directory (give a kvlab stress --out directory)", path=run_dir)
    p = run_dir / "stress.json"
    if not p.is_file():
        raise RunDirError("not a kvlab stress run (no stress.json)", path=run_dir)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunDirError(f"not JSON: {e.msg}", path=p, line=e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"cannot read: {e}", path=p) from None
    if not isinstance(d, dict) or d.get("kind") != "stress":
        raise RunDirError("not a kvlab stress result (kind is not 'stress')", path=p)
    for key, kind in (("slo", dict), ("scenarios", list), ("curves", list)):
        if not isinstance(d.get(key, [] if kind is list else None), kind):
            raise RunDirError(f"must be a {kind.__name__}", path=p, field=key)
    return d


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _slo(d: dict[str, Any], p: Path) -> Any:
    from kvlab.errors import ConfigError
    from kvlab.stress.slo import Slo

    try:
        return Slo.from_dict(d["slo"])
    except (ConfigError, TypeError) as e:
        raise RunDirError(str(e), path=p, field="slo") from None


def _curve_name(c: dict[str, Any]) -> str:
    return f"{c.get('model')} on {c.get('gpu')}, {c.get('seq_len')}+{c.get('gen_len')} tokens"


def _before_knee(c: dict[str, Any]) -> dict[str, Any] | None:
    """The last point of curve ``c`` below its knee rate (None: no knee, or at the first)."""
    knee = _num(c.get("knee_rate_per_s"))
    pts = [p for p in c.get("points") or [] if isinstance(p, dict)]
    if knee is None:
        return None
    below = [p for p in pts if (_num(p.get("rate_per_s")) or 0.0) < knee]
    return below[-1] if below else None


def _passing(d: dict[str, Any], run_dir: Path) -> list[tuple[str, dict[str, Any], Path]]:
    from kvlab.stress.run import slug

    out = []
    for i, s in enumerate(d.get("scenarios") or []):
        if isinstance(s, dict) and s.get("verdict") in ("pass", "warn"):  # met every SLO
            name = str((s.get("scenario") or {}).get("name", "scenario"))
            out.append((name, s.get("metrics") or {}, run_dir / "scenarios" / slug(i, name)))
    return out


def _peak_waiting(run: Path) -> float | None:
    from kvlab.results import RunResult

    if not (run / "summary.json").is_file():
        return None
    ts = RunResult.load(run).timeseries
    w = [float(x) for x in ts.get("num_requests_waiting") or [] if x is not None]
    return max(w) if w else None


def rules_from_stress(run_dir: str | Path) -> tuple[DerivedRule, ...]:
    """The alert rules derived from stress run ``run_dir`` (see the module)."""
    rd = Path(run_dir)
    d = _load(rd)
    slo = _slo(d, rd / "stress.json")
    curves = [c for c in d.get("curves") or [] if isinstance(c, dict)]
    out: list[DerivedRule] = []

    # KV usage: the bands of the rate sweeps, else the SLO's verdict edges
    warn = [
        (u, c)
        for c in curves
        if (u := _num((c.get("bands") or {}).get("warning_from_kv_usage"))) is not None
    ]
    if warn:
        u, c = min(warn, key=lambda x: x[0])
        out.append(
            DerivedRule(
                Rule("KvCacheHigh", "kv_cache_usage_perc", ">", round(u, 4), for_s=60),
                f"warning band of the rate sweep {_curve_name(c)}: mean KV usage {u:.4f} at "
                f"the last rate before the TTFT knee ({_num(c.get('knee_rate_per_s')):.4g} req/s)",
            )
        )
    else:
        edge = slo.warn_fraction * slo.max_kv_usage
        out.append(
            DerivedRule(
                Rule("KvCacheHigh", "kv_cache_usage_perc", ">", round(edge, 4), for_s=60),
                f"no rate sweep bent: the stress verdict's warning edge, warn_fraction "
                f"{slo.warn_fraction:g} x max_kv_usage {slo.max_kv_usage:g}",
            )
        )
    danger = [
        (u, c)
        for c in curves
        if (u := _num((c.get("bands") or {}).get("danger_from_kv_usage"))) is not None
    ]
    if danger and min(x[0] for x in danger) < slo.max_kv_usage:
        u, c = min(danger, key=lambda x: x[0])
        src = (
            f"danger band of the rate sweep {_curve_name(c)}: mean KV usage {u:.4f} at the "
            "first rate that preempted or saturated"
        )
    else:
        u = slo.max_kv_usage
        src = f"the stress SLO's KV usage ceiling max_kv_usage {u:g} (a scenario above it fails)"
    crit = round(u, 4)
    w = out[0]
    if w.rule.threshold > crit:  # the warning never above the critical threshold
        out[0] = DerivedRule(
            Rule("KvCacheHigh", "kv_cache_usage_perc", ">", crit, for_s=60),
            w.source + f", capped at the critical threshold {crit:g}",
        )
    out.append(
        DerivedRule(
            Rule(
                "KvCacheNearlyFull",
                "kv_cache_usage_perc",
                ">",
                crit,
                for_s=60,
                severity="critical",
            ),
            src,
        )
    )

    passing = _passing(d, rd)
    rates = []
    for name, m, _ in passing:
        n, dur = _num(m.get("num_preemptions")), _num(m.get("simulated_duration_s"))
        if n is not None and dur:
            rates.append((n / dur, name))
    top = max(rates, default=(0.0, None))
    out.append(
        DerivedRule(
            Rule("Preempting", "preemptions_per_s", ">", round(top[0], 4), severity="critical"),
            f"highest preemption rate of a scenario that met every SLO: {top[1]} {top[0]:.4g}/s"
            if top[0] > 0
            else f"no scenario that met every SLO preempted ({len(passing)} met it; the SLO "
            f"allows {slo.max_preemptions} per run): any preemption",
        )
    )
    waits = [(q, name) for name, _, run in passing if (q := _peak_waiting(run)) is not None]
    wtop = max(waits, default=(0.0, None))
    out.append(
        DerivedRule(
            Rule("RequestsQueued", "num_requests_waiting", ">", wtop[0], for_s=120),
            f"peak waiting requests of a scenario that met every SLO: {wtop[0]:g} in "
            f"scenario {wtop[1]!r} (the highest of {len(waits)})"
            if waits
            else "no saved run directory of a scenario that met every SLO: any waiting request",
        )
    )
    out.append(
        DerivedRule(
            Rule("TtftP99AboveSlo", "ttft_p99_s", ">", slo.ttft_p99_s, for_s=60),
            f"the stress run's SLO: TTFT p99 <= {slo.ttft_p99_s:g} s",
        )
    )
    knees = [
        (tok, c)
        for c in curves
        if (p := _before_knee(c)) is not None
        and (tok := _num(p.get("output_throughput_tok_per_s"))) is not None
    ]
    if knees:
        tok, c = min(knees, key=lambda x: x[0])
        out.append(
            DerivedRule(
                Rule("LoadAboveKnee", "generation_tokens_per_s", ">", round(tok, 1), for_s=60),
                f"output tok/s of the rate sweep {_curve_name(c)} at the last rate before the "
                f"TTFT knee ({_num(c.get('knee_rate_per_s')):.4g} req/s)",
            )
        )
    drop = next(r for r in DEFAULT_RULES if r.metric == "prefix_hit_rate_drop")
    out.append(DerivedRule(drop, "not a stress figure: the monitor's default"))
    return tuple(out)


__all__ = ["DerivedRule", "rules_from_stress"]
