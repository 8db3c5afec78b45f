"""Start and stop a real vLLM OpenAI-compatible server as a child process.

Used by the live test tier and by demos: ``VllmServer`` runs
``python -m vllm.entrypoints.openai.api_server`` from a given interpreter (the
CPU build of vLLM lives in its own virtual environment), captures its stdout
and stderr in a log file, waits for ``GET /health``, and terminates the whole
process group on :meth:`VllmServer.stop` (vLLM forks an engine-core and worker
processes).

The settings kvlab's measurements depend on are fields, each one flag of vLLM
(None: the flag is left out and vLLM's default holds): prefix caching on or off,
prompt-token details (``usage.prompt_tokens_details.cached_tokens``, the per
request hits), block size, a block-count override, ``max_num_seqs``,
``max_num_batched_tokens``, the KV memory (the CPU build:
``VLLM_CPU_KVCACHE_SPACE`` in whole GiB; a GPU: ``--kv-cache-memory-bytes`` or
``--gpu-memory-utilization``), KV dtype and tensor parallelism. ``/metrics`` is
on in every vLLM server (kvlab never passes ``--disable-log-stats``). ``kvlab
serve vllm`` and the live test fixtures build their servers here.

Invariant: after :meth:`stop` returns, no process of the server's group is
left running (SIGTERM, then SIGKILL after ``stop_timeout_s``).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.backends.server_process import ServerProcess
from kvlab.errors import BackendUnavailable, ConfigError


def free_port(port_range: tuple[int, int] | None = None, exclude: Iterable[int] = ()) -> int:
    """A TCP port free on 127.0.0.1: any (the OS picks) or the first free one in a range."""
    skip = set(exclude)
    if port_range is None:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in skip:
                return port
        raise BackendUnavailable("no free TCP port found on 127.0.0.1")
    lo, hi = port_range
    for port in range(lo, hi + 1):
        if port in skip:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise BackendUnavailable(f"no free TCP port in {lo}-{hi}; stop other servers or widen it")


def parse_port_range(text: str) -> tuple[int, int]:
    """``"18200-18299"`` -> (18200, 18299)."""
    try:
        lo_s, hi_s = text.split("-", 1)
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise ConfigError(f"port range must look like 18200-18299, got {text!r}") from None
    if not 0 < lo <= hi < 65536:
        raise ConfigError(f"port range {text!r} is not within 1-65535 in increasing order")
    return lo, hi


@dataclass
class VllmServer(ServerProcess):
    """One vLLM server process serving ``model_dir`` as ``served_name``.

    ``device`` is ``"cpu"`` (vLLM's CPU build) or ``"gpu"``. On the CPU build
    ``kv_cache_space_gib`` sets ``VLLM_CPU_KVCACHE_SPACE`` (its KV memory, whole
    GiB); on a GPU ``kv_cache_memory_bytes`` or ``gpu_memory_utilization`` size the
    KV cache. The other optional settings are the flags in :meth:`settings_args`.
    ``extra_args`` are appended last (e.g. ``["--seed", "1"]``). ``offline``
    keeps vLLM off the Hugging Face Hub (a local model directory); a Hub model
    id needs ``offline=False``.
    """

    server_name = "vLLM server"
    ready_timeout_s = 240.0
    ready_poll_s = 0.5

    python: str
    model_dir: str | Path
    port: int
    log_path: str | Path
    served_name: str = "tiny"
    max_model_len: int = 256
    kv_cache_space_gib: int = 1
    extra_args: Sequence[str] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    stop_timeout_s: float = 15.0
    host: str = "127.0.0.1"
    device: str = "cpu"
    dtype: str = "bfloat16"
    enforce_eager: bool = True
    prefix_caching: bool | None = None
    prompt_tokens_details: bool = False
    block_size: int | None = None
    num_blocks_override: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_dtype: str | None = None
    tensor_parallel_size: int | None = None
    offline: bool = True
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model(self) -> str:
        return self.served_name

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise ConfigError(f"device must be cpu or gpu, got {self.device!r}")
        for name in (
            "block_size",
            "num_blocks_override",
            "max_num_seqs",
            "max_num_batched_tokens",
            "kv_cache_memory_bytes",
            "tensor_parallel_size",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.max_model_len < 1 or self.kv_cache_space_gib < 1:
            raise ConfigError("max_model_len and kv_cache_space_gib must be at least 1")
        u = self.gpu_memory_utilization
        if u is not None and not 0 < u <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {u}")

    def command(self) -> list[str]:
        """The server's command line: the interpreter, vLLM's API server module, then
        the model, name, address, context, :meth:`settings_args` and ``extra_args``."""
        return [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--max-model-len",
            str(self.max_model_len),
            *(["--enforce-eager"] if self.enforce_eager else []),
            "--dtype",
            self.dtype,
            *self.settings_args(),
            *self.extra_args,
        ]

    def settings_args(self) -> list[str]:
        """The flags of the optional settings that are set, in a fixed order."""
        args: list[str] = []
        if self.prefix_caching is not None:
            args.append(
                "--enable-prefix-caching" if self.prefix_caching else "--no-enable-prefix-caching"
            )
        if self.prompt_tokens_details:
            args.append("--enable-prompt-tokens-details")
        for flag, value in (
            ("--block-size", self.block_size),
            ("--num-gpu-blocks-override", self.num_blocks_override),
            ("--max-num-seqs", self.max_num_seqs),
            ("--max-num-batched-tokens", self.max_num_batched_tokens),
            ("--kv-cache-dtype", self.kv_cache_dtype),
            ("--tensor-parallel-size", self.tensor_parallel_size),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.device == "gpu":
            if self.kv_cache_memory_bytes is not None:
                args += ["--kv-cache-memory-bytes", str(self.kv_cache_memory_bytes)]
            if self.gpu_memory_utilization is not None:
                args += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        return args

    def settings_env(self) -> dict[str, str]:
        """The environment variables the server gets on top of the caller's."""
        env = {}
        if self.device == "cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_space_gib)
        if self.offline:  # a local model directory: never reach for the Hub
            env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        env.update(
            {
                "VLLM_SERVER_DEV_MODE": "1",  # enables POST /reset_prefix_cache
                "VLLM_NO_USAGE_STATS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings_env())
        # The parent's PYTHONPATH (kvlab's src) must not leak into vLLM's interpreter.
        env.pop("PYTHONPATH", None)
        env.update(self.extra_env)
        return env

    def start(self) -> VllmServer:
        """Launch the process (returns at once; see :meth:`wait_ready`)."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        log = Path(self.log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as f:
            self._proc = self._popen(f, log)
        return self

    def _popen(self, f: Any, log: Path) -> subprocess.Popen[bytes]:
        """The server process; BackendUnavailable when the interpreter cannot be run."""
        try:
            return subprocess.Popen(
                self.command(),
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                cwd=str(log.parent),
                # Its own process group (so stop() can signal every process vLLM
                # forks) but NOT a new session: Linux's scheduler autogroups are per
                # session, and in a session of its own the server's API process starves
                # behind its busy engine and worker processes (client TTFT 5-10x vLLM's).
                process_group=0,
            )
        except OSError as e:
            raise BackendUnavailable(
                f"cannot run the vLLM interpreter {self.python}: {e.strerror or e}"
            ) from None


__all__ = ["VllmServer", "free_port", "parse_port_range"]
