"""``kvlab calibrate``: fit the simulator's step cost to replay runs of a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

HELP = """Fit a step cost to replay run directories and write a calibration file.

The model: step_s = overhead_s + per_token_s x tokens + per_kv_byte_s x KV bytes read,
and request_overhead_s per request before its first token (outside the engine's steps:
HTTP, tokenizing, the hand-over to the engine). Observations come from the runs'
streamed records: the gaps between a request's chunks while every running request
decodes (decode steps), and the time to first token of a request that had the server to
itself (one prefill step and the request overhead). The fit is least squares with
non-negative coefficients; its error (MAPE, RMS, bias per kind) is printed and saved.

The file is tied to the runs' settings (model, server, backend, block size): use it with
`kvlab simulate --calibration FILE` on the same model and server.

Example:

  kvlab calibrate runs/chat-replay -o calib.json --model path/to/config.json
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
    runs: list[Path] = typer.Argument(..., help="Replay run directories (requests.jsonl)."),
    output: Path = typer.Option(..., "--output", "-o", help="Calibration file to write."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="The served model (id, alias or config.json) for its KV bytes per token; "
        "default: the runs' own model.",
    ),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV dtype (default: model's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the calibration as JSON."),
) -> None:
    from kvlab.calibrate import fit, observations
    from kvlab.cli.options import output_file
    from kvlab.errors import ConfigError
    from kvlab.models.catalog import get_model
    from kvlab.models.spec import kv_bytes_per_token
    from kvlab.results import RunResult

    output_file(output, "--output")  # before the runs are read: a bad place is one line
    loaded = []
    for d in runs:
        typer.echo(f"reading {d}", err=True)
        loaded.append(RunResult.load(d))
    name = model or next((str(r.config["model"]) for r in loaded if r.config.get("model")), None)
    if name is None:
        raise ConfigError("the runs do not name their model: give --model")
    spec = get_model(name)
    bpt = float(kv_bytes_per_token(spec, kv_dtype, 1))
    obs = []
    for d, r in zip(runs, loaded, strict=True):
        mine = observations(r.records, bpt, run=str(d))
        typer.echo(f"{d}: {len(mine)} step observations", err=True)
        obs.extend(mine)
    cal = fit(obs, bpt, runs=[str(d) for d in runs], settings=_settings(loaded))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(cal.to_dict(), indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(cal.to_dict()))
        return
    c = cal.coefficients
    typer.echo(
        f"step_s = {c['overhead_s']:.6g} + {c['per_token_s']:.6g} x tokens "
        f"+ {c['per_kv_byte_s']:.6g} x KV bytes read; "
        f"request overhead {c['request_overhead_s'] * 1e3:.3f} ms before the first token"
    )
    for kind, err in sorted(cal.fit_error.items()):
        typer.echo(
            f"  {kind}: {cal.num_observations[kind]} observations, MAPE "
            f"{err['mape'] * 100:.1f}%, RMS {err['rms_s'] * 1e3:.3f} ms, "
            f"bias {err['bias_s'] * 1e3:+.3f} ms"
        )
    typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command("calibrate", help=HELP)(calibrate_cmd)
