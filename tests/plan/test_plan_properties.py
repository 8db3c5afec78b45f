"""Property tests: invariants of the capacity computation on random small models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.models.spec import LayerSpec, ModelSpec
from kvlab.plan import cdiv, plan

SRC = Path(__file__).resolve().parents[2] / "src"


@st.composite
def models(draw: st.DrawFn) -> ModelSpec:
    kv = draw(st.sampled_from([1, 2, 4, 8]))
    head = draw(st.sampled_from([32, 64, 128]))
    n_full = draw(st.integers(1, 8))
    n_swa = draw(st.integers(0, 8))
    window = draw(st.integers(1, 4096))
    layers = [LayerSpec("full", num_kv_heads=kv, head_dim=head)] * n_full
    layers += [LayerSpec("sliding", num_kv_heads=kv, head_dim=head, window=window)] * n_swa
    order = draw(st.permutations(layers))
    return ModelSpec("rand", "Rand", tuple(order), kv * head, kv * 2, 1000, 10**8, 10**8, 1 << 20)


@settings(max_examples=60, deadline=None)
@given(
    spec=models(),
    memory=st.integers(1, 1 << 34),
    context=st.integers(1, 200_000),
    block=st.sampled_from([1, 16, 32, 64, 128]),
)
def test_capacity_invariants(spec: ModelSpec, memory: int, context: int, block: int) -> None:
    r = plan(spec, "h100", kv_cache_memory_bytes=memory, context_tokens=context, block_size=block)
    cap = r.capacity
    assert cap.num_gpu_blocks == memory // cap.bytes_per_block
    assert cap.bytes_per_block == max(g.bytes_per_block for g in cap.groups)
    assert sum(len(g.layers) for g in cap.groups) == spec.num_layers
    assert cap.max_concurrency == cap.num_gpu_blocks / cap.blocks_per_request
    assert cap.kv_cache_tokens == int(cap.max_concurrency * context)
    full = [g for g in cap.groups if g.kind == "full"]
    assert all(g.blocks_per_request(context, 0, 2) == cdiv(context, g.block_size) for g in full)
    if spec.count("sliding") == 0:
        assert cap.kv_cache_tokens <= cap.num_gpu_blocks * cap.block_size
    more = plan(
        spec, "h100", kv_cache_memory_bytes=2 * memory, context_tokens=context, block_size=block
    )
    assert more.num_gpu_blocks >= 2 * cap.num_gpu_blocks
    assert r.vllm_starts == (cap.bytes_per_request <= memory - cap.bytes_per_block)


@settings(max_examples=30, deadline=None)
@given(spec=models(), context=st.integers(1, 100_000))
def test_fp8_halves_every_page(spec: ModelSpec, context: int) -> None:
    a = plan(spec, "h100", kv_cache_memory_bytes=1 << 30, context_tokens=context, whatifs=False)
    b = plan(
        spec,
        "h100",
        kv_cache_memory_bytes=1 << 30,
        context_tokens=context,
        kv_dtype="fp8",
        whatifs=False,
    )
    assert 2 * b.capacity.bytes_per_block == a.capacity.bytes_per_block
    assert 2 * b.kv_bytes_per_token == a.kv_bytes_per_token
    assert b.num_gpu_blocks >= 2 * a.num_gpu_blocks


def test_plan_and_hardware_import_nothing_heavy() -> None:
    code = (
        "import sys, kvlab.plan, kvlab.hardware, kvlab.cli.plan, kvlab.cli.env;"
        "heavy = {'torch','transformers','aiohttp','matplotlib','pydantic','vllm','rich'};"
        "bad = sorted(heavy & {m.split('.')[0] for m in sys.modules});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
