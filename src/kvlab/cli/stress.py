"""``kvlab stress``: a scenario matrix through plan and the simulator, with safe ranges."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        help="Run the matrix against this live server (vLLM), scaled to its max_model_len "
        "and KV blocks, with the simulator beside it (see 'Against a live server').",
    ),
    served_model: str | None = typer.Option(
        None, "--served-model", help="With --endpoint: the served model (default: its only one)."
    ),
    server_max_num_seqs: int | None = typer.Option(
        None,
        "--server-max-num-seqs",
        help="With --endpoint: the server's --max-num-seqs, for the simulation (vLLM does "
        "not publish it; default: the simulator's default for the GPU).",
    ),
    sim_model: str | None = typer.Option(
        None,
        "--sim-model",
        help="With --endpoint: the model the simulator runs (catalog name or config.json "
        "path; default: each scenario's model).",
    ),
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help="With --endpoint: a `kvlab calibrate` file; its fitted clock replaces the "
        "simulator's roofline, so simulated latencies are comparable.",
    ),
    metrics_interval: float = typer.Option(
        0.1, "--metrics-interval", help="With --endpoint: seconds between /metrics samples."
    ),
    cache_mode: str = typer.Option(
        "cold",
        "--cache-mode",
        help="With --endpoint: cold (each scenario starts with an empty prefix cache: reset "
        "or salted prompts), warm or primed, as kvlab replay's.",
    ),
    request_timeout: float = typer.Option(
        600.0, "--request-timeout", help="With --endpoint: per-request timeout, seconds."
    ),
    api_key_env: str = typer.Option(
        "KVLAB_API_KEY", "--api-key-env", help="With --endpoint: variable holding the API key."
    ),
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

      kvlab stress -m my.yaml --endpoint http://127.0.0.1:8000 --out runs/stress-live

    --endpoint URL runs the matrix against a live vLLM server instead: each scenario
    scaled to the server's max_model_len and KV blocks (/v1/models, /metrics
    cache_config_info; the rule is printed, one line per scenario), sent through the
    replay client with the server's /metrics sampled, and simulated with the server's
    block size and count: real and simulated KV peak, preemptions, hit rate,
    TTFT/TPOT/E2E and verdicts side by side. Exits 1 when the server went down (the
    remaining scenarios are marked failed), 130 on Ctrl-C (finished scenarios kept).
    --parts, --executor and --scheduler do not apply to a live matrix.
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

    from kvlab.cli.options import output_dir

    output_dir(out, "--out")  # before any scenario runs: a bad place is one line

    if endpoint is not None:
        ignored = [
            name
            for name, given in (
                ("--parts", parts != ",".join(PART_NAMES)),
                ("--executor", executor != "local"),
                ("--scheduler", scheduler is not None),
            )
            if given
        ]
        if ignored:
            raise ConfigError(
                f"{', '.join(ignored)} cannot be used with --endpoint: a live matrix runs "
                "every scenario once, in order, from this process"
            )
        _live(
            m, out, endpoint, served_model, server_max_num_seqs, sim_model, calibration,
            metrics_interval, cache_mode, request_timeout, api_key_env, save_runs, as_json,
            progress,
        )  # fmt: skip
        return

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


def _live(
    m: Any,
    out: Path,
    endpoint: str,
    served_model: str | None,
    max_num_seqs: int | None,
    sim_model: str | None,
    calibration: Path | None,
    metrics_interval: float,
    cache_mode: str,
    request_timeout: float,
    api_key_env: str,
    save_runs: bool,
    as_json: bool,
    progress: Any,
) -> None:
    """``kvlab stress --endpoint``: see :mod:`kvlab.stress.live`."""
    import os

    from kvlab.backends.base import MAX_SECONDS
    from kvlab.backends.openai import CACHE_MODES
    from kvlab.cli.options import check_number
    from kvlab.errors import ConfigError
    from kvlab.stress.live import LiveTarget, check_scalable, probe_limits, run_live

    check_number(metrics_interval, "--metrics-interval", low=0, low_open=True, high=MAX_SECONDS)
    check_number(request_timeout, "--request-timeout", low=0, low_open=True, high=MAX_SECONDS)
    if cache_mode not in CACHE_MODES:
        raise ConfigError(f"--cache-mode must be one of {', '.join(CACHE_MODES)}")
    if max_num_seqs is not None and max_num_seqs < 1:
        raise ConfigError(f"--server-max-num-seqs must be >= 1, got {max_num_seqs}")
    if sim_model is not None:
        from kvlab.models.catalog import get_model

        get_model(sim_model)
    cost = None
    if calibration is not None:
        from kvlab.calibrate import load_calibration
        from kvlab.sim.cost_model import CalibratedCost

        cost = CalibratedCost.from_calibration(load_calibration(calibration), calibration.name)
    key = os.environ.get(api_key_env) or None
    limits = probe_limits(endpoint, served_model, api_key=key)
    check_scalable(limits)
    target = LiveTarget(
        limits,
        api_key=key,
        metrics_interval_s=metrics_interval,
        cache_mode=cache_mode,
        timeout_s=request_timeout,
        max_num_seqs=max_num_seqs,
        sim_model=sim_model,
        cost_model=cost,
        calibration=None if calibration is None else str(calibration),
    )
    progress(
        f"server {limits.endpoint}: {limits.model}, max_model_len {limits.max_model_len:,}, "
        f"{limits.num_gpu_blocks:,} KV blocks of {limits.block_size}"
    )
    res = run_live(m, target, out=out, progress=progress, save_runs=save_runs)
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=1))
    else:
        typer.echo((out / "stress.md").read_text(), nl=False)
        typer.echo(f"wrote {out}/stress.json, stress.md in {res.wall_s:.1f} s")
    if res.interrupted:
        typer.echo("interrupted: finished scenarios kept", err=True)
        raise typer.Exit(130)
    if res.server_down is not None:
        typer.echo(res.server_down, err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("stress")(stress_cmd)
