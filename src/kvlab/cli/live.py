"""``kvlab replay``: run a workload against a live OpenAI-compatible server."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import typer

from kvlab.cli.options import GOODPUT_PARAM, PERCENTILES_PARAM, dpi_option, typer_option
from kvlab.errors import ConfigError


def _mode(mode: str | None, concurrency: int | None, rate: float | None) -> str:
    if mode is not None:
        return mode
    if rate is not None:
        return "rate"
    if concurrency is not None:
        return "closed"
    return "trace"


def replay(
    workload: Path = typer.Argument(
        ..., help="Workload file (kvlab JSONL, a mooncake/azure/vidur trace or a built-in name)."
    ),
    endpoint: str = typer.Option(
        ...,
        "--endpoint",
        "--base-url",
        help="Server base URL, e.g. http://127.0.0.1:8000 (--base-url: vLLM bench's name).",
    ),
    model: str = typer.Option(..., "--model", help="Served model name."),
    api: str = typer.Option("completions", "--api", help="completions or chat."),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help="closed | rate | trace | sessions (default: closed with --concurrency, "
        "rate with --rate, else trace).",
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", help="Closed-loop workers, or the in-flight cap."
    ),
    rate: float | None = typer.Option(None, "--rate", help="Requests (sessions) per second."),
    burstiness: float = typer.Option(
        1.0, "--burstiness", help="Gamma shape of inter-arrival gaps (1 = Poisson)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the arrival process."),
    api_key: str | None = typer.Option(
        None, "--api-key", help="API key (prefer --api-key-env; never written to outputs)."
    ),
    api_key_env: str = typer.Option(
        "KVLAB_API_KEY", "--api-key-env", help="Environment variable holding the API key."
    ),
    cache_mode: str = typer.Option(
        "warm", "--cache-mode", help="warm (as found) | cold (reset or salt) | primed."
    ),
    metrics_interval: float = typer.Option(
        0.25, "--metrics-interval", help="Seconds between /metrics samples (0: off)."
    ),
    max_errors: int | None = typer.Option(
        None, "--max-errors", help="Stop after this many failed requests."
    ),
    timeout: float = typer.Option(600.0, "--timeout", help="Per-request timeout in seconds."),
    http_client: str = typer.Option(
        "kvlab",
        "--http-client",
        help="HTTP client of the streamed requests: kvlab (default, leaner) or aiohttp.",
    ),
    max_model_len: int | None = typer.Option(
        None,
        "--max-model-len",
        help="The server's context limit in tokens (default: what its /v1/models reports, "
        "as vLLM does). Every request's prompt + max_tokens is checked against it before "
        "anything is sent.",
    ),
    model_config: str | None = typer.Option(
        None,
        "--model-config",
        help="config.json or catalog name of the served model: when the server reports no "
        "max_model_len (SGLang, llama.cpp, Ollama), its max_position_embeddings is the "
        "limit (default: --model when kvlab knows that name; else a ceiling of 10,000,000 "
        "tokens per request).",
    ),
    history: str = typer.Option(
        "scripted",
        "--history",
        help="Where a session's next turn gets the answers it re-sends: scripted (the "
        "workload file's segments, default) or server (the answers the server produced, "
        "as a chat client does). With server each turn waits for the previous answer "
        "(--mode trace replays as sessions), a failed turn ends its session, and "
        "OUT/transcript.jsonl records what was sent as a workload: 'kvlab simulate "
        "OUT/transcript.jsonl' replays it. Needs --api completions.",
    ),
    skip_too_long: bool = typer.Option(
        False,
        "--skip-too-long",
        help="Mark requests that do not fit the context as rejected (not sent) and run the "
        "rest, instead of refusing the whole run.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory to write (default: runs/replay-TIMESTAMP)."
    ),
    percentiles: str = typer_option(PERCENTILES_PARAM),
    duration: float | None = typer.Option(
        None,
        "--duration",
        help="Stop sending after this many seconds of the run (as GuideLLM's --max-seconds): "
        "requests cut off or never sent are recorded unfinished, summary.json says "
        "'stopped', and the exit code is 0.",
    ),
    warmup: int = typer.Option(
        0,
        "--warmup",
        help="Send the first N requests first, as a warm-up run recorded in OUT/warmup/ "
        "(marked in its run.json) and left out of the measured run and its summary.",
    ),
    goodput: list[str] = typer_option(GOODPUT_PARAM),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    plot: bool = typer.Option(
        False,
        "--plot",
        help="Also draw the kv_timeline figure of the server's metrics (PNG + SVG; the plot "
        "extra).",
    ),
    dpi: float | None = dpi_option(),
) -> None:
    """Replay WORKLOAD against a live OpenAI-compatible server (vLLM, SGLang, llama.cpp,
    Ollama), sampling its /metrics, and write a RunResult directory comparable with
    "kvlab simulate" on the same workload.

    Writes summary.json, summary.md, vllm_bench.json (vLLM bench's result keys, in ms),
    requests.jsonl, timeseries.csv, histograms.json and run.json; with --history server
    also transcript.jsonl (the prompts sent, as a kvlab workload).

    Exits 1 when any request failed, was rejected or was not finished (the results
    are still written), 2 on a bad option, file or output path (before anything is
    sent). Ctrl-C (at any point) stops the run: the run directory is still written
    whole, with the finished requests, the rest marked unfinished and
    "status": "interrupted" in run.json; one line is printed and the exit code is 130.
    """
    from kvlab.backends.base import MAX_BURSTINESS, MAX_RATE_PER_S, MAX_SECONDS
    from kvlab.cli.options import (
        check_dpi,
        check_number,
        latency_options,
        output_dir,
        output_dir_kept,
        plot_dpi,
    )
    from kvlab.report.progress import default_out

    check_number(rate, "--rate", low=0, low_open=True, high=MAX_RATE_PER_S)
    check_number(burstiness, "--burstiness", low=0, low_open=True, high=MAX_BURSTINESS)
    check_number(metrics_interval, "--metrics-interval", low=0, high=MAX_SECONDS)
    check_number(timeout, "--timeout", low=0, low_open=True, high=MAX_SECONDS)
    if duration is not None:
        check_number(duration, "--duration", low=0, low_open=True, high=MAX_SECONDS)
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
    if max_model_len is not None and max_model_len < 1:
        raise ConfigError(f"--max-model-len must be >= 1, got {max_model_len}")
    if max_errors is not None and max_errors < 1:
        raise ConfigError("--max-errors must be >= 1")
    if warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {warmup}")
    check_dpi(dpi)
    if model_config is not None:
        from kvlab.models import get_model

        get_model(model_config)  # a bad name or file: one line, before anything is made
    latency = latency_options(percentiles, goodput)
    if out is None:
        out = default_out("replay")
    created = not out.exists()
    out = output_dir(out)
    with output_dir_kept(out, created), plot_dpi(dpi):
        _replay(
            workload, out, endpoint, model, api, mode, concurrency, rate, burstiness, seed,
            api_key, api_key_env, cache_mode, metrics_interval, max_errors, timeout,
            http_client, max_model_len, skip_too_long, as_json, plot, warmup, latency,
            duration, model_config, history,
        )  # fmt: skip


def _replay(
    workload: Path,
    out: Path,
    endpoint: str,
    model: str,
    api: str,
    mode: str | None,
    concurrency: int | None,
    rate: float | None,
    burstiness: float,
    seed: int,
    api_key: str | None,
    api_key_env: str,
    cache_mode: str,
    metrics_interval: float,
    max_errors: int | None,
    timeout: float,
    http_client: str,
    max_model_len: int | None,
    skip_too_long: bool,
    as_json: bool,
    plot: bool,
    warmup: int,
    latency: dict[str, Any],
    duration: float | None = None,
    model_config: str | None = None,
    history: str = "scripted",
) -> None:
    from kvlab.cli.options import sigint_ignored
    from kvlab.cli.simulate import save_with_exports, write_markdown

    done: list[Any] = []
    wl: Any = None
    cfg: Any = None
    result: Any = None
    backend: Any = None
    t0 = time.perf_counter()
    try:
        from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
        from kvlab.results import STATUS_OK, RecordWriter
        from kvlab.workload.detect import load_workload

        key = api_key or os.environ.get(api_key_env) or None
        cfg = OpenAIConfig(
            endpoint=endpoint,
            model=model,
            api=api,
            mode=_mode(mode, concurrency, rate),
            concurrency=concurrency,
            rate_per_s=rate,
            burstiness=burstiness,
            seed=seed,
            timeout_s=timeout,
            read_timeout_s=min(timeout, 300.0),
            max_errors=max_errors,
            cache_mode=cache_mode,
            metrics_interval_s=metrics_interval,
            http_client=http_client,
            max_model_len=max_model_len,
            too_long="skip" if skip_too_long else "refuse",
            model_config=model_config,
            duration_s=duration,
            history=history,
            api_key=key,
        )
        if warmup and history == "server":
            raise ConfigError(
                "--warmup cannot be used with --history server: a session cut in two would "
                "send its later turns without the earlier answers"
            )
        wl = load_workload(workload)
        if warmup:
            warm, wl = split_warmup(wl, warmup, cfg.mode)
            wdir = out / "warmup"
            wdir.mkdir(exist_ok=True)
            wcfg = dataclasses.replace(cfg, duration_s=None)  # --duration times the measured run
            wres = _run_with_progress(
                OpenAIBackend(wcfg), warm, wdir, RecordWriter, quiet=as_json, done=[]
            )
            if wres.summary.get("stopped") == "interrupted":
                raise KeyboardInterrupt
            wres.config["warmup"] = True  # marked: these requests are not measured
            with sigint_ignored():
                save_with_exports(wres, wdir, **latency)
        backend = OpenAIBackend(cfg)
        result = _run_with_progress(backend, wl, out, RecordWriter, quiet=as_json, done=done)
        if result.summary.get("stopped") == "interrupted":
            result.status = "interrupted"
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        _write_transcript(backend, out)  # Ctrl-C keeps the turns that finished
        _save_interrupted(out, wl, cfg, done, result, time.perf_counter() - t0)
    if warmup:
        result.config["warmup_requests"] = warmup
    with sigint_ignored():  # a finished run is written whole, never replaced by a stub
        save_with_exports(result, out, **latency)
        write_markdown(result, out, Path(str(workload)).name)
        transcript = _write_transcript(backend, out)
    if plot:  # after the results are on disk: a missing extra loses nothing
        from kvlab.report.plots import or_warning, run_figures

        title = f"{Path(str(workload)).name}, {model} (live server)"
        or_warning(lambda: run_figures(result, out, title))
    s = result.summary
    if as_json:
        typer.echo(json.dumps(s, indent=2, default=str))
    else:
        _print_summary(s, out)
        if transcript is not None:
            typer.echo(
                f"transcript: {transcript} ({len(backend.transcript.requests)} requests sent "
                f"with the server's answers; kvlab simulate {transcript} replays them)"
            )
    from kvlab.backends.openai import DURATION_STOP
    from kvlab.results.records import STATUS_UNFINISHED

    timed = str(s.get("stopped") or "").startswith(DURATION_STOP)  # unfinished as asked
    if any(r.status != STATUS_OK and not (timed and r.status == STATUS_UNFINISHED)
           for r in result.records):  # fmt: skip
        raise typer.Exit(1)


def _write_transcript(backend: Any, out: Path) -> Path | None:
    """Write ``OUT/transcript.jsonl`` when the run kept a transcript (``--history server``)
    with at least one request; its path, else None."""
    transcript = getattr(backend, "transcript", None)
    if transcript is None or not transcript.requests:
        return None
    from kvlab.backends.transcript import TRANSCRIPT_FILE
    from kvlab.cli.options import sigint_ignored
    from kvlab.workload.io import write_workload

    with sigint_ignored():
        return write_workload(transcript.workload(), out / TRANSCRIPT_FILE)


def split_warmup(wl: Any, n: int, mode: str) -> tuple[Any, Any]:
    """The first ``n`` requests of ``wl`` (the warm-up) and the rest, whose arrival
    times start again at 0; ConfigError when ``n`` leaves nothing to measure or the
    mode replays sessions (a session cut in two would lose its earlier turns)."""
    from dataclasses import replace

    if n < 0:
        raise ConfigError(f"--warmup must be >= 0, got {n}")
    if n >= len(wl.requests):
        raise ConfigError(f"--warmup {n} leaves none of the {len(wl.requests)} requests to measure")
    if mode == "sessions":
        raise ConfigError("--warmup cannot split sessions; use --mode trace, rate or closed")
    warm, rest = wl.requests[:n], wl.requests[n:]
    t0 = min((r.arrival_s for r in rest if r.arrival_s is not None), default=0.0)
    rest = tuple(r if r.arrival_s is None else replace(r, arrival_s=r.arrival_s - t0) for r in rest)
    return (
        replace(wl, requests=warm, name=f"{wl.name} (warm-up)"),
        replace(wl, requests=rest),
    )


def _save_interrupted(
    out: Path, wl: Any, cfg: Any, done: list[Any], result: Any, wall_s: float
) -> None:
    """Write the run directory of a run Ctrl-C stopped and raise Interrupted (one line,
    exit 130). ``result`` is the backend's own (it stopped the run gracefully) or None
    (Ctrl-C came before the run started or outside the event loop): then the records
    finished so far (``done``) and the rest of the workload, unfinished, make it."""
    from kvlab.backends.base import interrupted_result
    from kvlab.cli.options import sigint_ignored
    from kvlab.errors import Interrupted

    with sigint_ignored():
        if result is None or result.status != "interrupted":
            result = interrupted_result(
                "openai",
                [] if wl is None else wl.requests,
                done,
                wall_s=wall_s,
                record_source="usage.prompt_tokens_details",
                config={} if cfg is None else cfg.to_dict(),
                seed=None if cfg is None else cfg.seed,
                workload=None if wl is None else wl.name,
            )
        result.save(out)
    s = result.summary
    raise Interrupted(
        f"interrupted: {s['num_completed']} of {s['num_requests']} requests finished; "
        f"run directory {out} (run.json: status interrupted)"
    )


def _run_with_progress(
    backend: Any, wl: Any, out: Path, writer_cls: Any, *, quiet: bool, done: list[Any]
) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from kvlab.report.progress import LineProgress, piped

    n_failed = 0
    lines = LineProgress("replay", len(wl)) if piped() and not quiet else None
    with (
        writer_cls(out / "requests.jsonl") as writer,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            # a log or a pipe gets the lines instead: a bar there would end in a blank line
            disable=quiet or lines is not None,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("replay", total=len(wl))

        def on_record(rec: Any) -> None:
            nonlocal n_failed
            done.append(rec)
            writer.write(rec)
            if rec.status == "failed":
                n_failed += 1
                progress.update(task, description=f"replay ({n_failed} failed)")
            progress.advance(task)
            if lines is not None:  # a log or a pipe: a line every tenth or 5 s
                lines.advance()

        return backend.run(wl, on_record=on_record)


def _fmt_ms(d: dict[str, Any] | None, key: str) -> str:
    v = (d or {}).get(key)
    return "-" if v is None else f"{1e3 * v:.1f} ms"


def _print_summary(s: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="kvlab replay", show_header=False)
    t.add_row(
        "requests ok / failed / unfinished",
        f"{s['num_completed']} / {s['num_failed']} / {s['num_unfinished']}",
    )
    t.add_row("TTFT p50 / p99", f"{_fmt_ms(s['ttft_s'], 'p50')} / {_fmt_ms(s['ttft_s'], 'p99')}")
    t.add_row("TPOT p50", _fmt_ms(s["tpot_s"], "p50"))
    rps = s.get("request_throughput_per_s")
    tps = s.get("output_throughput_tok_per_s")
    t.add_row("throughput", "-" if rps is None else f"{rps:.2f} req/s, {tps:.1f} output tok/s")
    hr = s.get("prefix_cache_hit_rate")
    t.add_row("prefix cache hit rate", "-" if hr is None else f"{100 * hr:.1f}%")
    pre = s.get("num_preemptions")
    t.add_row("preemptions (server)", "-" if pre is None else str(pre))
    t.add_row("achieved concurrency", f"{s.get('achieved_concurrency_mean') or 0:.1f}")
    late = s.get("send_lateness_s") or {}
    t.add_row("send lateness p99", _fmt_ms(late, "p99"))
    t.add_row("client saturated", str(s.get("client_saturated")))
    if s.get("errors_by_kind"):
        t.add_row("errors", ", ".join(f"{k} {v}" for k, v in s["errors_by_kind"].items()))
    if s.get("stopped"):
        t.add_row("stopped", s["stopped"])
    t.add_row("results", str(out))
    Console().print(t)


def register(app: typer.Typer) -> None:
    app.command("replay", rich_help_panel="Measure")(replay)


__all__ = ["register", "replay"]
