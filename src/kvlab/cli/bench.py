"""``kvlab bench``: measurement experiments; ``kvlab tiny-model``: a local test model."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import typer

from kvlab.cli.options import (
    GOODPUT_PARAM,
    PERCENTILES_PARAM,
    check_dpi,
    dpi_option,
    plot_dpi,
    typer_option,
)
from kvlab.errors import ConfigError


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{name} needs at least one value")
    return values


#: The most requests per run, and tokens per prompt or output, a bench experiment takes:
#: its workloads are built in memory before they run (a bigger figure is a typo).
MAX_REQUESTS = 100_000
MAX_TOKENS = 10_000_000


def _bounded(value: int | None, option: str, high: int) -> None:
    if value is not None and not 1 <= value <= high:
        raise ConfigError(f"{option} must be in [1, {high:,}], got {value:,}")


def tiny_model(
    out_dir: Path = typer.Argument(..., help="Directory to write the model into."),
    layers: int = typer.Option(2, "--layers", help="Decoder layers."),
    hidden: int = typer.Option(128, "--hidden", help="Hidden size."),
    heads: int = typer.Option(4, "--heads", help="Attention (query) heads."),
    kv_heads: int = typer.Option(2, "--kv-heads", help="Key/value heads (GQA)."),
    vocab: int = typer.Option(2048, "--vocab", help="Vocabulary size (BPE trained locally)."),
    max_pos: int = typer.Option(2048, "--max-pos", help="Maximum positions."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write a tiny random-weight Llama-style model with a locally trained BPE tokenizer.

    No download; takes seconds. The directory loads in transformers and in vLLM
    (CPU build), e.g. for the live test tier and the bench experiments.
    """
    from kvlab.backends.tiny_model import TinyModelConfig, write_tiny_model
    from kvlab.cli.options import output_dir

    cfg = TinyModelConfig(
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        vocab=vocab,
        max_pos=max_pos,
        seed=seed,
    )
    output_dir(out_dir, "OUT_DIR")  # before torch loads: a bad place is one line at once
    path = write_tiny_model(out_dir, cfg)
    kv_per_token = 2 * layers * kv_heads * cfg.head_dim * 2
    if as_json:
        typer.echo(
            json.dumps({"path": str(path), "kv_bytes_per_token_bf16": kv_per_token, **_cfg(cfg)})
        )
    else:
        typer.echo(
            f"wrote {path}: {layers} layers, hidden {hidden}, {heads} heads "
            f"({kv_heads} KV x {cfg.head_dim}), vocab {vocab}; "
            f"KV {kv_per_token} B/token in bf16"
        )


