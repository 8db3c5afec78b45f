"""``kvlab compare`` (runs side by side) and ``kvlab sweep`` (a grid of simulations)."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from kvlab.cli.options import check_dpi, dpi_option, plot_dpi


def compare_cmd(
    runs: list[Path] = typer.Argument(
        ...,
        help="RunResult directories; the first is the baseline. Or kvlab monitor --record "
        "files (JSONL): their servers' figures side by side.",
    ),
    names: str | None = typer.Option(
        None, "--names", help="Comma-separated run names (default: directory names)."
    ),
    metrics: list[str] = typer.Option(
        [],
        "--metric",
        help="Metric to compare (dotted summary key, repeatable); default: a standard set.",
    ),
    by: str = typer.Option("class", "--by", help="Group breakdown: class, session or none."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Also write the Markdown here."
    ),
    fail_if: list[str] = typer.Option(
        [],
        "--fail-if",
        help="Exit 1 when a condition holds for any run: METRIC>X, METRIC<=X; delta:METRIC>X and "
        "rel:METRIC>X compare with the baseline (e.g. --fail-if rel:ttft_s.p99>0.1).",
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Also draw the runs' KV usage timelines in one figure: PLOT.png and PLOT.svg, "
        "and, for multi-turn runs, their session continuity in PLOT-sessions.png/.svg "
        "(the plot extra).",
    ),
    partial: bool = typer.Option(
        False,
        "--partial",
        help="Accept runs that Ctrl-C stopped (run.json status interrupted); they are "
        "labelled '(interrupted)'. Without it such a run is an error.",
    ),
    dpi: float | None = dpi_option(),
) -> None:
    """Compare runs side by side (overall and per class): deltas and the better run per metric.

    Exits 1 when a --fail-if condition holds, 2 on a bad option, output path or run
    directory: one that is corrupt, incomplete (no summary.json) or interrupted
    (unless --partial).

    Given `kvlab monitor --record` files instead, one table: per server of each file,
    duration, samples, KV usage max/mean, time above the usage threshold, preemptions,
    prefix hit rate over the whole recording, unreachable time, restarts, alerts
    ('-' where a recording does not know; --json, -o as for runs).
    """
    if any(p.is_file() for p in runs):
        _compare_records(runs, as_json, output, names, metrics, fail_if, plot, by)
        return
    from kvlab.errors import ConfigError, RunDirError
    from kvlab.report.compare import (
        DEFAULT_METRICS,
        check_conditions,
        compare,
        metric,
        parse_condition,
        to_markdown,
    )
    from kvlab.results import RunResult
    from kvlab.results.run_dir import REQUIRED_SUMMARY_KEYS, check_summary

    check_dpi(dpi)
    conditions = [parse_condition(c) for c in fail_if]
    group_key = {"class": "cls", "session": "session_id", "none": None}
    if by not in group_key:
        raise ConfigError(f"--by must be class, session or none, got {by!r}")
    from kvlab.cli.options import output_file

    if output is not None:
        output_file(output, "--output")
    if plot is not None:
        output_file(plot.with_name(plot.name + ".png"), "--plot", make_parent=True)
    loaded = []
    for d in runs:
        if not (d / "summary.json").is_file() and not (d / "run.json").exists():
            raise ConfigError(
                f"{d} is not a run directory (no summary.json); run kvlab simulate first"
            )
        run = RunResult.load(d)
        check_summary(run.summary, d / "summary.json", required=REQUIRED_SUMMARY_KEYS)
        if not run.complete and not partial:
            s = run.summary
            raise RunDirError(
                f"an {run.status} run ({s['num_completed']} of {s['num_requests']} requests "
                "finished); pass --partial to compare it anyway",
                path=d,
            )
        loaded.append(run)
    labels = _labels(runs, names)
    labels = [
        lab if r.complete else f"{lab} ({r.status})" for lab, r in zip(labels, loaded, strict=True)
    ]
    pairs = list(zip(labels, loaded, strict=True))
    ms = [metric(m) for m in metrics] if metrics else list(DEFAULT_METRICS)
    cmp = compare(pairs, ms, by=group_key[by])
    failures = check_conditions(pairs, conditions)
    cmp["failed_conditions"] = failures
    md = to_markdown(cmp)
    if output is not None:
        from kvlab.results import atomic_write_text

        atomic_write_text(output, md)
    if as_json:
        typer.echo(json.dumps(cmp, indent=2))
    else:
        typer.echo(md, nl=False)
        for f in failures:
            typer.echo(f"FAIL {f}", err=True)
    if plot is not None:  # after the comparison is out: a missing extra loses nothing
        from kvlab.report.plots import kv_timeline

        with plot_dpi(dpi):
            kv_timeline({k: r.timeseries for k, r in pairs}, ", ".join(labels), plot)
            if cmp.get("sessions"):
                from kvlab.report.sessions import sessions_figure

                sessions_figure(
                    cmp["sessions"], ", ".join(labels), plot.with_name(plot.name + "-sessions")
                )
    if failures:
        raise typer.Exit(1)


def _compare_records(
    files: list[Path],
    as_json: bool,
    output: Path | None,
    names: str | None,
    metrics: list[str],
    fail_if: list[str],
    plot: Path | None,
    by: str,
) -> None:
    from kvlab.cli.options import output_file
    from kvlab.errors import ConfigError
    from kvlab.monitor.record import read_record
    from kvlab.report.recordings import compare_recordings, to_markdown

    dirs = [p for p in files if not p.is_file()]
    if dirs:
        raise ConfigError(
            f"{dirs[0]} is not a monitor record file: give run directories or record "
            "files, not both"
        )
    for opt, given in (
        ("--names", names is not None),
        ("--metric", bool(metrics)),
        ("--fail-if", bool(fail_if)),
        ("--plot", plot is not None),
        ("--by", by != "class"),
    ):
        if given:
            raise ConfigError(f"{opt} is for run directories, not monitor record files")
    if output is not None:
        output_file(output, "--output")
    recs = [read_record(p) for p in files]
    cmp = compare_recordings(recs)
    md = to_markdown(cmp)
    if output is not None:
        from kvlab.results import atomic_write_text

        atomic_write_text(output, md)
    if as_json:
        typer.echo(json.dumps(cmp, indent=2))
    else:
        typer.echo(md, nl=False)
    for r in recs:
        if r.note:
            typer.echo(f"note: {r.note}", err=True)


def _labels(runs: list[Path], names: str | None) -> list[str]:
    from kvlab.errors import ConfigError

    if names is not None:
        labels = [n.strip() for n in names.split(",")]
        if len(labels) != len(runs):
            raise ConfigError(f"--names has {len(labels)} names for {len(runs)} runs")
        return labels
    labels = [d.resolve().name for d in runs]
    if len(set(labels)) != len(labels):
        labels = [str(d) for d in runs]
    return labels


def sweep_cmd(
    workload: Path = typer.Argument(
        ...,
        help="Workload file, trace file (Mooncake, Azure, Vidur) or built-in trace to simulate "
        "at every point.",
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--out",
        "--output",
        help="Sweep directory to write (default: runs/sweep-TIMESTAMP, printed).",
    ),
    axes: list[str] = typer.Option(
        [],
        "--axis",
        help="A kvlab simulate option and its values, NAME=V1,V2 (repeatable), e.g. "
        "--axis mode=baseline,prefix --axis num-blocks=2000,4000; set.KEY=... passes --set KEY=V.",
    ),
    modes: str | None = typer.Option(
        None, "--modes", help="Shortcut for --axis mode=...: e.g. baseline,prefix,offload."
    ),
    sim_args: str = typer.Option(
        "", "--sim-args", help="Extra options for every kvlab simulate run, as one string."
    ),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", help="Points run at once (default: CPUs)."
    ),
    metrics: list[str] = typer.Option(
        [], "--metric", help="Metric to tabulate and plot (repeatable); default: a standard set."
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write one plot per metric."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
    executor: str = typer.Option(
        "local", "--executor", help="Where points run: local processes, or dask."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask scheduler address; default: a local cluster."
    ),
    workers: int = typer.Option(2, "--workers", help="Worker processes of a local Dask cluster."),
    dpi: float | None = dpi_option(),
) -> None:
    """Simulate WORKLOAD over a grid of modes, policies or capacities.

    Writes one table (sweep.csv, sweep.md, sweep.json) and one plot per metric.
    Exits 1 when a point failed (the table says which), 2 on a bad option, file or
    output path. Ctrl-C stops the sweep: no further point starts, the points running
    are interrupted, every finished point is kept and the table is written with
    the others marked "interrupted" or "not run" (no plots); one line, exit 130.
    """
    from rich.progress import Progress

    from kvlab.cli.options import output_dir, sigint_ignored
    from kvlab.errors import ConfigError, Interrupted
    from kvlab.report.compare import DEFAULT_METRICS, metric
    from kvlab.report.sweep import (
        grid,
        not_run,
        parse_axis,
        rows,
        run_sweep,
        subprocess_runner,
        write_plots,
        write_tables,
    )
    from kvlab.workload.detect import load_workload

    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    check_dpi(dpi)
    if output is None:
        from kvlab.report.progress import default_out

        output = default_out("sweep")
    axis_map: dict[str, list[str]] = {}
    if modes is not None:
        axis_map["mode"] = parse_axis(f"mode={modes}")[1]
    for a in axes:
        name, vals = parse_axis(a)
        if name in axis_map:
            raise ConfigError(f"axis {name!r} given twice")
        axis_map[name] = vals
    points = grid(axis_map)
    ms = [metric(m) for m in metrics] if metrics else list(DEFAULT_METRICS)
    try:
        extra = shlex.split(sim_args)
    except ValueError as e:
        raise ConfigError(f"--sim-args: {e}") from None
    _check_points(workload, points, extra)
    output = output_dir(output)
    runner = subprocess_runner(extra)
    from kvlab.report.progress import LineProgress, piped
    from kvlab.stress.executor import make_executor

    lines = LineProgress("sweep", len(points)) if piped() and not as_json else None
    ex = make_executor(executor, scheduler, workers)
    if executor == "dask":
        runner = ex.point_runner(runner)
    try:
        load_workload(str(workload))  # fail early on a bad file, read as kvlab simulate reads it
        with (
            contextlib.closing(ex),
            Progress(
                transient=True,
                disable=as_json or lines is not None,  # no bar (nor its blank line)
            ) as progress,
        ):
            task = progress.add_task("simulating", total=len(points))

            def done(_o: object) -> None:
                progress.advance(task)
                if lines is not None:  # a log or a pipe: a line every tenth or 5 s
                    lines.advance()

            result = run_sweep(
                workload,
                axis_map,
                output,
                runner=runner,
                jobs=jobs,
                on_done=done,
            )
    except KeyboardInterrupt:
        result = not_run(axis_map, output)
    if result.interrupted:
        with sigint_ignored():
            write_tables(result, output, ms)
        raise Interrupted(
            f"interrupted: {len(result.finished)} of {len(points)} points finished; "
            f"the table of what finished is in {output / 'sweep.md'}"
        )
    files = write_tables(result, output, ms)
    if plots:  # after the tables: a missing extra loses nothing and fails nothing
        from kvlab.errors import DependencyMissing

        try:
            with plot_dpi(dpi):
                files += write_plots(result, output, ms)
        except DependencyMissing as e:
            typer.echo(f"warning: plots skipped: {e}", err=True)
    if as_json:
        typer.echo(json.dumps({"axes": result.axes, "rows": rows(result, ms)}, indent=2))
    else:
        typer.echo((output / "sweep.md").read_text(), nl=False)
        typer.echo(f"wrote {len(files)} files under {output}")
    for o in result.failed:
        typer.echo(f"point {o.point.name} failed: {o.error}", err=True)
    if result.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)
    app.command("sweep")(sweep_cmd)


def _check_points(workload: Path, points: Sequence[Any], extra: Sequence[str]) -> None:
    """Parse every point's ``kvlab simulate`` command line as the command would, without
    running it: an unknown option or a value of the wrong type is one line naming the
    point, before any point runs (range checks stay the command's own, per point)."""
    import typer.main
    from typer.exceptions import TyperException

    from kvlab.cli.app import build_app
    from kvlab.errors import ConfigError

    simulate: Any = typer.main.get_command(build_app(("simulate",)))
    simulate = getattr(simulate, "commands", {}).get("simulate", simulate)
    for p in points:
        args = [str(workload), *p.option_args(), *extra, "-o", "-"]
        try:
            simulate.make_context("simulate", args)
        except typer.Exit:
            continue  # an eager option such as --help in --sim-args
        except TyperException as e:
            why = e.format_message() if hasattr(e, "format_message") else str(e)
            raise ConfigError(f"point {p.name}: {why}") from None
