"""``kvlab simulate``: replay a workload or trace through the simulated vLLM engine.

Its parameters are declared once, in :data:`PARAMS`: :func:`register` builds
the Typer command from them, and ``python -m kvlab simulate`` with a plain
command line is parsed from them without importing Typer (see
:mod:`kvlab.cli.entry`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvlab.cli.options import REQUIRED, Param, echo, typer_command

if TYPE_CHECKING:
    import typer

HELP = """Simulate WORKLOAD on a vLLM-v1-like engine: paged KV blocks with prefix
caching, the token-budget scheduler, preemption by recompute, an optional CPU
offload tier, and a roofline clock (uncalibrated).

WORKLOAD is a kvlab workload file, a trace (Mooncake JSONL, Azure 2023 CSV,
Vidur CSV; detected from content, or --format) or a built-in trace name.

Writes to --out: summary.json (vLLM-named metrics), requests.jsonl, timeseries.csv,
histograms.json, run.json and summary.md.

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
    ).with_overrides(_parse_sets(sets))
    if mode == "offload" and not cfg.offload_gb and not cfg.offload_blocks:
        cfg = cfg.replace(offload_blocks=2 * resolve(cfg).num_blocks)
    return cfg


def write_markdown(result: Any, out: Path, workload_name: str) -> None:
    from kvlab.results import atomic_write_text

    s = result.summary

    def f(x: Any, nd: int = 3) -> str:
        return "-" if x is None else (f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}")

    lines = [
        f"# kvlab simulate: {workload_name}",
        "",
        f"clock: {s.get('clock', 'roofline, uncalibrated')}",
        "",
        f"- model {result.config.get('model')}, GPU {result.config.get('gpu')}, "
        f"{s['num_gpu_blocks']:,} blocks of {s['block_size']} tokens, "
        f"policy {result.config.get('policy')}, prefix caching "
        f"{'on' if result.config.get('enable_prefix_caching') else 'off'}",
        f"- requests: {s['num_requests']:,} ({s['num_completed']:,} completed, "
        f"{s['num_rejected']:,} rejected, {s['num_unfinished']:,} unfinished)",
        f"- prefix cache hit rate: {f(s['prefix_cache_hit_rate'])} "
        f"({s['prefix_cache_hits']:,} of {s['prefix_cache_queries']:,} tokens)",
        f"- preemptions: {s['num_preemptions']:,}; evicted blocks: {s['num_evicted_blocks']:,}",
        f"- KV usage: max {f(s['kv_cache_usage_perc_max'])}, "
        f"mean {f(s['kv_cache_usage_perc_mean'])}",
        "",
        "| metric | mean | p50 | p90 | p99 |",
        "|---|---|---|---|---|",
    ]
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        d = s[name]
        lines.append(
            f"| {name} | {f(d['mean'], 4)} | {f(d['p50'], 4)} | {f(d['p90'], 4)} "
            f"| {f(d['p99'], 4)} |"
        )
    wall = s["wall_s"]
    wall_text = f"{1000 * wall:.1f} ms" if wall < 1 else f"{wall:,.2f} s"
    lines += [
        "",
        f"Simulated {f(s['simulated_duration_s'], 1)} s in {wall_text} of wall time; "
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
    Param("out", "path", REQUIRED, "Run directory to write.", ("--out", "-o")),
    Param(
        "fmt",
        "str",
        None,
        "Input format: kvlab, mooncake, azure, vidur (default: detect).",
        ("--format",),
    ),
    Param("policy", "str", "lru", "Eviction policy.", ("--policy",)),
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
        "sets",
        "strs",
        (),
        "Engine setting KEY=VALUE (repeatable), e.g. max_num_seqs=256.",
        ("--set",),
    ),
    Param("seed", "int", 0, "Seed (for traces without timestamps).", ("--seed",)),
    Param(
        "workers",
        "int",
        1,
        "Processes: 1 (all in this one) or 2 (a second process names the workload's "
        "block keys while the run starts; same results, faster on large traces).",
        ("--workers",),
    ),
    Param("as_json", "flag", False, "Print summary.json to stdout.", ("--json",)),
    Param("quiet", "flag", False, "No progress bar.", ("--quiet", "-q")),
    Param(
        "plot",
        "flag",
        False,
        "Also draw kv_timeline and residency figures (PNG + SVG; the plot extra).",
        ("--plot",),
    ),
)


def register(app: typer.Typer) -> None:
    app.command("simulate", help=HELP)(typer_command(PARAMS, run_command))


def run_command(
    *,
    workload: str,
    model: str,
    gpu: str,
    out: Path,
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
    workers: int = 1,
    on_loaded: Callable[[], object] | None = None,
) -> None:
    """The body of ``kvlab simulate`` (options already parsed); ``on_loaded`` is
    called once the workload is loaded, before the simulation starts (see
    :mod:`kvlab.cli.entry`)."""
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
    )
    if workers != cfg.workers:
        cfg = cfg.replace(workers=workers)
    _simulate_and_save(
        workload=workload,
        cfg=cfg,
        out=out,
        fmt=fmt,
        seed=seed,
        as_json=as_json,
        quiet=quiet,
        plot=plot,
        on_loaded=on_loaded,
    )


def _simulate_and_save(
    *,
    workload: str,
    cfg: Any,
    out: Path,
    fmt: str | None,
    seed: int,
    as_json: bool,
    quiet: bool,
    plot: bool,
    on_loaded: Callable[[], object] | None,
) -> None:
    from kvlab.sim.engine import simulate
    from kvlab.workload.detect import load_workload

    wl = load_workload(workload, fmt, seed=seed)
    if on_loaded is not None:
        on_loaded()
    show = not quiet and not as_json and sys.stderr.isatty()
    if show:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("simulating", total=len(wl.requests))
            result = simulate(wl, cfg, lambda done, total: bar.update(task, completed=done))
    else:
        result = simulate(wl, cfg)
    result.config["workload"] = str(workload)
    result.save(out)
    write_markdown(result, out, Path(str(workload)).name)
    if plot:  # after the results are on disk: a missing extra loses nothing
        from kvlab.report.plots import run_figures

        run_figures(result, out, f"{Path(str(workload)).name}, {cfg.model} on {cfg.gpu}")
    if as_json:
        echo(json.dumps(result.summary, default=str))
    elif not quiet:
        s = result.summary
        echo(
            f"{s['num_completed']:,}/{s['num_requests']:,} requests, "
            f"hit rate {s['prefix_cache_hit_rate']:.3f}, "
            f"{s['num_preemptions']:,} preemptions, TTFT p50 "
            f"{(s['ttft_s']['p50'] or 0):.3f} s (clock: roofline, uncalibrated) -> {out}"
        )
