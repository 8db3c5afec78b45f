"""Sweeps: run one workload over a grid of simulator settings, then tabulate and plot.

An axis is a ``kvlab simulate`` option and its values (``mode`` ->
``baseline, prefix, offload``; ``num_blocks`` -> ``512, 1024``), or an engine
setting ``set.KEY`` passed as ``--set KEY=VALUE`` (``set.max_num_seqs``). The grid
is the cartesian product of the axes, in the order given; each point runs as
its own local process (``python -m kvlab simulate WORKLOAD --OPTION VALUE ...
-o DIR``), several at a time through :mod:`concurrent.futures`, and writes a
RunResult directory under ``runs/``. The sweep directory then holds
``sweep.csv``, ``sweep.md`` and ``sweep.json`` (one row per point) and
``plots/<metric>.png`` / ``.svg`` (one plot per metric: x is the first axis,
one line per combination of the other axes).

The point runner is a parameter (:data:`PointRunner`), so a sweep can run
in-process functions as well; tests use one that writes synthetic results.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError, DependencyMissing
from kvlab.report.compare import DEFAULT_METRICS, Metric, fmt
from kvlab.results import RunResult, atomic_write_text


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: axis name -> value, in axis order."""

    settings: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        """A directory-safe name such as ``mode=prefix,num_gpu_blocks=512``."""
        raw = ",".join(f"{k}={v}" for k, v in self.settings)
        return re.sub(r"[^A-Za-z0-9=,._-]", "_", raw)

    def option_args(self) -> list[str]:
        """The settings as ``kvlab simulate`` options."""
        out: list[str] = []
        for k, v in self.settings:
            if k.startswith("set."):
                out += ["--set", f"{k[4:]}={v}"]
            else:
                out += [f"--{k.replace('_', '-')}", v]
        return out


@dataclass
class PointOutcome:
    point: SweepPoint
    run_dir: Path
    result: RunResult | None = None
    error: str | None = None


@dataclass
class SweepResult:
    axes: dict[str, list[str]]
    outcomes: list[PointOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[PointOutcome]:
        return [o for o in self.outcomes if o.result is None]


#: Runs one point: (workload path, point, run directory) -> None; raises on failure.
PointRunner = Callable[[Path, SweepPoint, Path], None]


class PointFailed(RuntimeError):
    """A point's run failed; the message is the run's own last error line."""


def parse_axis(text: str) -> tuple[str, list[str]]:
    """``"mode=baseline,prefix"`` -> ("mode", ["baseline", "prefix"]).

    ``set.KEY=V1,V2`` is an engine setting passed as ``--set KEY=V``.
    """
    name, sep, values = text.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    vals = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not re.fullmatch(r"(set\.)?[A-Za-z][A-Za-z0-9_]*", name) or not vals:
        raise ConfigError(f"bad axis {text!r}; write NAME=V1,V2 (e.g. mode=baseline,prefix)")
    return name, vals


def grid(axes: Mapping[str, Sequence[str]]) -> list[SweepPoint]:
    """The cartesian product of the axes, first axis slowest."""
    if not axes:
        raise ConfigError("a sweep needs at least one axis, e.g. --axis mode=baseline,prefix")
    names = list(axes)
    return [
        SweepPoint(tuple(zip(names, combo, strict=True)))
        for combo in itertools.product(*(axes[n] for n in names))
    ]


def subprocess_runner(extra_args: Sequence[str] = ()) -> PointRunner:
    """A runner that calls ``python -m kvlab simulate`` in a new process per point."""

    def run(workload: Path, point: SweepPoint, run_dir: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "kvlab",
            "simulate",
            str(workload),
            *point.option_args(),
            *extra_args,
            "-o",
            str(run_dir),
        ]
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()
            last = tail[-1] if tail else f"exit code {res.returncode}"
            raise PointFailed(last.removeprefix("error: "))

    return run


def run_sweep(
    workload: Path,
    axes: Mapping[str, Sequence[str]],
    out_dir: Path,
    *,
    runner: PointRunner | None = None,
    jobs: int | None = None,
    on_done: Callable[[PointOutcome], None] | None = None,
) -> SweepResult:
    """Run every grid point (``jobs`` at a time) and load each RunResult."""
    points = grid(axes)
    runner = runner or subprocess_runner()
    jobs = max(1, min(len(points), jobs or os.cpu_count() or 1))
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    result = SweepResult(axes={k: list(v) for k, v in axes.items()})
    outcomes = {p: PointOutcome(p, out_dir / "runs" / p.name) for p in points}

    def one(p: SweepPoint) -> PointOutcome:
        o = outcomes[p]
        try:
            runner(workload, p, o.run_dir)
            o.result = RunResult.load(o.run_dir)
        except Exception as e:  # a failed point is reported in the table, the sweep goes on
            o.error = str(e) if isinstance(e, PointFailed) else f"{type(e).__name__}: {e}"
        return o

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, p) for p in points]
        for fut in as_completed(futures):
            if on_done is not None:
                on_done(fut.result())
    result.outcomes = [outcomes[p] for p in points]
    return result


