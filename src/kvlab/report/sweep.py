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

Ctrl-C (SIGINT to the sweep alone, or to its whole process group as a terminal
sends it) stops the sweep: no further point starts, the points running are
interrupted (the subprocess runner starts each point in its own session and
passes SIGINT on to it once, so both ways end alike), every point that finished
is kept, and :func:`run_sweep` returns with ``interrupted`` set and the other
points marked ``interrupted`` (cut short) or ``not run``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError, DependencyMissing
from kvlab.report.compare import DEFAULT_METRICS, Metric, fmt
from kvlab.report.figure_dpi import png_dpi
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


#: The error of a point Ctrl-C cut short, and of one it kept from starting.
INTERRUPTED = "interrupted"
NOT_RUN = "not run (sweep interrupted)"


@dataclass
class SweepResult:
    axes: dict[str, list[str]]
    outcomes: list[PointOutcome] = field(default_factory=list)
    #: Ctrl-C stopped the sweep (see the module docstring).
    interrupted: bool = False

    @property
    def failed(self) -> list[PointOutcome]:
        """Points without a result: failed, interrupted or not run."""
        return [o for o in self.outcomes if o.result is None]

    @property
    def finished(self) -> list[PointOutcome]:
        return [o for o in self.outcomes if o.result is not None]


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


class SubprocessRunner:
    """Runs each point as ``python -m kvlab simulate`` in a new process (and a new
    session, so that a terminal's Ctrl-C reaches the sweep alone and
    :meth:`interrupt` passes it on exactly once)."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        self.extra_args = list(extra_args)
        self._procs: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def __getstate__(self) -> dict[str, Any]:
        """Only the arguments travel (to a cluster's worker): a copy starts with no
        processes of its own and is not stopped."""
        return {"extra_args": self.extra_args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["extra_args"])  # type: ignore[misc]

    def __call__(self, workload: Path, point: SweepPoint, run_dir: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "kvlab",
            "simulate",
            str(workload),
            *point.option_args(),
            *self.extra_args,
            "-o",
            str(run_dir),
        ]
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with self._lock:
            if self._stopped:
                raise PointFailed(NOT_RUN)
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,
            )
            self._procs.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            with self._lock:
                self._procs.discard(proc)
        if proc.returncode != 0:
            tail = (err or out).strip().splitlines()
            last = tail[-1] if tail else f"exit code {proc.returncode}"
            raise PointFailed(last.removeprefix("error: "))

    def interrupt(self) -> None:
        """Start no further point and pass SIGINT to every point running."""
        with self._lock:
            self._stopped = True
            procs = list(self._procs)
        for p in procs:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """Kill every point still running (one that ignored the interrupt too long)."""
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            with contextlib.suppress(OSError):
                p.kill()


def subprocess_runner(extra_args: Sequence[str] = ()) -> SubprocessRunner:
    """A runner that calls ``python -m kvlab simulate`` in a new process per point."""
    return SubprocessRunner(extra_args)


#: Seconds the points running get to stop after Ctrl-C before they are killed.
INTERRUPT_GRACE_S = 20.0


def run_sweep(
    workload: Path,
    axes: Mapping[str, Sequence[str]],
    out_dir: Path,
    *,
    runner: PointRunner | None = None,
    jobs: int | None = None,
    on_done: Callable[[PointOutcome], None] | None = None,
) -> SweepResult:
    """Run every grid point (``jobs`` at a time) and load each RunResult; Ctrl-C
    ends it early (see the module docstring)."""
    points = grid(axes)
    runner = runner or subprocess_runner()
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    jobs = max(1, min(len(points), jobs or os.cpu_count() or 1))
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    result = SweepResult(axes={k: list(v) for k, v in axes.items()})
    outcomes = {p: PointOutcome(p, out_dir / "runs" / p.name) for p in points}
    stop = threading.Event()

    def one(p: SweepPoint) -> PointOutcome:
        o = outcomes[p]
        if stop.is_set():
            o.error = NOT_RUN
            return o
        failure = None
        try:
            runner(workload, p, o.run_dir)
        except Exception as e:  # a failed point is reported in the table, the sweep goes on
            failure = str(e) if isinstance(e, PointFailed) else f"{type(e).__name__}: {e}"
        if failure is None or stop.is_set():
            # after Ctrl-C the run directory says whether the point finished first
            try:
                run = RunResult.load(o.run_dir)
            except Exception as e:
                failure = failure or f"{type(e).__name__}: {e}"
            else:
                if run.complete:
                    o.result = run
                    return o
                failure = INTERRUPTED
        o.error = INTERRUPTED if stop.is_set() and failure != NOT_RUN else failure
        return o

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures: list[Any] = []
    try:
        futures += (pool.submit(one, p) for p in points)
        for fut in as_completed(futures):
            if on_done is not None:
                on_done(fut.result())
    except KeyboardInterrupt:
        result.interrupted = True
        _stop_points(stop, runner, pool, futures)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for o in outcomes.values():
        if o.result is None and o.error is None:  # never started
            o.error = NOT_RUN
    result.outcomes = [outcomes[p] for p in points]
    return result


def _stop_points(
    stop: threading.Event, runner: PointRunner, pool: ThreadPoolExecutor, futures: list[Any]
) -> None:
    """After Ctrl-C: start nothing more, interrupt the points running, wait for them
    (killing them after :data:`INTERRUPT_GRACE_S`), ignoring further Ctrl-C meanwhile."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to ignore
        previous = None
    try:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        interrupt = getattr(runner, "interrupt", None)
        if callable(interrupt):
            interrupt()
        # a cancelled future never counts as done for wait(): only the started ones
        started = [f for f in futures if not f.cancelled()]
        _, pending = wait(started, timeout=INTERRUPT_GRACE_S)
        kill = getattr(runner, "kill", None)
        if pending and callable(kill):
            kill()
        wait(started)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def not_run(axes: Mapping[str, Sequence[str]], out_dir: Path) -> SweepResult:
    """The result of a sweep Ctrl-C stopped before any point started."""
    result = SweepResult(axes={k: list(v) for k, v in axes.items()}, interrupted=True)
    result.outcomes = [
        PointOutcome(p, out_dir / "runs" / p.name, error=NOT_RUN) for p in grid(axes)
    ]
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
    doc: dict[str, Any] = {"axes": result.axes, "rows": table}
    if result.interrupted:
        doc["status"] = "interrupted"
    atomic_write_text(paths[2], json.dumps(doc, indent=2, allow_nan=False) + "\n")
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
            fig.savefig(path, dpi=png_dpi(120))
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
    "INTERRUPTED",
    "NOT_RUN",
    "PointFailed",
    "PointOutcome",
    "PointRunner",
    "SubprocessRunner",
    "SweepPoint",
    "SweepResult",
    "grid",
    "not_run",
    "parse_axis",
    "rows",
    "run_sweep",
    "subprocess_runner",
    "write_plots",
    "write_tables",
]
