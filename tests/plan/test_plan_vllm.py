"""Differential tests: kvlab's capacity against vLLM's own kv_cache_utils.

The oracle script runs in a subprocess of ``$KVLAB_VLLM_PYTHON`` and builds
vLLM's KV cache specs (FullAttentionSpec, SlidingWindowSpec, MLAAttentionSpec,
MambaSpec) from a description of the model that does not go through kvlab's
page arithmetic, then calls ``get_kv_cache_configs`` and
``get_kv_cache_capacity``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kvlab.hardware import GIB
from kvlab.models.spec import ModelSpec
from kvlab.plan import PlanResult, plan

ORACLE = Path(__file__).with_name("vllm_oracle.py")

pytestmark = pytest.mark.vllm


_TORCH_DTYPE = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "float32": "float32",
    "fp8": "float8_e4m3fn",
}


def _describe(spec: ModelSpec, tp: int, kv_dtype: str | None) -> list[dict[str, Any]]:
    """vLLM's per-layer view of ``spec`` on one of ``tp`` GPUs (heads per GPU, head size)."""
    out: list[dict[str, Any]] = []
    for x in spec.layers:
        if x.kind in ("full", "sliding"):
            out.append(
                {
                    "kind": x.kind,
                    "num_kv_heads": max(1, x.num_kv_heads // tp),
                    "head_size": x.head_dim,
                    "window": x.window,
                }
            )
        elif x.kind == "mla":
            out.append({"kind": "mla", "head_size": x.kv_lora_rank + x.qk_rope_head_dim})
        else:
            shards = min(tp, x.state_heads) if x.state_heads else 1
            out.append(
                {
                    "kind": "mamba",
                    "shapes": [[x.conv_elems // shards], [x.state_elems // shards]],
                    "dtypes": [_TORCH_DTYPE[spec.dtype], _TORCH_DTYPE[spec.state_dtype]],
                }
            )
    return out


def _case(spec: ModelSpec, r: PlanResult, kv_dtype: str | None, tp: int) -> dict[str, Any]:
    layers = _describe(spec, tp, kv_dtype)
    for layer in layers:
        if layer["kind"] == "mamba":
            # vLLM pads a Mamba page to the attention page of the aligned block size.
            heads = next(x.num_kv_heads for x in spec.layers if x.kind == "full")
            head = next(x.head_dim for x in spec.layers if x.kind == "full")
            layer["page_padded"] = r.block_size * max(1, heads // tp) * 2 * head * 2
    return {
        "layers": layers,
        "dtype": _TORCH_DTYPE[kv_dtype or spec.dtype],
        "block_size": r.block_size,
        "max_model_len": r.context_tokens,
        "available_memory": r.available_kv_bytes,
        "max_num_batched_tokens": r.max_num_batched_tokens,
        "async_scheduling": r.async_scheduling,
        "mamba_cache_mode": "align" if r.enable_prefix_caching else "none",
    }


def _run_oracle(py: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    res = subprocess.run(
        [py, str(ORACLE)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_capacity_matches_vllm(
    llama: ModelSpec, gpt_oss: ModelSpec, mla: ModelSpec, hybrid: ModelSpec, vllm_python: str
) -> None:
    configs: list[tuple[ModelSpec, dict[str, Any]]] = [
        (llama, {"context_tokens": 8192, "kv_cache_memory_bytes": 10 * GIB}),
        (llama, {"context_tokens": 131072, "kv_cache_memory_bytes": 40 * GIB + 12345}),
        (llama, {"context_tokens": 4096, "kv_cache_memory_bytes": 3 * GIB, "kv_dtype": "fp8"}),
        (
            llama,
            {"context_tokens": 32768, "kv_cache_memory_bytes": 7 * GIB, "tp": 4, "block_size": 32},
        ),
        (llama, {"context_tokens": 256, "kv_cache_memory_bytes": GIB, "block_size": 128}),
        (gpt_oss, {"context_tokens": 131072, "kv_cache_memory_bytes": 10 * GIB}),
        (
            gpt_oss,
            {"context_tokens": 65536, "kv_cache_memory_bytes": 20 * GIB, "tp": 2, "block_size": 64},
        ),
        (
            gpt_oss,
            {
                "context_tokens": 4096,
                "kv_cache_memory_bytes": GIB,
                "block_size": 128,
                "max_num_batched_tokens": 2048,
                "async_scheduling": False,
            },
        ),
        (mla, {"context_tokens": 163840, "kv_cache_memory_bytes": 30 * GIB}),
        (mla, {"context_tokens": 4096, "kv_cache_memory_bytes": 2 * GIB, "tp": 8}),
        (hybrid, {"context_tokens": 8192, "kv_cache_memory_bytes": 10 * GIB}),
        (
            hybrid,
            {
                "context_tokens": 8192,
                "kv_cache_memory_bytes": 3 * GIB,
                "enable_prefix_caching": False,
            },
        ),
    ]
    plans = [(spec, kw, plan(spec, "h100-sxm", whatifs=False, **kw)) for spec, kw in configs]
    cases = [_case(spec, r, kw.get("kv_dtype"), kw.get("tp", 1)) for spec, kw, r in plans]
    answers = _run_oracle(vllm_python, cases)
    assert len(answers) == len(plans)
    refused = [kw for (_, kw, _), got in zip(plans, answers, strict=True) if "error" in got]
    assert not refused, refused  # every case here starts; refusal is tested below
    for (spec, kw, r), got in zip(plans, answers, strict=True):
        where = f"{spec.name} {kw}"
        if "error" in got:  # vLLM refuses to start: kvlab must say so too
            assert not r.vllm_starts, (
                f"{where}: vLLM refused ({got['error']}) but kvlab says it starts"
            )
            continue
        assert r.vllm_starts, f"{where}: vLLM starts but kvlab says it does not"
        assert r.capacity.bytes_per_block == got["bytes_per_block"], where
        assert r.num_gpu_blocks == got["num_blocks"], where
        assert r.kv_cache_tokens == got["kv_cache_tokens"], where
        assert r.max_concurrency == pytest.approx(got["max_concurrency"], rel=1e-12), where
        assert len(r.capacity.groups) == got["num_groups"], where
        assert sorted(len(g.layers) for g in r.capacity.groups) == got["group_sizes"], where


def test_vllm_refuses_when_one_request_does_not_fit(llama: ModelSpec, vllm_python: str) -> None:
    r = plan(
        llama, "h100-sxm", context_tokens=131072, kv_cache_memory_bytes=10 * GIB, whatifs=False
    )
    (got,) = _run_oracle(vllm_python, [_case(llama, r, None, 1)])
    assert "error" in got and "81904" in got["error"]
    assert r.estimated_max_model_len == 81904


def _random_specs(n: int, seed: int) -> list[tuple[ModelSpec, dict[str, Any]]]:
    """Random full / sliding / MLA-free mixes, including unequal page sizes."""
    import numpy as np

    from kvlab.models.spec import LayerSpec

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        head = int(rng.choice([64, 128]))
        kv_full = int(rng.choice([1, 2, 4, 8]))
        kv_swa = int(rng.choice([kv_full, kv_full * 2, max(1, kv_full // 2)]))
        window = int(rng.integers(1, 5000))
        n_full, n_swa = int(rng.integers(1, 10)), int(rng.integers(0, 20))
        layers = [LayerSpec("full", num_kv_heads=kv_full, head_dim=head)] * n_full
        layers += [LayerSpec("sliding", num_kv_heads=kv_swa, head_dim=head, window=window)] * n_swa
        layers = [layers[j] for j in rng.permutation(len(layers))]
        spec = ModelSpec(f"rand-{i}", "Rand", tuple(layers), 1024, 16, 1000, 10**8, 10**8, 1 << 20)
        kw = {
            "context_tokens": int(rng.integers(1, 300_000)),
            "kv_cache_memory_bytes": int(rng.integers(1 << 28, 1 << 36)),
            "block_size": int(rng.choice([16, 32, 64, 128])),
            "max_num_batched_tokens": int(rng.choice([512, 2048, 8192])),
            "async_scheduling": bool(rng.integers(0, 2)),
        }
        out.append((spec, kw))
    return out


@pytest.mark.slow
def test_random_mixes_match_vllm(vllm_python: str) -> None:
    configs = _random_specs(40, seed=7)
    plans = [(spec, kw, plan(spec, "h100-sxm", whatifs=False, **kw)) for spec, kw in configs]
    answers = _run_oracle(vllm_python, [_case(spec, r, None, 1) for spec, kw, r in plans])
    checked = 0
    for (spec, kw, r), got in zip(plans, answers, strict=True):
        where = f"{[(x.kind, x.num_kv_heads) for x in spec.layers]} {kw}"
        assert ("error" not in got) == r.vllm_starts, f"{where}: {got}"
        if "error" in got:
            continue
        checked += 1
        assert r.capacity.bytes_per_block == got["bytes_per_block"], where
        assert r.num_gpu_blocks == got["num_blocks"], where
        assert r.kv_cache_tokens == got["kv_cache_tokens"], where
        assert r.max_concurrency == pytest.approx(got["max_concurrency"], rel=1e-12), where
        assert sorted(len(g.layers) for g in r.capacity.groups) == got["group_sizes"], where
    assert checked >= 20


CATALOG_MODELS = (
    "meta-llama/Llama-3.1-70B",
    "Qwen/Qwen3-Next-80B-A3B-Thinking",
    "openai/gpt-oss-120b",
    "deepseek-ai/DeepSeek-V3",
    "mistralai/Mistral-7B-v0.1",
    "google/gemma-2-9b",
    "google/gemma-3-27b-it",
    "nvidia/Nemotron-H-8B-Base-8K",
    "nvidia/Nemotron-H-56B-Base-8K",
    "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
    "ai21labs/Jamba-v0.1",
    "microsoft/Phi-3-mini-4k-instruct",
)


def test_catalog_models_match_vllm(vllm_python: str) -> None:
    import kvlab.models.catalog as catalog

    configs = []
    for name in CATALOG_MODELS:
        spec = catalog.get_model(name)
        for tp in (1, 2):
            kw = {
                "context_tokens": min(spec.max_context, 32768),
                "kv_cache_memory_bytes": 20 * GIB + 777,
                "tp": tp,
            }
            configs.append((spec, kw))
    plans = [(spec, kw, plan(spec, "h100-sxm", whatifs=False, **kw)) for spec, kw in configs]
    answers = _run_oracle(vllm_python, [_case(spec, r, None, kw["tp"]) for spec, kw, r in plans])
    for (spec, kw, r), got in zip(plans, answers, strict=True):
        where = f"{spec.name} {kw}"
        assert "error" not in got, f"{where}: {got}"
        assert r.capacity.bytes_per_block == got["bytes_per_block"], where
        assert r.num_gpu_blocks == got["num_blocks"], where
        assert r.kv_cache_tokens == got["kv_cache_tokens"], where
        assert r.max_concurrency == pytest.approx(got["max_concurrency"], rel=1e-12), where
        assert sorted(len(g.layers) for g in r.capacity.groups) == got["group_sizes"], where
