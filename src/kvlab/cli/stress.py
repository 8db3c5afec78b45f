"""``kvlab stress``: a scenario matrix through plan and the simulator, with safe ranges."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

PART_NAMES = ("scenarios", "ranges", "curves", "whatifs", "presets")


def stress_cmd(
    matrix: Path | None = typer.Option(
        None, "--matrix", "-m", help="Matrix file (YAML or JSON); default: the shipped matrix."
    ),
    gpu: str | None = typer.Option(None, "--gpu", help="Run every scenario on this catalog GPU."),
    model: str | None = typer.Option(
        None, "--model", help="Run every scenario with this model (catalog name)."
    ),
    out: Path = typer.Option(Path("runs/stress"), "--out", "-o", help="Directory to write."),
    ttft: float | None = typer.Option(None, "--slo-ttft-p99", help="TTFT p99 limit, seconds."),
    tpot: float | None = typer.Option(None, "--slo-tpot-p99", help="TPOT p99 limit, seconds."),
    preemptions: int | None = typer.Option(
        None, "--slo-max-preemptions", help="Preemption budget per run."
    ),
    usage: float | None = typer.Option(
        None, "--slo-max-kv-usage", help="Peak KV usage ceiling, 0-1."
    ),
    parts: str = typer.Option(
        ",".join(PART_NAMES),
        "--parts",
        help="Which parts to run, comma-separated: " + ", ".join(PART_NAMES) + ".",
    ),
    save_runs: bool = typer.Option(
        True, "--save-runs/--no-save-runs", help="Write each scenario's run directory."
    ),
    executor: str = typer.Option(
        "local", "--executor", help="Where tasks run: local (this process) or dask."
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786); default: a local cluster.",
    ),
    workers: int = typer.Option(2, "--workers", help="Worker processes of a local Dask cluster."),
    print_default: bool = typer.Option(
        False, "--print-default-matrix", help="Print the shipped default matrix and exit."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print stress.json to stdout."),
) -> None:
    """Stress a model and GPU with a scenario matrix, through kvlab plan and the simulator.

    Every scenario (batch size, prompt and generation length, concurrent clients,
    shared prefix, arrival process, KV dtype, engine limits) gets KV demand, pool and
    simulated peak, prefix hits from its content, evictions, preemptions, TTFT/TPOT/E2E,
    throughput, goodput and a PASS/WARN/FAIL verdict with reasons. Then: safe max batch
    and concurrency per prompt length (galloping + bisection over simulator runs), a rate
    sweep with its knee and usage bands, what-ifs (fp8/int8/int4 KV, offload, prefix
    caching, TP 2, a bigger GPU) and four presets with `vllm serve` lines.

    Writes stress.json, stress.md, stress_timing.json and scenarios/*/ (run directories)
    to --out. --executor dask runs the tasks on a Dask cluster (--scheduler, or a local
    one of --workers processes) with the same stress.json byte for byte; a failed task
    is retried once, then reported. Ctrl-C stops launching work, keeps and writes what
    finished, and exits 130.

    Examples:

      kvlab stress --out runs/stress

      kvlab stress --print-default-matrix > my.yaml; kvlab stress -m my.yaml --gpu l40s
    """
    from kvlab.errors import ConfigError
    from kvlab.stress.matrix import default_matrix_text, load_matrix
    from kvlab.stress.run import run_stress

    if print_default:
        typer.echo(default_matrix_text(), nl=False)
        return
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    for p in chosen:
        if p not in PART_NAMES:
            raise ConfigError(f"unknown --parts entry {p!r}; choose from {', '.join(PART_NAMES)}")
    m = load_matrix(matrix)
    if gpu is not None:
        from kvlab.hardware import get_gpu

        get_gpu(gpu)
        m = m.with_gpu(gpu)
    if model is not None:
        from kvlab.models.catalog import get_model

        get_model(model)
        m = m.with_model(model)
    from dataclasses import replace

    m = replace(
        m,
        slo=m.slo.with_changes(
            ttft_p99_s=ttft, tpot_p99_s=tpot, max_preemptions=preemptions, max_kv_usage=usage
        ),
    )

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from kvlab.stress.executor import make_executor

    ex = make_executor(executor, scheduler, workers)
    try:
        res = run_stress(
            m, out=out, parts=chosen, progress=progress, save_runs=save_runs, executor=ex
        )
    finally:
        ex.close()
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=1))
    else:
        typer.echo((out / "stress.md").read_text(), nl=False)
        typer.echo(
            f"wrote {out}/stress.json, stress.md; {res.num_sim_runs:,} simulator runs "
            f"in {res.wall_s:.1f} s"
        )
    if res.interrupted:
        typer.echo("interrupted: finished work kept", err=True)
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    app.command("stress")(stress_cmd)