def rows(result: SweepResult, metrics: Sequence[Metric]) -> list[dict[str, Any]]:
    """One row per point: the axis values, then each metric (None when missing or failed)."""
    out = []
    for o in result.outcomes:
        row: dict[str, Any] = dict(o.point.settings)
        for m in metrics:
            row[m.key] = None if o.result is None else m.value(o.result.summary)
        row["error"] = o.error
        out.append(row)
    return out


def write_tables(result: SweepResult, out_dir: Path, metrics: Sequence[Metric]) -> list[Path]:
    """Write sweep.csv, sweep.md and sweep.json; returns their paths."""
    table = rows(result, metrics)
    cols = [*result.axes, *(m.key for m in metrics), "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in table:
        w.writerow(["" if r[c] is None else r[c] for c in cols])
    md = ["| " + " | ".join(cols[:-1]) + " |", "|" + "---|" * (len(cols) - 1)]
    for r in table:
        cells = [str(r[a]) for a in result.axes]
        cells += [fmt(r[m.key], m.key) for m in metrics]
        if r["error"]:
            cells[-1] += f" (failed: {r['error']})"
        md.append("| " + " | ".join(cells) + " |")
    paths = [out_dir / "sweep.csv", out_dir / "sweep.md", out_dir / "sweep.json"]
    atomic_write_text(paths[0], buf.getvalue())
    atomic_write_text(paths[1], "\n".join(md) + "\n")
    atomic_write_text(
        paths[2], json.dumps({"axes": result.axes, "rows": table}, indent=2, allow_nan=False) + "\n"
    )
    return paths


def write_plots(result: SweepResult, out_dir: Path, metrics: Sequence[Metric]) -> list[Path]:
    """One PNG and one SVG per metric under ``plots/``; returns the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise DependencyMissing("matplotlib", "plot") from e
    axes = list(result.axes)
    x_axis, others = axes[0], axes[1:]
    xs = result.axes[x_axis]
    numeric = all(_is_number(v) for v in xs)
    table = rows(result, metrics)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for m in metrics:
        if all(r[m.key] is None for r in table):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        combos = list(itertools.product(*(result.axes[o] for o in others))) or [()]
        for combo in combos:
            sel = [r for r in table if all(r[o] == v for o, v in zip(others, combo, strict=True))]
            ys = [next((r[m.key] for r in sel if r[x_axis] == x), None) for x in xs]
            pos = [float(x) for x in xs] if numeric else list(range(len(xs)))
            pts = [(p, y) for p, y in zip(pos, ys, strict=True) if y is not None]
            if not pts:
                continue
            label = ", ".join(f"{o}={v}" for o, v in zip(others, combo, strict=True)) or None
            ax.plot([p for p, _ in pts], [y for _, y in pts], marker="o", label=label)
        if not numeric:
            ax.set_xticks(range(len(xs)), xs)
        ax.set_xlabel(x_axis)
        better = "higher" if m.higher_is_better else "lower"
        ax.set_ylabel(m.key)
        ax.set_title(f"{m.key} ({better} is better)")
        ax.grid(True, alpha=0.3)
        if others:
            ax.legend(fontsize="small")
        fig.tight_layout()
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", m.key)
        for ext in ("png", "svg"):
            path = plot_dir / f"{stem}.{ext}"
            fig.savefig(path, dpi=120)
            written.append(path)
        plt.close(fig)
    return written


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


__all__ = [
    "DEFAULT_METRICS",
    "PointFailed",
    "PointOutcome",
    "PointRunner",
    "SweepPoint",
    "SweepResult",
    "grid",
    "parse_axis",
    "rows",
    "run_sweep",
    "subprocess_runner",
    "write_plots",
    "write_tables",
]
