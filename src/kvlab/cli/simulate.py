"""``kvlab simulate``: replay a workload or trace through the simulated vLLM engine.

Typer is imported only by :func:`register`: ``python -m kvlab simulate`` with
plain arguments is parsed by :func:`parse_plain_args` and run without building
the Typer app (see :mod:`kvlab.cli.entry`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")


def register(app: typer.Typer) -> None:
    import typer

    @app.command("simulate", help=HELP)
    def simulate_cmd(
        workload: str = typer.Argument(..., help="Workload file, trace file or built-in trace."),
        model: str = typer.Option("meta-llama/Llama-3.1-8B", "--model", "-m", help="Model."),
        gpu: str = typer.Option("h100-sxm", "--gpu", "-g", help="GPU name or alias."),
        out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
        fmt: str | None = typer.Option(
            None, "--format", help="Input format: kvlab, mooncake, azure, vidur (default: detect)."
        ),
        policy: str = typer.Option("lru", "--policy", help="Eviction policy."),
        block_size: int = typer.Option(16, "--block-size", help="Tokens per KV block."),
        num_blocks: int | None = typer.Option(
            None,
            "--num-blocks",
            "--num-gpu-blocks",
            help="GPU KV blocks incl. the null block (default: kvlab plan).",
        ),
        kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV dtype (bf16, fp8, ...)."),
        offload_gb: float | None = typer.Option(None, "--offload-gb", help="CPU tier size (GiB)."),
        no_prefix_caching: bool = typer.Option(
            False, "--no-prefix-caching", help="Disable prefix caching."
        ),
        mode: str = typer.Option("prefix", "--mode", help="baseline, prefix, offload or fp8."),
        exact_steps: bool = typer.Option(
            False, "--exact-steps", help="Simulate every decode step (reference mode, slower)."
        ),
        sets: list[str] = typer.Option(
            [], "--set", help="Engine setting KEY=VALUE (repeatable), e.g. max_num_seqs=256."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed (for traces without timestamps)."),
        as_json: bool = typer.Option(False, "--json", help="Print summary.json to stdout."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        plot: bool = typer.Option(
            False,
            "--plot",
            help="Also draw kv_timeline and residency figures (PNG + SVG; the plot extra).",
        ),
    ) -> None:
        run_command(
            workload=workload,
            model=model,
            gpu=gpu,
            out=out,
            fmt=fmt,
            policy=policy,
            block_size=block_size,
            num_blocks=num_blocks,
            kv_dtype=kv_dtype,
            offload_gb=offload_gb,
            no_prefix_caching=no_prefix_caching,
            mode=mode,
            exact_steps=exact_steps,
            sets=sets,
            seed=seed,
            as_json=as_json,
            quiet=quiet,
            plot=plot,
        )


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
) -> None:
    """The body of ``kvlab simulate`` (options already parsed).

    The cyclic garbage collector stays paused for the whole command: a run
    holds hundreds of thousands of long-lived objects, and the collections
    that walked them each time the loader or the engine resumed the collector
    cost more than parsing the trace. What a run leaves in reference cycles
    (the engine's objects) is collected once, when the command ends (or not
    at all: see :mod:`kvlab.cli.entry`).
    """
    from kvlab._gc import paused_gc

    with paused_gc():
        _simulate_and_save(
            workload=workload,
            cfg=build_config(
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
            ),
            out=out,
            fmt=fmt,
            seed=seed,
            as_json=as_json,
            quiet=quiet,
            plot=plot,
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
) -> None:
    from kvlab.sim.engine import simulate
    from kvlab.workload.detect import load_workload

    wl = load_workload(workload, fmt, seed=seed)
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


def echo(text: str, *, err: bool = False) -> None:
    """``typer.echo(text, err=err)``, without importing Typer for plain ASCII text.

    Typer (click) writes the text and a newline and flushes; it would also
    strip ANSI escapes on a non-terminal and adapt the stream's encoding,
    which only non-ASCII or escape-carrying text can notice: that goes
    through Typer itself.
    """
    if not text.isascii() or "\x1b" in text:
        import typer

        typer.echo(text, err=err)
        return
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


#: Options of ``kvlab simulate`` for :func:`parse_plain_args`: name -> (parameter, kind),
#: kind "str", "int", "float", "path" (take a value) or "flag". Defaults in PLAIN_DEFAULTS.
PLAIN_OPTIONS: dict[str, tuple[str, str]] = {
    "--model": ("model", "str"),
    "-m": ("model", "str"),
    "--gpu": ("gpu", "str"),
    "-g": ("gpu", "str"),
    "--out": ("out", "path"),
    "-o": ("out", "path"),
    "--format": ("fmt", "str"),
    "--policy": ("policy", "str"),
    "--block-size": ("block_size", "int"),
    "--num-blocks": ("num_blocks", "int"),
    "--num-gpu-blocks": ("num_blocks", "int"),
    "--kv-dtype": ("kv_dtype", "str"),
    "--offload-gb": ("offload_gb", "float"),
    "--no-prefix-caching": ("no_prefix_caching", "flag"),
    "--mode": ("mode", "str"),
    "--exact-steps": ("exact_steps", "flag"),
    "--set": ("sets", "str"),
    "--seed": ("seed", "int"),
    "--json": ("as_json", "flag"),
    "--quiet": ("quiet", "flag"),
    "-q": ("quiet", "flag"),
    "--plot": ("plot", "flag"),
}

PLAIN_DEFAULTS: dict[str, Any] = {
    "model": "meta-llama/Llama-3.1-8B",
    "gpu": "h100-sxm",
    "fmt": None,
    "policy": "lru",
    "block_size": 16,
    "num_blocks": None,
    "kv_dtype": None,
    "offload_gb": None,
    "no_prefix_caching": False,
    "mode": "prefix",
    "exact_steps": False,
    "sets": [],
    "seed": 0,
    "as_json": False,
    "quiet": False,
    "plot": False,
}

_PLAIN_INT = re.compile(r"0|[1-9][0-9]{0,17}")
_PLAIN_FLOAT = re.compile(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?")


def parse_plain_args(args: list[str]) -> dict[str, Any] | None:
    """The keyword arguments of :func:`run_command` for ``kvlab simulate ARGS``, or None.

    Only plain command lines are parsed: one WORKLOAD that does not start with
    ``-``, ``--out``, and options from :data:`PLAIN_OPTIONS` written as
    ``--name VALUE``, ``--name=VALUE`` or ``-x VALUE``, with non-empty values
    that do not start with ``-`` or carry surrounding spaces, integers in
    plain decimal, numbers as ``12`` or ``12.5``. Anything else (help, a typo,
    an odd value) returns None and goes to Typer, which parses it (or reports
    it) as it always has. For the lines accepted, the result equals what Typer
    passes (tests/test_cli_entry.py checks both on generated lines).
    """
    kw: dict[str, Any] = {}
    sets: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if not tok.startswith("-"):
            positional.append(tok)
            continue
        name, eq, value = tok.partition("=")
        spec = PLAIN_OPTIONS.get(name)
        if spec is None or (eq and not name.startswith("--")):
            return None
        param, kind = spec
        if kind == "flag":
            if eq:
                return None
            kw[param] = True
            continue
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        parsed = _plain_value(value, kind)
        if parsed is None:
            return None
        if param == "sets":
            sets.append(parsed)
        else:
            kw[param] = parsed
    if len(positional) != 1 or "out" not in kw or not _plain_text(positional[0]):
        return None
    return {**PLAIN_DEFAULTS, **kw, "workload": positional[0], "sets": sets}


def _plain_text(value: str) -> bool:
    return bool(value) and not value.startswith("-") and value == value.strip()


def _plain_value(value: str, kind: str) -> Any:
    if not _plain_text(value):
        return None
    if kind == "int":
        return int(value) if _PLAIN_INT.fullmatch(value) else None
    if kind == "float":
        return float(value) if _PLAIN_FLOAT.fullmatch(value) else None
    if kind == "path":
        return Path(value)
    return value
