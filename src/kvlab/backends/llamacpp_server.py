"""Start and stop a real llama.cpp ``llama-server`` as a child process.

``scripts/llama_cpp.sh`` builds llama-server (and keeps llama.cpp's HF-to-GGUF converter
beside it) once, into a cache outside the clone (:func:`cache_dir`); ``scripts/test.sh``
runs it and exports ``KVLAB_LLAMA_SERVER``. :func:`find_llama_server` looks for the
binary: an explicit path, else ``$KVLAB_LLAMA_SERVER``, else ``llama-server`` on the
PATH, else that cache. ``kvlab serve llama.cpp`` and the live test fixtures build their
servers here.

Conversion (:func:`convert_to_gguf`): llama.cpp's own ``convert_hf_to_gguf.py`` on a
Hugging Face model directory. For kvlab's tiny model (a directory with
``kvlab_tiny.json``, :func:`kvlab.backends.tiny_model.write_tiny_model`) two of its
checks are answered with what the tokenizer is: its byte-level BPE tokenizer (GPT-2's
pre-tokenizer, trained locally) is not in the converter's table of known tokenizer
hashes, and the converter tries SentencePiece first for Llama models; so ``gpt2``
vocabulary, ``gpt-2`` pre-tokenizer. Other models are converted as the converter sees them.

Servers run with ``--metrics``, ``--slots``, prompt caching on (``--cache-prompt``), a
known number of slots (``--parallel``, one KV sequence each: ``--no-kv-unified``) and
context per slot, and by default ``--cache-ram 0``: the host-memory prompt cache is off,
so what a request reuses is exactly its slot's previous sequence.

Invariant: after :meth:`LlamaServer.stop` returns, no process of the server's group is
left running (SIGTERM, then SIGKILL after ``stop_timeout_s``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kvlab.backends.server_process import ServerProcess
from kvlab.errors import BackendUnavailable, ConfigError

#: llama-cpp-python version whose vendored llama.cpp scripts/llama_cpp.sh builds.
LLAMA_CPP_PYTHON_VERSION = os.environ.get("KVLAB_LLAMA_CPP_PYTHON_VERSION", "0.3.36")

#: The first four bytes of every GGUF file.
GGUF_MAGIC = b"GGUF"

_CONVERT = """
import runpy, sys
from pathlib import Path
script, model, out, tiny = sys.argv[1:5]
here = Path(script).parent
sys.path[:0] = [str(here), str(here / "gguf-py")]
if tiny == "1":
    import conversion.base as base
    import conversion.llama as llama
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
    llama.LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2()
sys.argv = [script, model, "--outfile", out, "--outtype", "f32"]
runpy.run_path(script, run_name="__main__")
"""


def cache_dir() -> Path:
    """Where scripts/llama_cpp.sh builds (same defaults as the script)."""
    root = os.environ.get("KVLAB_LLAMA_CPP_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvlab" / "llama.cpp"
    )
    return Path(root) / LLAMA_CPP_PYTHON_VERSION


def find_llama_server(binary: str | Path | None = None) -> tuple[Path | None, str]:
    """(llama-server, "") when found, else (None, one line saying how to get it).

    Looked for in order: ``binary``, ``$KVLAB_LLAMA_SERVER``, ``llama-server`` on the
    PATH, the cache of scripts/llama_cpp.sh. An explicit path (argument or variable)
    that is not an executable file is not replaced by a later candidate."""
    explicit = binary or os.environ.get("KVLAB_LLAMA_SERVER")
    if explicit:
        path = Path(explicit)
    else:
        on_path = shutil.which("llama-server")
        path = Path(on_path) if on_path else cache_dir() / "bin" / "llama-server"
    if not path.is_file() or not os.access(path, os.X_OK):
        return None, (
            f"no llama-server at {path}: build it once with scripts/llama_cpp.sh "
            "(about 14 minutes on 2 cores), or give --binary / set KVLAB_LLAMA_SERVER"
        )
    return path, ""


def converter_for(binary: Path) -> Path:
    """convert_hf_to_gguf.py that scripts/llama_cpp.sh keeps beside the binary."""
    return binary.parent.parent / "convert" / "convert_hf_to_gguf.py"


def check_gguf(path: Path) -> Path:
    """``path`` when it is a readable GGUF file, else ConfigError naming it."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or e}") from None
    if magic != GGUF_MAGIC:
        raise ConfigError(
            f"{path}: not a GGUF file (starts with {magic!r}, not {GGUF_MAGIC!r}); give a "
            ".gguf file or a Hugging Face model directory"
        )
    return path


def convert_to_gguf(model_dir: Path, out: Path, converter: Path) -> Path:
    """The model directory as one f32 GGUF file (llama.cpp's converter); BackendUnavailable
    with the converter's last output when it fails."""
    if not converter.is_file():
        raise BackendUnavailable(
            f"no GGUF converter at {converter} (scripts/llama_cpp.sh keeps it beside the "
            "binary it builds); convert the model to .gguf and give that file"
        )
    tiny = "1" if (model_dir / "kvlab_tiny.json").is_file() else "0"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", _CONVERT, str(converter), str(model_dir), str(out), tiny],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not out.is_file():
        raise BackendUnavailable(f"GGUF conversion of {model_dir} failed:\n{proc.stderr[-3000:]}")
    return out


@dataclass
class LlamaServer(ServerProcess):
    """One llama-server process serving the GGUF file ``gguf`` as ``alias``.

    ``slots`` sequences run at once (``--parallel``), each with ``ctx_per_slot`` tokens
    of context (``--ctx-size`` is their product). ``cache_ram_mib`` is the host-memory
    prompt cache (0: off). ``extra_args`` are appended last."""

    server_name = "llama-server"
    ready_timeout_s = 60.0
    ready_poll_s = 0.2

    binary: Path
    gguf: Path
    port: int
    log_path: Path
    slots: int = 2
    ctx_per_slot: int = 512
    alias: str = "tiny"
    host: str = "127.0.0.1"
    threads: int = 1
    cache_ram_mib: int = 0
    prompt_cache: bool = True
    extra_args: Sequence[str] = ()
    stop_timeout_s: float = 10.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("slots", "ctx_per_slot", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cache_ram_mib < 0:
            raise ConfigError(f"cache_ram_mib must be >= 0, got {self.cache_ram_mib}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model(self) -> str:
        """The model name clients send."""
        return self.alias

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--model", str(self.gguf),
            "--alias", self.alias,
            "--host", self.host,
            "--port", str(self.port),
            "--ctx-size", str(self.slots * self.ctx_per_slot),
            "--parallel", str(self.slots),
            "--no-kv-unified",
            "--metrics",
            "--slots",
            "--cache-prompt" if self.prompt_cache else "--no-cache-prompt",
            "--cache-ram", str(self.cache_ram_mib),
            "--threads", str(self.threads),
            "--no-webui",
            *self.extra_args,
        ]  # fmt: skip

    def settings_env(self) -> dict[str, str]:
        """The environment variables the server gets on top of the caller's (none)."""
        return {}

    def start(self) -> LlamaServer:
        """Launch the process (returns at once; see :meth:`wait_ready`)."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        log = Path(self.log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as f:
            try:
                self._proc = subprocess.Popen(
                    self.command(),
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    process_group=0,
                )
            except OSError as e:
                raise BackendUnavailable(
                    f"cannot run llama-server {self.binary}: {e.strerror or e}"
                ) from None
        return self


__all__ = [
    "LlamaServer",
    "cache_dir",
    "check_gguf",
    "convert_to_gguf",
    "converter_for",
    "find_llama_server",
]
