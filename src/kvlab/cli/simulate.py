"""``kvlab simulate``: replay a workload or trace through the simulated vLLM engine.

Its parameters are declared once, in :data:`PARAMS`: :func:`register` builds
the Typer command from them, and ``python -m kvlab simulate`` with a plain
command line is parsed from them without importing Typer (see
:mod:`kvlab.cli.entry`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvlab.cli.options import (
    DPI_PARAM,
    GOODPUT_PARAM,
    PERCENTILES_PARAM,
    REQUIRED,
    Param,
    check_dpi,
    echo,
    plot_dpi,
    typer_command,
)

if TYPE_CHECKING:
    import typer

HELP = """Simulate WORKLOAD on a vLLM-v1-like engine: paged KV blocks with prefix
caching, the token-budget scheduler, preemption by recompute, an optional CPU
offload tier, and a roofline clock (uncalibrated; --calibration FILE from
kvlab calibrate uses a fitted one instead).

WORKLOAD is a kvlab workload file, a trace (Mooncake JSONL, Azure 2023 CSV,
Vidur CSV; detected from content, or --format) or a built-in trace name.

Writes to --out: summary.json (vLLM-named metrics), requests.jsonl, timeseries.csv,
histograms.json, run.json (configuration; the wall time), summary.md and
vllm_bench.json (vLLM bench's result keys, in ms). One seed, one run directory:
every file but run.json's wall_s is the same from run to run.

Modes: baseline = prefix caching off; prefix = on (default); offload = prefix plus
a CPU tier (--offload-gb, default twice the GPU KV cache); fp8 = prefix with fp8 KV.

Examples:

  kvlab simulate azure-conv --model llama-3.1-8b --gpu h100 --out runs/azure

  kvlab simulate chat.jsonl --mode offload --policy s3fifo --set max_num_seqs=256 --out runs/x
"""

MODES = ("baseline", "prefix", "offload", "fp8")


def _parse_sets(items: list[str]) -> dict[str, str]:
    from kvlab.errors import ConfigError

    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_config(
    *,
    model: str,
    gpu: str,
    mode: str,
    policy: str,
    block_size: int,
    num_blocks: int | None,
    kv_dtype: str | None,
    offload_gb: float | None,
    no_prefix_caching: bool,
    exact_steps: bool,
    seed: int,
    sets: list[str],
    async_scheduling: bool | None = None,
) -> Any:
    """The SimConfig the options describe (mode preset first, explicit options win)."""
    from kvlab.errors import ConfigError
    from kvlab.sim.config import SimConfig
    from kvlab.sim.resolve import resolve

    if mode not in MODES:
        raise ConfigError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")
    cfg = SimConfig(
        model=model,
        gpu=gpu,
        policy=policy,
        block_size=block_size,
        num_blocks=num_blocks,
        kv_dtype=kv_dtype or ("fp8" if mode == "fp8" else None),
        enable_prefix_caching=not no_prefix_caching and mode != "baseline",
        offload_gb=offload_gb,
        exact_steps=exact_steps,
        seed=seed,
        async_scheduling=async_scheduling,
    ).with_overrides(_parse_sets(sets))
    if mode == "offload" and not cfg.offload_gb and not cfg.offload_blocks:
        cfg = cfg.replace(offload_blocks=2 * resolve(cfg).num_blocks)
    return cfg


def save_with_exports(
    result: Any,
    out: Path,
    *,
    percentiles: tuple[float, ...] | None = None,
    goodput_slo_ms: dict[str, float] | None = None,
) -> None:
    """``result`` saved to ``out``, its latency figures recomputed for the chosen
    percentiles and goodput SLOs first, and ``vllm_bench.json`` written beside
    ``summary.json`` (:func:`kvlab.results.summary.vllm_bench_metrics`)."""
    from kvlab.results import atomic_write_text
    from kvlab.results.summary import (
        DEFAULT_PERCENTILES,
        latency_figures,
        latency_samples,
        vllm_bench_metrics,
    )

    qs = percentiles or DEFAULT_PERCENTILES
    s = result.summary
    samples = result.latency if result.latency is not None else latency_samples(result.records)
    if tuple(qs) != tuple(DEFAULT_PERCENTILES) or goodput_slo_ms:  # else the summary has them
        s.update(
            latency_figures(
                result.records,
                duration_s=s.get("simulated_duration_s"),
                percentiles=qs,
                goodput_slo_ms=goodput_slo_ms,
                samples=samples,
            )
        )
    result.save(out)
    bench = vllm_bench_metrics(
        s, result.records, percentiles=qs, goodput_slo_ms=goodput_slo_ms, samples=samples
    )
    atomic_write_text(out / "vllm_bench.json", json.dumps(bench, indent=2) + "\n")


def scheduler_text(provenance: dict[str, Any]) -> str:
    """Which of vLLM's schedulers a simulation followed and why, in a few words, e.g.
    ``async (vLLM's default on a GPU)``; "-" for a run that does not say."""
    name = provenance.get("scheduler")
    if not isinstance(name, str):
        return "-"
    mode = "async" if name.startswith("Async") else "synchronous"
    why = provenance.get("scheduler_reason")
    if not why or why == "set":
        return mode
    return why if why.startswith(mode) else f"{mode} ({why})"


def write_markdown(result: Any, out: Path, workload_name: str) -> None:
    """``summary.md``: the run in a few lines and one latency table, for a simulation
    and (``kvlab replay``) a live run alike; "-" where a figure is unknown."""
    from kvlab.results import atomic_write_text

    s = result.summary
    live = result.backend not in (None, "sim")

    def f(x: Any, nd: int = 3) -> str:
        return "-" if x is None else (f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}")

    if live:
        head = [
            f"# kvlab replay: {workload_name}",
            "",
            f"server: {result.config.get('endpoint')}, model {result.config.get('model')}, "
            f"mode {result.config.get('mode')}",
            "",
            f"- requests: {f(s['num_requests'])} ({f(s['num_completed'])} completed, "
            f"{f(s['num_failed'])} failed, {f(s['num_unfinished'])} unfinished)",
        ]
    else:
        head = [
            f"# kvlab simulate: {workload_name}",
            "",
            f"clock: {s.get('clock', 'roofline, uncalibrated')}",
            f"scheduler: {scheduler_text(result.provenance)}",
            "",
            f"- model {result.config.get('model')}, GPU {result.config.get('gpu')}, "
            f"{f(s['num_gpu_blocks'])} blocks of {s['block_size']} tokens, "
            f"policy {result.config.get('policy')}, prefix caching "
            f"{'on' if result.config.get('enable_prefix_caching') else 'off'}",
            f"- requests: {f(s['num_requests'])} ({f(s['num_completed'])} completed, "
            f"{f(s['num_rejected'])} rejected, {f(s['num_unfinished'])} unfinished)",
        ]
    lines = [
        *head,
        f"- prefix cache hit rate: {f(s['prefix_cache_hit_rate'])} "
        f"({f(s['prefix_cache_hits'])} of {f(s['prefix_cache_queries'])} tokens)",
        f"- preemptions: {f(s['num_preemptions'])}; evicted blocks: {f(s['num_evicted_blocks'])}",
        f"- KV usage: max {f(s['kv_cache_usage_perc_max'])}, "
        f"mean {f(s['kv_cache_usage_perc_mean'])}",
        "",
        "| metric | mean | p50 | p90 | p99 |",
        "|---|---|---|---|---|",
    ]
    names = ["ttft_s", "tpot_s", "e2e_s"]
    if (s.get("itl_s") or {}).get("mean") is not None:
        names.insert(2, "itl_s")
    for name in names:
        d = s[name]
        lines.append(
            f"| {name} | {f(d['mean'], 4)} | {f(d['p50'], 4)} | {f(d['p90'], 4)} "
            f"| {f(d['p99'], 4)} |"
        )
    what = "Measured" if live else "Simulated"
    lines += [
        "",
        f"{what} {f(s['simulated_duration_s'], 1)} s (wall time: run.json); "
        f"{f(s['request_throughput_per_s'], 2)} req/s, "
        f"{f(s['output_throughput_tok_per_s'], 1)} output tok/s.",
    ]
    if "offload_stored_blocks" in s:
        lines.append(
            f"Offload: {s['offload_capacity_blocks']:,} blocks, stored "
            f"{s['offload_stored_blocks']:,}, loaded {s['offload_loaded_blocks']:,}; "
            f"external hits {s['external_prefix_cache_hits']:,} of "
            f"{s['external_prefix_cache_queries']:,} tokens."
        )
    good = s.get("goodput")
    if good:
        slo = ", ".join(f"{k} <= {v:g} ms" for k, v in good["slo_ms"].items())
        lines.append(
            f"Goodput ({slo}): {good['good_requests']:,} requests "
            f"({f(good['good_fraction'])} of the completed), "
            f"{f(good['request_goodput_per_s'], 2)} req/s."
        )
    causes = s.get("miss_causes")
    if causes:
        lines.append(
            "Prefix misses by cause: " + ", ".join(f"{k} {v:,}" for k, v in causes.items()) + "."
        )
    if s.get("stopped"):
        lines.append(f"Stopped: {s['stopped']}.")
    if s.get("sessions"):
        from kvlab.report.sessions import to_markdown as sessions_markdown

        lines += ["", sessions_markdown({"sim": s["sessions"]}).rstrip("\n")]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")


#: The parameters of ``kvlab simulate``, in help order (the Typer command and the plain
#: parser of :mod:`kvlab.cli.entry` both read this table).
PARAMS: tuple[Param, ...] = (
    Param("workload", "str", REQUIRED, "Workload file, trace file or built-in trace."),
    Param("model", "str", "meta-llama/Llama-3.1-8B", "Model.", ("--model", "-m")),
    Param("gpu", "str", "h100-sxm", "GPU name or alias.", ("--gpu", "-g")),
    Param(
        "out",
        "path",
        None,
        "Run directory to write (default: runs/simulate-TIMESTAMP, printed).",
        ("--out", "-o"),
    ),
    Param(
        "fmt",
        "str",
        None,
        "Input format: kvlab, mooncake, azure, vidur (default: detect).",
        ("--format",),
    ),
    Param(
        "policy",
        "str",
        "lru",
        "Eviction policy: lru, lfu, fifo, s3fifo, retention or ttl (see docs/policies.md), "
        "or learned:FILE (a policy saved by `kvlab rl train`, docs/rl.md).",
        ("--policy",),
    ),
    Param("block_size", "int", 16, "Tokens per KV block.", ("--block-size",)),
    Param(
        "num_blocks",
        "int",
        None,
        "GPU KV blocks incl. the null block (default: kvlab plan).",
        ("--num-blocks", "--num-gpu-blocks"),
    ),
    Param("kv_dtype", "str", None, "KV dtype (bf16, fp8, ...).", ("--kv-dtype",)),
    Param("offload_gb", "float", None, "CPU tier size (GiB).", ("--offload-gb",)),
    Param("no_prefix_caching", "flag", False, "Disable prefix caching.", ("--no-prefix-caching",)),
    Param("mode", "str", "prefix", "baseline, prefix, offload or fp8.", ("--mode",)),
    Param(
        "exact_steps",
        "flag",
        False,
        "Simulate every decode step (reference mode, slower).",
        ("--exact-steps",),
    ),
    Param(
        "async_scheduling",
        "flag",
        None,
        "vLLM's AsyncScheduler (two batches in flight, host work overlapping the GPU) "
        "or its synchronous Scheduler. Default: as vLLM on a GPU, async, but synchronous "
        "with an offload tier (not modelled async) or a --calibration (the measured "
        "server's own; vLLM's CPU build runs synchronously).",
        ("--async-scheduling/--no-async-scheduling",),
    ),
    Param(
        "sets",
        "strs",
        (),
        "Engine setting KEY=VALUE (repeatable), e.g. max_num_seqs=256.",
        ("--set",),
    ),
    Param("seed", "int", 0, "Seed (for traces without timestamps).", ("--seed",)),
    PERCENTILES_PARAM,
    GOODPUT_PARAM,
    Param("as_json", "flag", False, "Print summary.json to stdout.", ("--json",)),
    Param("quiet", "flag", False, "No progress bar.", ("--quiet", "-q")),
    Param(
        "calibration",
        "path",
        None,
        "A calibration file from `kvlab calibrate`: its fitted step cost replaces the "
        "roofline clock (outputs say 'calibrated (file, fit error)').",
        ("--calibration",),
    ),
    Param(
        "plot",
        "flag",
        False,
        "Also draw kv_timeline and residency figures (PNG + SVG; the plot extra).",
        ("--plot",),
    ),
    DPI_PARAM,
    Param(
        "serve_metrics",
        "int",
        None,
        "After the run, replay it on a wall clock as vLLM /metrics on this port (0: any).",
        ("--serve-metrics",),
    ),
    Param(
        "speed", "float", 1.0, "Simulated seconds per wall second (--serve-metrics).", ("--speed",)
    ),
)


def register(app: typer.Typer) -> None:
    app.command("simulate", help=HELP)(typer_command(PARAMS, run_command))


def run_command(
    *,
    workload: str,
    model: str,
    gpu: str,
    out: Path | None,
    fmt: str | None,
    policy: str,
    block_size: int,
    num_blocks: int | None,
    kv_dtype: str | None,
    offload_gb: float | None,
    no_prefix_caching: bool,
    mode: str,
    exact_steps: bool,
    sets: list[str],
    seed: int,
    as_json: bool,
    quiet: bool,
    plot: bool = False,
    percentiles: str = "99",
    goodput: list[str] | tuple[str, ...] = (),
    on_loaded: Callable[[], object] | None = None,
    serve_metrics: int | None = None,
    speed: float = 1.0,
    calibration: Path | None = None,
    dpi: float | None = None,
    async_scheduling: bool | None = None,
) -> None:
    """The body of ``kvlab simulate`` (options already parsed); ``on_loaded`` is
    called once the workload is loaded, before the simulation starts (see
    :mod:`kvlab.cli.entry`)."""
    check_dpi(dpi)
    serve = None
    if serve_metrics is not None:
        from kvlab.monitor.serve import ServeOptions

        serve = ServeOptions(serve_metrics, speed)
    from kvlab.cli.options import latency_options

    if out is None:
        from kvlab.report.progress import default_out

        out = default_out("simulate")
    latency = latency_options(percentiles, goodput)
    cfg = build_config(
        model=model,
        gpu=gpu,
        mode=mode,
        policy=policy,
        block_size=block_size,
        num_blocks=num_blocks,
        kv_dtype=kv_dtype,
        offload_gb=offload_gb,
        no_prefix_caching=no_prefix_caching,
        exact_steps=exact_steps,
        seed=seed,
        sets=sets,
        async_scheduling=async_scheduling,
    )
    if calibration is not None:
        from kvlab.calibrate import load_calibration
        from kvlab.calibrate.fit import setting_mismatches
        from kvlab.sim.cost_model import CalibratedCost
        from kvlab.sim.resolve import resolve

        cal = load_calibration(calibration)
        cfg = cfg.replace(cost_model=CalibratedCost.from_calibration(cal, calibration.name))
        r = resolve(cfg)
        ran = {
            "block_size": r.block_size,
            "max_num_batched_tokens": r.max_num_batched_tokens,
            "max_num_seqs": r.max_num_seqs,
        }
        for line in setting_mismatches(cal, ran):
            print(f"warning: {calibration}: {line}", file=sys.stderr, flush=True)
    with plot_dpi(dpi):
        _simulate_and_save(
            SimulateJob(
                workload=workload,
                cfg=cfg,
                out=out,
                fmt=fmt,
                seed=seed,
                as_json=as_json,
                quiet=quiet,
                plot=plot,
                on_loaded=on_loaded,
                serve=serve,
                latency=latency,
            )
        )


def _save_interrupted(out: Path, wl: Any, cfg: Any, workload: str, wall_s: float) -> None:
    """Ctrl-C stopped the simulation (or the loading before it): the simulator keeps
    no partial results, so the run directory holds every request of the workload
    (none when it was not loaded yet) as unfinished, run.json says interrupted;
    raise Interrupted (one line, exit 130)."""
    from kvlab.backends.base import interrupted_result
    from kvlab.cli.options import sigint_ignored
    from kvlab.errors import Interrupted

    with sigint_ignored():
        result = interrupted_result(
            "sim",
            [] if wl is None else wl.requests,
            wall_s=wall_s,
            record_source="simulated",
            counts_known=True,
            config={**cfg.to_dict(), "workload": workload},
            seed=cfg.seed,
            workload=None if wl is None else wl.name,
        )
        result.save(out)
    when = "while loading the workload" if wl is None else "before the simulation finished"
    raise Interrupted(
        f"interrupted {when}; nothing simulated is kept; run directory {out} "
        "(run.json: status interrupted)"
    )


@dataclass(frozen=True)
class SimulateJob:
    """One ``kvlab simulate`` run, its options parsed: the workload (name or path) and
    its format, the config, the run directory, output switches, the metrics replay
    (``serve``: ``ServeOptions`` or None) and the latency options of
    :func:`save_with_exports` (``latency``)."""

    workload: str
    cfg: Any
    out: Path
    fmt: str | None
    seed: int
    as_json: bool
    quiet: bool
    plot: bool
    on_loaded: Callable[[], object] | None
    serve: Any = None
    latency: dict[str, Any] | None = None


def _simulate_and_save(job: SimulateJob) -> None:
    from kvlab.cli.options import output_dir, output_dir_kept

    created = not job.out.exists()
    out = output_dir(job.out)
    with output_dir_kept(out, created):
        _simulate_into(job, out)


def _simulate_into(job: SimulateJob, out: Path) -> None:
    workload, cfg, quiet, as_json = job.workload, job.cfg, job.quiet, job.as_json
    from kvlab.cli.options import sigint_ignored

    wl = None
    t0 = time.perf_counter()
    try:
        from kvlab.sim.engine import simulate
        from kvlab.workload.detect import load_workload

        wl = load_workload(workload, job.fmt, seed=job.seed)
        if job.on_loaded is not None:
            job.on_loaded()
        show = not quiet and not as_json and sys.stderr.isatty()
        if job.serve is not None:  # the same run, its state kept after every event
            simulate = job.serve.recorder()
        if show:
            from rich.console import Console
            from rich.progress import Progress

            # on stderr, the terminal it checked: a bar on a piped stdout ends in a blank line
            with Progress(transient=True, console=Console(stderr=True)) as bar:
                task = bar.add_task("simulating", total=len(wl.requests))
                result = simulate(wl, cfg, lambda done, total: bar.update(task, completed=done))
        else:
            result = simulate(wl, cfg)
    except KeyboardInterrupt:
        _save_interrupted(out, wl, cfg, str(workload), time.perf_counter() - t0)
    result.config["workload"] = str(workload)
    with sigint_ignored():  # a finished run is written whole, never replaced by a stub
        save_with_exports(result, out, **(job.latency or {}))
        write_markdown(result, out, Path(str(workload)).name)
    if job.plot:  # after the results are on disk: a missing extra loses nothing
        from kvlab.report.plots import or_warning, run_figures

        title = f"{Path(str(workload)).name}, {cfg.model} on {cfg.gpu}"
        or_warning(lambda: run_figures(result, out, title))
    if as_json:
        echo(json.dumps(result.summary, default=str))
    elif not quiet:
        s = result.summary
        echo(
            f"{s['num_completed']:,}/{s['num_requests']:,} requests, "
            f"hit rate {s['prefix_cache_hit_rate']:.3f}, "
            f"{s['num_preemptions']:,} preemptions, TTFT p50 "
            f"{(s['ttft_s']['p50'] or 0):.3f} s "
            f"(clock: {result.provenance.get('clock', 'roofline, uncalibrated')}; "
            f"scheduler: {scheduler_text(result.provenance)}) -> {out}"
        )
        from kvlab.workload.stats import TRACES_WITHOUT_PREFIXES

        if wl is not None and wl.meta.get("source_format", "") in TRACES_WITHOUT_PREFIXES:
            echo(
                "  the trace has no prefix information (every prompt is unique content), "
                "so no prompt can hit"
            )
    if job.serve is not None:
        job.serve.run(quiet=quiet)