def _cfg(cfg: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(cfg)


def bench(
    experiment: str = typer.Option(
        ..., "--experiment", "-e", help="concurrency | seqlen | mixed | prefix"
    ),
    backend: str = typer.Option("hf", "--backend", help="hf (in process) or openai (a server)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output directory (runs, figures, JSON; default: runs/bench-TIMESTAMP, printed).",
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="hf: transformers model directory (see kvlab tiny-model)."
    ),
    endpoint: str | None = typer.Option(
        None, "--endpoint", "--base-url", help="openai: server base URL."
    ),
    model: str | None = typer.Option(None, "--model", help="openai: served model name."),
    model_config: str | None = typer.Option(
        None,
        "--model-config",
        help="openai: config.json or catalog name of the served model, for KV bytes.",
    ),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help="openai: the server's context limit (checks sizes)."
    ),
    threads: int = typer.Option(1, "--threads", help="hf: torch threads (pinned for the run)."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="hf: bfloat16 | float16 | float32."),
    levels: str = typer.Option("1,2,4,8", "--levels", help="concurrency: levels to run."),
    num_requests: int = typer.Option(16, "--requests", help="concurrency: requests per level."),
    prompt_tokens: int = typer.Option(64, "--prompt-tokens", help="concurrency: prompt length."),
    output_tokens: int | None = typer.Option(
        None, "--output-tokens", help="concurrency/seqlen: output tokens (default 64 / 32)."
    ),
    lengths: str = typer.Option("16,32,64,128,192", "--lengths", help="seqlen: prompt lengths."),
    as_json: bool = typer.Option(False, "--json", help="Print the experiment points as JSON."),
    check_oom: bool = typer.Option(
        True,
        "--check-oom/--no-check-oom",
        help="Before running, judge the OOM risk (low/medium/high, from kvlab plan) with reasons "
        "and recommendations; a high risk stops the run (--no-check-oom runs anyway).",
    ),
    gpu: str | None = typer.Option(
        None, "--gpu", help="The accelerator for --check-oom (default: hf on this host's memory)."
    ),
    dpi: float | None = dpi_option(),
    percentiles: str = typer_option(PERCENTILES_PARAM),
    goodput: list[str] = typer_option(GOODPUT_PARAM),
) -> None:
    """Run a measurement experiment on a real backend and write runs plus figures.

    [b]concurrency[/b]: fig1 KV and memory vs concurrency, fig2 aggregate
    throughput (total tokens over wall time). [b]seqlen[/b]: fig3 TTFT/TPOT/E2E
    and fig4 KV bytes vs sequence length, measured against the formula.
    [b]mixed[/b]: fig5 tail latency of short requests alone vs mixed with long
    ones. [b]prefix[/b]: shared vs unique system prompt. Every experiment also
    draws a KV usage timeline and writes one run directory per run, with
    vllm_bench.json (vLLM bench's keys, in ms) beside its summary.json.
    --percentiles and --goodput work as in simulate and replay: every point of
    experiment.json and points.csv carries its run's latency_percentiles_s and,
    with SLOs, its goodput.
    """
    from kvlab.bench import EXPERIMENTS

    if experiment not in EXPERIMENTS:
        raise ConfigError(
            f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}"
        )
    from kvlab.cli.options import latency_options, output_dir

    latency = latency_options(percentiles, goodput)
    if max_model_len is not None and max_model_len < 1:
        raise ConfigError(f"--max-model-len must be >= 1, got {max_model_len}")
    _bounded(num_requests, "--requests", MAX_REQUESTS)
    _bounded(prompt_tokens, "--prompt-tokens", MAX_TOKENS)
    _bounded(output_tokens, "--output-tokens", MAX_TOKENS)
    for level in _ints(levels, "--levels"):
        _bounded(level, "--levels", MAX_REQUESTS)
    for length in _ints(lengths, "--lengths"):
        _bounded(length, "--lengths", MAX_TOKENS)
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    check_dpi(dpi)
    params = _params(experiment, levels, num_requests, prompt_tokens, output_tokens, lengths)
    if out is None:
        from kvlab.report.progress import default_out

        out = default_out("bench")
    out_dir = output_dir(out)
    if out.name != experiment:
        out_dir = output_dir(out / experiment)
    try:
        target = _target(
            backend, model_dir, endpoint, model, model_config, max_model_len, threads, dtype
        )
        mod = importlib.import_module(EXPERIMENTS[experiment])
    except KeyboardInterrupt:
        _save_interrupted(experiment, backend, out_dir)
    _check_context(experiment, params, target)
    if check_oom:
        _check_oom(experiment, params, target, model_dir, model_config, gpu, backend, out_dir)

    from rich.progress import Progress

    from kvlab.report.progress import LineProgress, piped

    with plot_dpi(dpi):  # the experiments draw their figures as they finish
        try:
            if piped():  # a log or a pipe: one line per run instead of a bar
                lines = LineProgress(f"{experiment} on {backend}", None, every_fraction=0.0)

                def progress_line(label: str, done: int, total: int) -> None:
                    lines.update(done, total, label=f"{experiment}: {label}")

                exp = mod.run(target, out_dir, params, progress_line, latency)
            else:
                with Progress(transient=True) as bar:
                    task = bar.add_task(f"{experiment} on {backend}", total=None)

                    def progress(label: str, done: int, total: int) -> None:
                        bar.update(
                            task, completed=done, total=total, description=f"{experiment}: {label}"
                        )

                    exp = mod.run(target, out_dir, params, progress, latency)
        except KeyboardInterrupt:
            _save_interrupted(experiment, backend, out_dir)
    if as_json:
        typer.echo(json.dumps({"out": str(out_dir), "points": exp.points}, default=str))
        return
    typer.echo(f"{experiment} on {backend} ({exp.model}): {len(exp.run_dirs)} runs in {out_dir}")
    for f in exp.figures:
        if f.suffix == ".png":
            typer.echo(f"  figure {f}")


