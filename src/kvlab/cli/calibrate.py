"""``kvlab calibrate``: fit the simulator's step cost to replay runs of a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

HELP = """Fit a step cost to replay runs (or a designed sweep it runs) and write a calibration file.

The model: step_s = overhead_s + per_seq_s x sequences + per_token_s x tokens
+ per_kv_byte_s x KV bytes read + per_attn_pair_s x attention pairs, and
request_overhead_s per request before its first token (outside the engine's steps:
HTTP, tokenizing, the hand-over to the engine).
Observations come from the runs' streamed records: the gaps between a request's chunks
while every running request decodes (decode steps), and the time to first token of a
request that had the server to itself (one prefill step and the request overhead).

With --endpoint, a designed sweep is replayed first (its runs saved under --sweep-dir):
a warm-up that runs every decode batch size up to 64 once (not kept), lone requests of
prompt lengths from 32 tokens to the context limit (prefill observations), then bursts
of 1 to 16 requests at a short and a long prompt (decode observations where batch size
and context vary independently), three rounds, no round repeating a prompt length (a
server may run a token count it has run before faster). Where the server is vLLM, its
own timing histograms are read around each part and the fit is checked against them
(engine prefill time, time per output token).

The fit minimises relative residuals with Huber weights (robust to steps slowed by
other work on the machine), coefficients non-negative. Printed and saved: the fit error
per kind (MAPE, RMS, bias), the residuals per kind and size (a trend across sizes means
the model misses a term), and any coefficient the observations cannot tell apart.

The file is tied to the runs' settings (model, server, backend, block size): use it with
`kvlab simulate --calibration FILE` on the same model and server.

Examples:

  kvlab calibrate runs/chat-replay -o calib.json --model path/to/config.json
  kvlab calibrate --endpoint http://localhost:8000 --model path/to/config.json -o calib.json
"""


def _settings(runs: list[Any]) -> dict[str, Any]:
    """What the runs were measured on: their config and provenance keys that name
    the model, server, hardware and block settings."""
    keep = (
        "model",
        "endpoint",
        "base_url",
        "server",
        "backend",
        "block_size",
        "num_gpu_blocks",
        "max_num_seqs",
        "max_num_batched_tokens",
        "hardware",
        "platform",
        "host",
        "cpu",
        "gpu",
        "vllm_version",
        "token_ids",
        "history",
    )
    out: dict[str, Any] = {}
    for run in runs:
        server = run.config.get("server")
        cache = server.get("cache_config") if isinstance(server, dict) else None
        if isinstance(server, dict) and isinstance(server.get("kind"), str):
            out.setdefault("server_kind", server["kind"])
        for k in (
            "block_size",
            "num_gpu_blocks",
            "cache_dtype",
            "kv_cache_memory_bytes",
            "enable_prefix_caching",
        ):
            if isinstance(cache, dict) and isinstance(cache.get(k), str | int | float | bool):
                out.setdefault(k, cache[k])
        for src in (run.config, run.provenance):
            for k in keep:
                if k in src and k not in out and isinstance(src[k], str | int | float):
                    out[k] = src[k]
    return out


def calibrate_cmd(
    runs: list[Path] = typer.Argument(
        None, help="Replay run directories (requests.jsonl); optional with --endpoint."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Calibration file to write."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="The served model (id, alias or config.json) for its KV bytes per token; "
        "default: the runs' own model.",
    ),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV dtype (default: model's)."),
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        help="An OpenAI-compatible server to run the designed sweep against first.",
    ),
    sweep_dir: Path | None = typer.Option(
        None,
        "--sweep-dir",
        help="Where the sweep's runs go (default: OUTPUT without .json, plus -sweep); "
        "parts already there are kept.",
    ),
    quick: bool = typer.Option(False, "--quick", help="A smaller sweep (about a third)."),
    token_ids: bool = typer.Option(
        False,
        "--token-ids",
        help="The sweep asks for token ids with every request, as `kvlab replay --history "
        "server` does (sending them costs the server time per output token): calibrate "
        "with it for the runs you will simulate from server-history transcripts.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the calibration as JSON."),
) -> None:
    from kvlab.calibrate import fit, observations
    from kvlab.calibrate.check import check_table, server_check
    from kvlab.calibrate.sweep import QUICK, SweepDesign, load_timings, run_sweep, served_model
    from kvlab.cli.options import output_file
    from kvlab.errors import ConfigError
    from kvlab.models.catalog import get_model
    from kvlab.models.spec import kv_bytes_per_token
    from kvlab.results import RunResult

    output_file(output, "--output")  # before any sweep or run is read: a bad place is one line
    dirs = list(runs or [])
    if token_ids and endpoint is None:
        raise ConfigError("--token-ids is for the designed sweep: give --endpoint too")
    if endpoint is not None:
        served, limit = served_model(endpoint)
        spec = (QUICK if quick else SweepDesign()).fitted_to(limit or 2048)
        where = sweep_dir or output.with_name(output.stem + "-sweep")
        typer.echo(f"designed sweep against {endpoint} ({served}) into {where}", err=True)
        dirs += run_sweep(
            endpoint,
            served,
            where,
            spec,
            progress=lambda m: typer.echo(m, err=True),
            token_ids=token_ids,
        )
    if not dirs:
        raise ConfigError("give replay run directories, or --endpoint to run the designed sweep")
    loaded = []
    for d in dirs:
        typer.echo(f"reading {d}", err=True)
        loaded.append(RunResult.load(d))
    name = model or next((str(r.config["model"]) for r in loaded if r.config.get("model")), None)
    if name is None:
        raise ConfigError("the runs do not name their model: give --model")
    spec_m = get_model(name)
    bpt = float(kv_bytes_per_token(spec_m, kv_dtype, 1))
    obs, per_run = [], []
    for d, r in zip(dirs, loaded, strict=True):
        mine = observations(r.records, bpt, run=str(d))
        typer.echo(f"{d}: {len(mine)} step observations", err=True)
        obs.extend(mine)
        per_run.append((d, mine))
    cal = fit(obs, bpt, runs=[str(d) for d in dirs], settings=_settings(loaded))
    checks = []
    for d, mine in per_run:
        timings = load_timings(d)
        if timings:
            checks += server_check(cal, mine, timings, Path(d).name)
    doc = cal.to_dict()
    if checks:
        doc["server_check"] = checks
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(doc))
        return
    typer.echo(cal.model_text)
    for kind, err in sorted(cal.fit_error.items()):
        typer.echo(
            f"  {kind}: {cal.num_observations[kind]} observations, MAPE "
            f"{err['mape'] * 100:.1f}% (median {err.get('median_ape', 0.0) * 100:.1f}%), "
            f"RMS {err['rms_s'] * 1e3:.3f} ms, "
            f"bias {err['bias_s'] * 1e3:+.3f} ms"
        )
    typer.echo("residuals (predicted - measured), median per kind and size:")
    for res in cal.residuals:
        typer.echo(
            f"  {res['kind']:7s} {res['size']} {res['lo']:g}-{res['hi']:g}: n {res['n']}, "
            f"measured {res['measured_s'] * 1e3:.2f} ms, "
            f"residual {res['residual_s'] * 1e3:+.2f} ms ({res['relative'] * 100:+.1f}%)"
        )
    for note in cal.notes:
        typer.echo(f"note: {note}")
    if checks:
        typer.echo("checked against the server's own timings:")
        typer.echo(check_table(checks))
    typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command("calibrate", help=HELP)(calibrate_cmd)
