"""``kvlab plan`` reproduces the KV capacity a real vLLM server logs at startup.

Each server's KV memory is read back from the server itself (the
``kv_cache_memory_bytes`` label of ``vllm:cache_config_info`` on /metrics,
which is VLLM_CPU_KVCACHE_SPACE GiB on the CPU build, cross-checked with the
CPU worker's "Explicitly set (X/...) GiB for KV cache" line); the plan is then
run on the model's config.json with that memory, the CPU block size and the
server's --max-model-len, and must print the same "KV cache size: N tokens"
and "Maximum concurrency ... X.XXx" as the server did.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvlab.backends.vllm_log import KvCapacityLog, parse_kv_capacity
from kvlab.backends.vllm_server import VllmServer

pytestmark = pytest.mark.live

GIB = 1024**3


def _cache_config_info(server: VllmServer) -> dict[str, str]:
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    m = re.search(r"^vllm:cache_config_info\{([^}]*)\}", text, re.MULTILINE)
    assert m is not None, "the server exports no vllm:cache_config_info"
    return dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))


def _logged(server: VllmServer) -> KvCapacityLog:
    cap = parse_kv_capacity(server.log_text())
    assert cap is not None, f"no capacity line in the log:\n{server.log_tail()}"
    return cap


def _plan_json(server: VllmServer, kv_bytes: int, block_size: int) -> dict[str, object]:
    from kvlab.cli.app import app

    args = [
        "plan",
        "--model",
        str(Path(server.model_dir) / "config.json"),
        "--kv-cache-memory-bytes",
        str(kv_bytes),
        "--block-size",
        str(block_size),
        "--context",
        str(server.max_model_len),
        "--json",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)  # type: ignore[no-any-return]


@pytest.mark.parametrize("which", ["vllm_server", "vllm_odd_server"])
def test_plan_reproduces_vllm_capacity_log(which: str, request: pytest.FixtureRequest) -> None:
    server: VllmServer = request.getfixturevalue(which)
    cap = _logged(server)
    info = _cache_config_info(server)
    kv_bytes = int(info["kv_cache_memory_bytes"])
    block_size = int(info["block_size"])
    assert cap.explicit_kv_gib is not None and kv_bytes == int(cap.explicit_kv_gib * GIB)
    assert cap.max_model_len == server.max_model_len

    plan = _plan_json(server, kv_bytes, block_size)
    assert plan["num_gpu_blocks"] == int(info["num_gpu_blocks"])
    assert plan["kv_cache_tokens"] == cap.kv_cache_tokens
    assert f"{plan['max_concurrency']:.2f}" == cap.max_concurrency_text
    # The plan's own rendering of vLLM's lines, device name aside.
    lines = plan["vllm_log"]
    assert isinstance(lines, list)
    assert lines[0].endswith(f"KV cache size: {cap.kv_cache_tokens:,} tokens")
    assert lines[1] == (
        f"Maximum concurrency for {cap.max_model_len:,} tokens per request: "
        f"{cap.max_concurrency_text}x"
    )


def test_block_override_uses_the_plans_blocks_per_request(
    vllm_pressure_server: VllmServer,
) -> None:
    cap = _logged(vllm_pressure_server)
    assert cap.num_blocks_override == 4
    info = _cache_config_info(vllm_pressure_server)
    plan = _plan_json(vllm_pressure_server, int(info["kv_cache_memory_bytes"]), 128)
    blocks_per_request = plan["blocks_per_request"]
    assert isinstance(blocks_per_request, int)
    concurrency = 4 / blocks_per_request
    assert f"{concurrency:.2f}" == cap.max_concurrency_text
    assert int(concurrency * vllm_pressure_server.max_model_len) == cap.kv_cache_tokens
