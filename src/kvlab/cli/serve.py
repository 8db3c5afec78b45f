"""``kvlab serve vllm`` and ``kvlab serve llama.cpp``: start an inference server set up for
kvlab's measurements."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer

serve_app = typer.Typer(
    name="serve",
    help="Start an inference server set up for kvlab's measurements (vLLM, llama.cpp).",
    no_args_is_help=True,
)


@serve_app.command("vllm")
def vllm_cmd(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model directory or Hugging Face id (default: the preset's model).",
    ),
    python: str | None = typer.Option(
        None,
        "--python",
        help="Interpreter with vLLM installed (default: $KVLAB_VLLM_PYTHON, else this one).",
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        help="cpu (vLLM's CPU build) or gpu (default: gpu when nvidia-smi "
        "is on the PATH, else cpu).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    served_name: str | None = typer.Option(
        None,
        "--served-model-name",
        help="The model name clients send (default: tiny for a local directory, else the id).",
    ),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help="Context length (default: the preset's, else 256)."
    ),
    prefix_caching: bool | None = typer.Option(
        None,
        "--prefix-caching/--no-prefix-caching",
        help="Prefix caching on or off (default: the preset's, else vLLM's: on).",
    ),
    prompt_details: bool = typer.Option(
        True,
        "--prompt-tokens-details/--no-prompt-tokens-details",
        help="Report cached prompt tokens per request (kvlab's per-request hits).",
    ),
    block_size: int | None = typer.Option(None, "--block-size", help="Tokens per KV block."),
    kv_gib: int | None = typer.Option(
        None,
        "--kv-gib",
        help="KV memory in whole GiB (CPU build: VLLM_CPU_KVCACHE_SPACE, default 1; "
        "GPU: --kv-cache-memory-bytes).",
    ),
    gpu_util: float | None = typer.Option(
        None, "--gpu-memory-utilization", help="GPU: share of GPU memory vLLM may use."
    ),
    num_blocks: int | None = typer.Option(
        None, "--num-blocks", help="Override the number of KV blocks (forces KV pressure)."
    ),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Running sequences."),
    max_batched: int | None = typer.Option(
        None, "--max-num-batched-tokens", help="Token budget per engine step."
    ),
    preset: Path | None = typer.Option(
        None,
        "--preset",
        help="A `kvlab plan --json` result: model, context, block size, KV dtype, TP, "
        "max_num_seqs, max_num_batched_tokens, prefix caching, KV memory (options given "
        "here win).",
    ),
    log: Path | None = typer.Option(
        None, "--log", help="Server log file (default: ./vllm-PORT.log)."
    ),
    ready_timeout: float = typer.Option(
        300.0, "--ready-timeout", help="Seconds to wait for the server to be ready."
    ),
    extra: list[str] = typer.Option(
        [], "--arg", help="One more vLLM argument, passed as is (repeatable)."
    ),
    print_only: bool = typer.Option(
        False, "--print", help="Print the command line (with its environment) and exit."
    ),
    as_json: bool = typer.Option(False, "--json", help="With --print: the command as JSON."),
) -> None:
    """Start vLLM with what kvlab measures: /metrics, prefix caching on or off, cached prompt
    tokens per request, block size, KV memory or a block override, max_num_seqs,
    max_num_batched_tokens and the served model name. Waits until /health answers, says
    where the log goes, and runs until Ctrl-C, which stops every process of the server.

    Examples:

      kvlab serve vllm --model /tmp/tiny --python .venv-vllm/bin/python --port 8000

      kvlab serve vllm --model /tmp/tiny --num-blocks 4 --max-num-seqs 8 --print

      kvlab serve vllm --preset plan.json --device gpu --print
    """
    from kvlab.backends.vllm_server import VllmServer
    from kvlab.errors import ConfigError

    p = _preset(preset) if preset is not None else {}
    model = model or p.get("model")
    if not model:
        raise ConfigError("give --model (a model directory or Hugging Face id) or --preset")
    local = Path(model).is_dir()
    if local and not (Path(model) / "config.json").is_file():
        raise ConfigError(f"--model {model}: not a Hugging Face model directory (no config.json)")
    if Path(model).is_file():
        raise ConfigError(
            f"--model {model}: a file; give a model directory (with config.json) or a "
            "Hugging Face id"
        )
    if device is None:
        device = "gpu" if shutil.which("nvidia-smi") else "cpu"
    if device not in ("cpu", "gpu"):
        raise ConfigError(f"--device must be cpu or gpu, got {device!r}")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be within 1-65535, got {port}")
    if kv_gib is not None and kv_gib < 1:
        raise ConfigError(f"--kv-gib must be a whole number of GiB >= 1, got {kv_gib}")
    kv_bytes = p.get("kv_cache_memory_bytes")
    if kv_gib is not None and device == "gpu":
        kv_bytes = kv_gib * 2**30
    server = VllmServer(
        python=python or os.environ.get("KVLAB_VLLM_PYTHON") or sys.executable,
        model_dir=model,
        port=port,
        log_path=(log or Path(f"vllm-{port}.log")).absolute(),
        served_name=served_name or ("tiny" if local else model),
        max_model_len=max_model_len or p.get("max_model_len") or 256,
        kv_cache_space_gib=kv_gib or 1,
        extra_args=tuple(extra),
        host=host,
        device=device,
        enforce_eager=device == "cpu",
        dtype="bfloat16" if device == "cpu" else "auto",
        prefix_caching=p.get("prefix_caching") if prefix_caching is None else prefix_caching,
        prompt_tokens_details=prompt_details,
        block_size=block_size or p.get("block_size"),
        num_blocks_override=num_blocks,
        max_num_seqs=max_num_seqs or p.get("max_num_seqs"),
        max_num_batched_tokens=max_batched or p.get("max_num_batched_tokens"),
        kv_cache_memory_bytes=kv_bytes if device == "gpu" else None,
        gpu_memory_utilization=gpu_util
        or (p.get("gpu_memory_utilization") if device == "gpu" and kv_bytes is None else None),
        kv_cache_dtype=p.get("kv_cache_dtype"),
        tensor_parallel_size=p.get("tensor_parallel_size"),
        offline=local,
    )
    if print_only:
        _print_command(server, as_json)
        return
    from kvlab.cli.options import output_file

    output_file(server.log_path, "--log")
    _check_port_free(host, port)
    _run(server, ready_timeout)


def llamacpp_cmd(
    model: Path = typer.Option(
        ...,
        "--model",
        "-m",
        help="A .gguf file, or a Hugging Face model directory (converted to GGUF with "
        "llama.cpp's converter kept beside the binary by scripts/llama_cpp.sh).",
    ),
    binary: Path | None = typer.Option(
        None,
        "--binary",
        help="llama-server to run (default: $KVLAB_LLAMA_SERVER, else llama-server on the "
        "PATH, else the build of scripts/llama_cpp.sh).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    alias: str = typer.Option(
        "tiny", "--served-model-name", "--alias", help="The model name clients send."
    ),
    slots: int | None = typer.Option(
        None,
        "--slots",
        "--parallel",
        help="Sequences served at once (llama-server slots; default: the preset's "
        "concurrency, else 2).",
    ),
    ctx_per_slot: int | None = typer.Option(
        None,
        "--ctx-per-slot",
        help="Context tokens of each slot (--ctx-size is slots x this; default: the "
        "preset's context, else 512).",
    ),
    preset: Path | None = typer.Option(
        None,
        "--preset",
        help="A `kvlab plan --json` result: its concurrency and context set --slots and "
        "--ctx-per-slot (options given here win). The model stays --model (a GGUF).",
    ),
    prompt_cache: bool = typer.Option(
        True,
        "--prompt-cache/--no-prompt-cache",
        help="Reuse a slot's previous sequence as the prefix of the next prompt.",
    ),
    cache_ram_mib: int = typer.Option(
        0,
        "--cache-ram-mib",
        help="Host-memory prompt cache in MiB (0: off, so a request reuses exactly its "
        "slot's previous sequence, as kvlab's slot model assumes).",
    ),
    threads: int = typer.Option(1, "--threads", help="CPU threads for generation."),
    gguf_out: Path | None = typer.Option(
        None,
        "--gguf-out",
        help="Where a converted model directory's GGUF goes (default: MODEL_DIR.gguf beside "
        "the directory's name in the current directory).",
    ),
    log: Path | None = typer.Option(
        None, "--log", help="Server log file (default: ./llama-server-PORT.log)."
    ),
    ready_timeout: float = typer.Option(
        120.0, "--ready-timeout", help="Seconds to wait for the server to be ready."
    ),
    extra: list[str] = typer.Option(
        [], "--arg", help="One more llama-server argument, passed as is (repeatable)."
    ),
    print_only: bool = typer.Option(
        False, "--print", help="Print the command line and exit (converts nothing)."
    ),
    as_json: bool = typer.Option(False, "--json", help="With --print: the command as JSON."),
) -> None:
    """Start llama.cpp's llama-server with what kvlab measures: /metrics, /slots, prompt
    caching, a known number of slots and context per slot, and the served model name.
    Waits until /health answers, says where the log goes, and runs until Ctrl-C
    (exit 130). llama.cpp does not export KV-cache usage in /metrics; kvlab reads its
    prefix reuse from /slots and each response's timings.cache_n.

    Examples:

      kvlab serve llama.cpp --model tiny.gguf --port 8080

      kvlab serve llama.cpp --model /tmp/tiny --slots 4 --ctx-per-slot 1024 --print

      kvlab plan -m qwen2.5-0.5b --context 4096 --concurrency 4 --json > plan.json
      kvlab serve llama.cpp --model qwen.gguf --preset plan.json --print
    """
    from kvlab.backends.llamacpp_server import (
        LlamaServer,
        check_gguf,
        convert_to_gguf,
        converter_for,
        find_llama_server,
    )
    from kvlab.errors import ConfigError

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be within 1-65535, got {port}")
    if preset is not None:
        p = _preset(preset)
        if slots is None:
            slots = _positive_int(preset, "concurrency", p.get("concurrency", 2))
        if ctx_per_slot is None:
            ctx_per_slot = _positive_int(preset, "context_tokens", p["max_model_len"])
    slots = 2 if slots is None else slots
    ctx_per_slot = 512 if ctx_per_slot is None else ctx_per_slot
    for name, value in (
        ("--slots", slots),
        ("--ctx-per-slot", ctx_per_slot),
        ("--threads", threads),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if cache_ram_mib < 0:
        raise ConfigError(f"--cache-ram-mib must be >= 0, got {cache_ram_mib}")
    found, why = find_llama_server(binary)
    if found is None:
        raise ConfigError(why)
    if model.is_dir():
        if not (model / "config.json").is_file():
            raise ConfigError(f"{model}: not a Hugging Face model directory (no config.json)")
        gguf = (gguf_out or Path(f"{model.absolute().name}.gguf")).absolute()
    elif model.exists():
        gguf = check_gguf(model).absolute()
    else:
        raise ConfigError(f"--model {model}: no such file or directory")
    server = LlamaServer(
        binary=found,
        gguf=gguf,
        port=port,
        log_path=(log or Path(f"llama-server-{port}.log")).absolute(),
        slots=slots,
        ctx_per_slot=ctx_per_slot,
        alias=alias,
        host=host,
        threads=threads,
        cache_ram_mib=cache_ram_mib,
        prompt_cache=prompt_cache,
        extra_args=tuple(extra),
    )
    if print_only:
        _print_command(server, as_json)
        return
    from kvlab.cli.options import output_file

    output_file(server.log_path, "--log")
    if model.is_dir():
        output_file(gguf, "--gguf-out")
    _check_port_free(host, port)
    if model.is_dir():
        typer.echo(f"converting {model} to {gguf} ...", err=True)
        convert_to_gguf(model, gguf, converter_for(found))
    if _run(server, ready_timeout, "llama-server", quiet_stop=True):
        raise typer.Exit(130)


serve_app.command("llama.cpp")(llamacpp_cmd)
serve_app.command("llamacpp", hidden=True)(llamacpp_cmd)


def _check_port_free(host: str, port: int) -> None:
    """ConfigError when something already listens on ``host:port`` (vLLM would fail late)."""
    import socket

    from kvlab.errors import ConfigError

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); "
                "stop what uses it or pick another port"
            ) from None


def _preset(path: Path) -> dict[str, Any]:
    """The server settings of a ``kvlab plan --json`` result (ConfigError naming the file)."""
    from kvlab.errors import ConfigError

    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno}: not JSON: {e.msg}") from None
    if not isinstance(plan, dict) or "model" not in plan or "context_tokens" not in plan:
        raise ConfigError(f"{path}: not a `kvlab plan --json` result (no model, context_tokens)")
    out: dict[str, Any] = {"model": plan["model"], "max_model_len": plan["context_tokens"]}
    for key, name in (
        ("block_size", "block_size"),
        ("max_num_seqs", "max_num_seqs"),
        ("max_num_batched_tokens", "max_num_batched_tokens"),
        ("enable_prefix_caching", "prefix_caching"),
        ("gpu_memory_utilization", "gpu_memory_utilization"),
    ):
        if plan.get(key) is not None:
            out[name] = plan[key]
    if plan.get("concurrency") is not None:
        out["concurrency"] = plan["concurrency"]
    if isinstance(plan.get("tp"), int) and plan["tp"] > 1:
        out["tensor_parallel_size"] = plan["tp"]
    if str(plan.get("kv_dtype", "")).startswith("fp8"):
        out["kv_cache_dtype"] = "fp8"
    if plan.get("kv_memory_source") == "given" and plan.get("available_kv_bytes"):
        out["kv_cache_memory_bytes"] = int(plan["available_kv_bytes"])
    for key, value in out.items():
        if (
            key != "model"
            and key != "prefix_caching"
            and key != "kv_cache_dtype"
            and (not isinstance(value, int | float) or isinstance(value, bool) or value <= 0)
        ):
            raise ConfigError(f"{path}: field {key}: must be a positive number, got {value!r}")
    return out


def _positive_int(path: Path, field: str, value: object) -> int:
    from kvlab.errors import ConfigError

    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{path}: field {field}: must be a positive integer, got {value!r}")
    return value


def _print_command(server: Any, as_json: bool) -> None:
    env = {k: v for k, v in server.settings_env().items()}
    cmd = server.command()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "command": cmd,
                    "env": env,
                    "url": server.url,
                    "model": server.model,
                    "log": str(server.log_path),
                },
                indent=2,
            )
        )
        return
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    typer.echo(f"{prefix} {shlex.join(cmd)}" if prefix else shlex.join(cmd))


def _run(server: Any, ready_timeout: float, label: str = "vLLM", quiet_stop: bool = False) -> bool:
    """Start, wait with progress on stderr, then hold until Ctrl-C (or the server exits).
    True when Ctrl-C (or SIGTERM) stopped it. ``quiet_stop``: one line on Ctrl-C."""
    from kvlab.errors import BackendUnavailable

    interrupted = False
    typer.echo(f"starting {label} on {server.url}; log: {server.log_path}", err=True)
    # SIGTERM (a supervisor, `kill`) stops the server as Ctrl-C does; SIGINT is handled
    # even when the shell started this command in the background with it ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server.start()
    try:
        t0 = time.monotonic()
        while True:
            try:
                server.wait_ready(
                    timeout_s=min(10.0, max(0.1, ready_timeout - (time.monotonic() - t0)))
                )
                break
            except BackendUnavailable:
                if server.exit_code() is not None or time.monotonic() - t0 >= ready_timeout:
                    raise
                typer.echo(f"  waiting for /health ({time.monotonic() - t0:.0f} s)", err=True)
        typer.echo(
            f"ready in {time.monotonic() - t0:.0f} s: {server.url}/v1 (model {server.model}), "
            f"metrics {server.url}/metrics; Ctrl-C stops it",
            err=True,
        )
        while server.exit_code() is None:
            time.sleep(0.5)
        raise BackendUnavailable(
            f"{label} exited with code {server.exit_code()}; last lines of "
            f"{server.log_path}:\n{server.log_tail(20)}"
        )
    except KeyboardInterrupt:
        interrupted = True
        if not quiet_stop:
            typer.echo(f"stopping {label} ...", err=True)
    finally:
        server.stop()
    typer.echo(f"{label} stopped" + (" (Ctrl-C)" if quiet_stop and interrupted else ""), err=True)
    return interrupted


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
