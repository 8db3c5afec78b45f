"""``--num-gpu-blocks-override``: the block count is fixed, and the figures vLLM logs follow.

The differential test sizes the same caches with vLLM's own ``get_kv_cache_configs`` and
``update_kv_cache_capacity`` (tests/plan/vllm_oracle.py, run in ``$KVLAB_VLLM_PYTHON``) and
compares the lines vLLM logs with the plan's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from test_plan_vllm import _case, _run_oracle

from cli_run import CliRun
from kvlab.errors import ConfigError
from kvlab.hardware import GIB
from kvlab.models.spec import ModelSpec
from kvlab.plan import plan
from kvlab.plan.groups import cdiv


def test_override_fixes_blocks_and_concurrency(llama: ModelSpec) -> None:
    r = plan(
        llama,
        "h100-sxm",
        context_tokens=4096,
        kv_cache_memory_bytes=10 * GIB,
        num_gpu_blocks_override=300,
        whatifs=False,
    )
    cap = r.capacity
    assert cap.num_gpu_blocks == 300
    assert cap.blocks_before_override == 10 * GIB // cap.bytes_per_block
    # 4096 tokens in 16-token blocks: 256 blocks a request.
    assert cap.blocks_per_request == cdiv(4096, 16) == 256
    assert r.max_concurrency == 300 / 256
    assert r.kv_cache_tokens == int(300 / 256 * 4096) == 4800
    assert cap.available_kv_bytes == 300 * cap.bytes_per_block
    assert cap.log_lines() == [
        f"Overriding num_gpu_blocks={cap.blocks_before_override} with num_gpu_blocks_override=300",
        "GPU KV cache size: 4,800 tokens",
        "Maximum concurrency for 4,096 tokens per request: 1.17x",
    ]
    assert r.vllm_starts
    assert r.to_dict()["num_gpu_blocks_override"] == 300


def test_override_too_small_for_one_request_refuses_to_start(llama: ModelSpec) -> None:
    # 256 blocks a request + the null block: 256 blocks are one short.
    r = plan(
        llama,
        "h100-sxm",
        context_tokens=4096,
        kv_cache_memory_bytes=10 * GIB,
        num_gpu_blocks_override=256,
        whatifs=False,
    )
    assert not r.vllm_starts and not r.fits
    assert r.estimated_max_model_len == 255 * 16
    ok = plan(
        llama,
        "h100-sxm",
        context_tokens=4096,
        kv_cache_memory_bytes=10 * GIB,
        num_gpu_blocks_override=257,
        whatifs=False,
    )
    assert ok.vllm_starts


def test_override_larger_than_the_gpu_does_not_fit(llama: ModelSpec) -> None:
    """Blocks whose tensors (with weights and overhead) exceed the device: vLLM fails
    allocating them at start-up, so the verdict is no, with the bytes named."""
    base = plan(llama, "h100-sxm", context_tokens=4096, whatifs=False)
    per_block = base.capacity.bytes_per_block
    room = base.gpu_memory_bytes - base.weights_bytes - base.overhead_bytes
    fits = plan(
        llama, "h100-sxm", context_tokens=4096, num_gpu_blocks_override=room // per_block,
        whatifs=False,
    )  # fmt: skip
    assert fits.fits
    big = plan(
        llama, "h100-sxm", context_tokens=4096, num_gpu_blocks_override=room // per_block + 1,
        whatifs=False,
    )  # fmt: skip
    assert big.vllm_starts and not big.fits
    assert any("vLLM would fail allocating the KV cache" in line for line in big.reasons)
    huge = plan(llama, "h100-sxm", num_gpu_blocks_override=10**20, whatifs=False)
    assert not huge.fits


def test_no_override_keeps_the_json_unchanged(llama: ModelSpec) -> None:
    d = plan(llama, "h100-sxm", context_tokens=4096, whatifs=False).to_dict()
    assert "num_gpu_blocks_override" not in d
    assert all(not line.startswith("Overriding") for line in d["vllm_log"])


def test_override_must_be_positive(llama: ModelSpec) -> None:
    with pytest.raises(ConfigError, match="num_gpu_blocks_override"):
        plan(llama, "h100-sxm", num_gpu_blocks_override=0)


def test_cli_prints_vllms_lines(cli: Callable[[list[str]], CliRun]) -> None:
    out = cli(
        [
            "plan",
            "--model",
            "meta-llama/Llama-3.1-8B",
            "--context",
            "4096",
            "--kv-cache-memory-bytes",
            str(10 * GIB),
            "--num-gpu-blocks-override",
            "300",
        ]
    )
    assert out.code == 0, out.err
    text = out.out
    assert "GPU KV cache size: 4,800 tokens" in text
    assert "Maximum concurrency for 4,096 tokens per request: 1.17x" in text
    assert "with num_gpu_blocks_override=300" in text


def test_cli_json_and_bad_value(cli: Callable[[list[str]], CliRun]) -> None:
    out = cli(["plan", "--context", "4096", "--num-gpu-blocks-override", "1000", "--json"])
    assert out.code == 0, out.err
    d = json.loads(out.out)
    assert d["num_gpu_blocks"] == 1000 and d["num_gpu_blocks_override"] == 1000
    bad = cli(["plan", "--num-gpu-blocks-override", "-3"])
    assert bad.code in (1, 2) and not bad.traceback
    assert "num_gpu_blocks_override" in bad.one_line_error()


@pytest.mark.vllm
def test_override_matches_vllms_log(
    llama: ModelSpec, gpt_oss: ModelSpec, hybrid: ModelSpec, vllm_python: str
) -> None:
    configs: list[tuple[ModelSpec, dict[str, Any]]] = [
        (llama, {"context_tokens": 4096, "num_gpu_blocks_override": 300}),
        (llama, {"context_tokens": 2048, "num_gpu_blocks_override": 5000, "block_size": 128}),
        (gpt_oss, {"context_tokens": 8192, "num_gpu_blocks_override": 4000}),
        (
            gpt_oss,
            {"context_tokens": 4096, "num_gpu_blocks_override": 777, "async_scheduling": False},
        ),
        (hybrid, {"context_tokens": 8192, "num_gpu_blocks_override": 123}),
        (
            hybrid,
            {"context_tokens": 8192, "num_gpu_blocks_override": 99, "enable_prefix_caching": False},
        ),
    ]
    plans = []
    for spec, kw in configs:
        r = plan(spec, "h100-sxm", kv_cache_memory_bytes=20 * GIB + 4321, whatifs=False, **kw)
        plans.append((spec, kw, r))
    cases = []
    for spec, kw, r in plans:
        case = _case(spec, r, kw.get("kv_dtype"), 1)
        case["num_gpu_blocks_override"] = kw["num_gpu_blocks_override"]
        cases.append(case)
    answers = _run_oracle(vllm_python, cases)
    checked = 0
    for (spec, kw, r), got in zip(plans, answers, strict=True):
        where = f"{spec.name} {kw}"
        assert "error" not in got, (where, got)
        assert r.num_gpu_blocks == got["num_blocks"] == kw["num_gpu_blocks_override"], where
        assert r.kv_cache_tokens == got["kv_cache_tokens"], where
        assert r.max_concurrency == pytest.approx(got["max_concurrency"], rel=1e-12), where
        logged = [line for line in got["log"] if "num_gpu_blocks" in line or "KV cache" in line]
        want = r.capacity.log_lines()
        assert logged[0] == want[0], where  # Overriding num_gpu_blocks=M with ...=N
        # vLLM logs the size and the concurrency on one line.
        assert logged[1] == f"{want[1]}, {want[2]}", where
        checked += 1
    print(f"override cases checked against vLLM: {checked}")
    assert checked == len(configs)