def _save_interrupted(experiment: str, backend: str, out_dir: Path) -> None:
    """Ctrl-C stopped the experiment: write ``experiment.json`` with status interrupted
    and the runs that finished (their run directories are whole; a run cut short is
    saved marked interrupted by the live backend, and not at all in process), then
    raise Interrupted (one line, exit 130)."""
    from kvlab.cli.options import sigint_ignored
    from kvlab.errors import Interrupted, KvlabError
    from kvlab.results import RunResult, atomic_write_text

    with sigint_ignored():
        finished: list[str] = []
        cut: list[str] = []
        runs = out_dir / "runs"
        for d in sorted(runs.iterdir()) if runs.is_dir() else []:
            try:
                run = RunResult.load(d)
            except KvlabError:
                continue
            (finished if run.complete else cut).append(str(d.relative_to(out_dir)))
        doc = {
            "experiment": experiment,
            "backend": backend,
            "status": "interrupted",
            "runs": finished,
            "interrupted_runs": cut,
        }
        atomic_write_text(out_dir / "experiment.json", json.dumps(doc, indent=2) + "\n")
    raise Interrupted(
        f"interrupted: {len(finished)} runs finished, {len(cut)} cut short; "
        f"{out_dir / 'experiment.json'} (status interrupted)"
    )


def _check_context(experiment: str, params: Any, target: Any) -> None:
    """Refuse, before anything runs or any prompt text is built, an experiment whose
    longest sequence (prompt + output) exceeds the target's context: the model's
    max_position_embeddings in process, ``--max-model-len`` against a server (a
    server run also checks each request against what the server reports)."""
    from kvlab.bench.oom import experiment_shape

    _, tokens = experiment_shape(experiment, params)
    limit = target.max_model_len
    if limit is not None and tokens > limit:
        raise ConfigError(
            f"{experiment}: its longest sequence, {tokens:,} tokens (prompt + output), "
            f"exceeds the {limit:,}-token context of {target.model_label}; use shorter "
            "--prompt-tokens/--output-tokens/--lengths"
        )


def _check_oom(
    experiment: str,
    params: Any,
    target: Any,
    model_dir: Path | None,
    model_config: str | None,
    gpu: str | None,
    backend: str,
    out_dir: Path,
) -> None:
    from kvlab.bench.oom import bench_check
    from kvlab.results import atomic_write_text

    config = str(model_dir / "config.json") if model_dir is not None else model_config
    risk, where = bench_check(experiment, params, model_config=config, gpu=gpu, backend=backend)
    typer.echo(where, err=True)
    if risk is None:
        return
    typer.echo(risk.to_text(), err=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "oom_check.json", json.dumps(risk.to_dict(), indent=2) + "\n")
    if risk.tier == "high":
        typer.echo("not running: the OOM risk is high (--no-check-oom runs anyway)", err=True)
        raise typer.Exit(1)


def _target(
    backend: str,
    model_dir: Path | None,
    endpoint: str | None,
    model: str | None,
    model_config: str | None,
    max_model_len: int | None,
    threads: int,
    dtype: str,
) -> Any:
    from kvlab.bench.target import HfTarget, OpenAITarget

    if backend == "hf":
        if model_dir is None:
            raise ConfigError("--backend hf needs --model-dir DIR (make one: kvlab tiny-model DIR)")
        if not (model_dir / "config.json").is_file():  # checked before torch loads
            raise ConfigError(
                f"{model_dir} has no config.json; give a transformers model directory "
                "(make one with: kvlab tiny-model DIR)"
            )
        return HfTarget(model_dir=str(model_dir), num_threads=threads, dtype=dtype)
    if backend == "openai":
        if not endpoint or not model:
            raise ConfigError("--backend openai needs --endpoint URL and --model NAME")
        return OpenAITarget(
            endpoint=endpoint, model=model, model_config=model_config, max_model_len=max_model_len
        )
    raise ConfigError(f"unknown backend {backend!r}; choose hf or openai")


def _params(
    experiment: str,
    levels: str,
    num_requests: int,
    prompt_tokens: int,
    output_tokens: int | None,
    lengths: str,
) -> Any:
    if experiment == "concurrency":
        from kvlab.bench.concurrency import ConcurrencyParams

        return ConcurrencyParams(
            levels=_ints(levels, "--levels"),
            num_requests=num_requests,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens or ConcurrencyParams().output_tokens,
        )
    if experiment == "seqlen":
        from kvlab.bench.seqlen import SeqlenParams

        return SeqlenParams(
            prompt_lengths=_ints(lengths, "--lengths"),
            output_tokens=output_tokens or SeqlenParams().output_tokens,
        )
    return None


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("tiny-model")(tiny_model)
