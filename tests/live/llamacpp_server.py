"""A real llama.cpp ``llama-server`` for the live tier: the tiny model converted to GGUF.

``scripts/llama_cpp.sh`` builds llama-server (and keeps llama.cpp's HF-to-GGUF converter
beside it) once, into a cache outside the clone; ``scripts/test.sh`` runs it and exports
``KVLAB_LLAMA_SERVER``. Without that variable the default cache is looked at; when no
binary is there, the tests skip (or fail with ``KVLAB_REQUIRE_LIVE=1``) naming the script.

Conversion: llama.cpp's own ``convert_hf_to_gguf.py`` on the tiny model directory
(:func:`kvlab.backends.tiny_model.write_tiny_model`). Two of its checks are bypassed for
this model only: its byte-level BPE tokenizer (GPT-2's pre-tokenizer, trained locally) is
not in the converter's table of known tokenizer hashes, and the converter tries
SentencePiece first for Llama models. Both are answered with what the tokenizer is:
``gpt2`` vocabulary, ``gpt-2`` pre-tokenizer.

Servers run with ``--metrics``, ``--slots``, prompt caching on (the default), a known
number of slots and context per slot, and ``--cache-ram 0``: the host-memory prompt cache
is off, so what a request reuses is exactly its slot's previous sequence.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

#: llama-cpp-python version whose vendored llama.cpp scripts/llama_cpp.sh builds.
LLAMA_CPP_PYTHON_VERSION = os.environ.get("KVLAB_LLAMA_CPP_PYTHON_VERSION", "0.3.36")

_CONVERT = """
import runpy, sys
from pathlib import Path
script, model, out = sys.argv[1:4]
here = Path(script).parent
sys.path[:0] = [str(here), str(here / "gguf-py")]
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


def find_llama_server() -> tuple[Path | None, str]:
    """(llama-server, "") when built, else (None, why)."""
    env = os.environ.get("KVLAB_LLAMA_SERVER")
    path = Path(env) if env else cache_dir() / "bin" / "llama-server"
    if not path.is_file() or not os.access(path, os.X_OK):
        return None, (
            f"no llama-server at {path} (build it once with scripts/llama_cpp.sh, "
            "about 14 minutes on 2 cores; or set KVLAB_LLAMA_SERVER)"
        )
    return path, ""


def converter_for(binary: Path) -> Path:
    """convert_hf_to_gguf.py that scripts/llama_cpp.sh keeps beside the binary."""
    return binary.parent.parent / "convert" / "convert_hf_to_gguf.py"


def convert_to_gguf(model_dir: Path, out: Path, converter: Path) -> Path:
    """The tiny model directory as one f32 GGUF file (llama.cpp's converter)."""
    proc = subprocess.run(
        [sys.executable, "-c", _CONVERT, str(converter), str(model_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"GGUF conversion failed:\n{proc.stderr[-3000:]}")
    return out


@dataclass
class LlamaServer:
    """One llama-server child process (its own process group), logging to ``log_path``."""

    binary: Path
    model: Path
    port: int
    log_path: Path
    slots: int = 2
    ctx_per_slot: int = 512
    alias: str = "tiny"
    extra_args: tuple[str, ...] = ()
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--model", str(self.model),
            "--alias", self.alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--ctx-size", str(self.slots * self.ctx_per_slot),
            "--parallel", str(self.slots),
            "--no-kv-unified",
            "--metrics",
            "--slots",
            "--cache-prompt",
            "--cache-ram", "0",
            "--threads", "1",
            "--no-webui",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 60.0) -> LlamaServer:
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama-server exited {self._proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        p = self._proc
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


__all__ = [
    "LlamaServer",
    "cache_dir",
    "convert_to_gguf",
    "converter_for",
    "find_llama_server",
]
