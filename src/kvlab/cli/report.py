"""``kvlab report``: one self-contained HTML report (plus Markdown and JSON) for run directories."""

from __future__ import annotations

from pathlib import Path

import typer

from kvlab.cli.options import check_dpi, dpi_option, plot_dpi


def report_cmd(
    run_dirs: list[Path] = typer.Argument(
        ...,
        help="Run directories (simulate, replay, bench, sweep or stress outputs) and "
        "kvlab monitor --record files (JSONL).",
    ),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    title: str | None = typer.Option(None, "--title", help="Report title."),
    as_json: bool = typer.Option(False, "--json", help="Print the report's JSON to stdout."),
    dpi: float | None = dpi_option(),
) -> None:
    """Write one report for any set of run directories.

    One HTML file that opens offline (no script, stylesheet, font or image loaded from
    anywhere: figures are inline SVG), with summary tables, per-class breakdowns, KV and
    queue timelines, latency histograms, deltas against the first run, and for stress
    runs the verdicts, safe-range tables, degradation curves, what-ifs and presets.
    A monitor record file gets, per server, its summary (duration, samples, KV usage,
    time above the usage threshold, preemptions, hit rate, unreachable time, restarts)
    and timelines with the alerts marked on the time axis.
    Beside it: the same content as OUT.md and OUT.json, and every figure as PNG and SVG
    in OUT_figures/.

    Examples:

      kvlab report runs/stress --out report.html

      kvlab report runs/base runs/prefix --out compare.html

      kvlab report watch.jsonl runs/stress --out watch.html
    """
    check_dpi(dpi)
    from kvlab.cli.options import output_file
    from kvlab.report.html_report import build_report

    output_file(out, "--out", make_parent=True)  # it goes with OUT_figures/: made if missing

    with plot_dpi(dpi):
        files = build_report(run_dirs, out, title=title)
    if as_json:
        typer.echo(files.json.read_text(), nl=False)
        return
    size = files.html.stat().st_size
    typer.echo(
        f"wrote {files.html} ({size / 1024:,.0f} KiB, self-contained), {files.markdown}, "
        f"{files.json}, {len(files.figures)} figure files"
    )


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
