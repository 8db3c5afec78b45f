"""The live-tier servers: real vLLM (CPU build) serving the tiny model."""

from __future__ import annotations

import json
import urllib.request

import pytest

from kvlab.backends.vllm_log import parse_kv_capacity
from kvlab.backends.vllm_server import VllmServer

pytestmark = pytest.mark.live


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_server_answers_with_exact_token_counts(vllm_server: VllmServer) -> None:
    out = _post(
        vllm_server.url + "/v1/completions",
        {
            "model": vllm_server.model,
            "prompt": " the keeper climbed the tower",
            "max_tokens": 7,
            "ignore_eos": True,
        },
    )
    usage = out["usage"]
    assert isinstance(usage, dict)
    assert usage["prompt_tokens"] == 5
    assert usage["completion_tokens"] == 7


def test_pressure_server_has_four_blocks(vllm_pressure_server: VllmServer) -> None:
    cap = parse_kv_capacity(vllm_pressure_server.log_text())
    assert cap is not None, vllm_pressure_server.log_text()[-2000:]
    assert cap.num_blocks_override == 4
    # 4 blocks of 128 tokens, 2 blocks per 256-token request.
    assert cap.max_concurrency_text == "2.00"
    assert cap.kv_cache_tokens == 512
    assert vllm_pressure_server.max_model_len == 256


def test_reset_prefix_cache_is_enabled(vllm_server: VllmServer) -> None:
    req = urllib.request.Request(vllm_server.url + "/reset_prefix_cache", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
