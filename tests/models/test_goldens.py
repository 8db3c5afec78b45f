"""REFERENCE section 1 goldens: KV bytes per token, sliding caps, recurrent state, TP."""

from __future__ import annotations

import pytest

from kvlab.errors import ConfigError
from kvlab.models import (
    get_model,
    kv_bytes_per_token,
    sequence_bytes,
    sliding_cap_bytes,
    state_bytes_per_sequence,
)

MIB = 2**20

# (alias, layers, growing KV bytes per token in bf16)
BYTES_PER_TOKEN = [
    ("llama-3.1-8b", 32, 131_072),
    ("llama-3.1-70b", 80, 327_680),
    ("llama-3.1-405b", 126, 516_096),
    ("llama-3.2-1b", 16, 32_768),
    ("llama-3.2-3b", 28, 114_688),
    ("qwen2.5-0.5b", 24, 12_288),
    ("qwen2.5-7b", 28, 57_344),
    ("qwen2.5-72b", 80, 327_680),
    ("qwen3-8b", 36, 147_456),
    ("qwen3-32b", 64, 262_144),
    ("qwen3-235b-a22b", 94, 192_512),
    ("gpt-oss-120b", 36, 36_864),
    ("gpt-oss-20b", 24, 24_576),
    ("deepseek-v3", 61, 70_272),
    ("mistral-7b", 32, 0),
    ("gemma-3-27b", 62, 81_920),
    # 52 blocks in the config; the 24 MLP-only blocks hold no per-sequence memory and are
    # not layers of the ModelSpec (24 Mamba-2 + 4 attention remain).
    ("nemotron-h-8b", 28, 16_384),
    ("opt-1.3b", 24, 196_608),
]


@pytest.mark.parametrize(("name", "layers", "per_token"), BYTES_PER_TOKEN)
def test_bytes_per_token(name: str, layers: int, per_token: int) -> None:
    spec = get_model(name)
    assert spec.num_layers == layers
    assert kv_bytes_per_token(spec, "bf16") == per_token


@pytest.mark.parametrize(
    ("name", "cap_bytes"),
    [
        ("gpt-oss-120b", 4.5 * MIB),  # 18 SWA layers x 128 tokens x 8 x 64 x 2 x 2
        ("gpt-oss-20b", 3.0 * MIB),
        ("mistral-7b", 512 * MIB),  # 32 layers x 4096 tokens x 8 x 128 x 2 x 2
        ("gemma-3-27b", 416 * MIB),  # 52 local layers x 1024 x 16 x 128 x 2 x 2
    ],
)
def test_sliding_caps(name: str, cap_bytes: float) -> None:
    assert sliding_cap_bytes(get_model(name), "bf16") == cap_bytes


def test_layer_kind_counts() -> None:
    assert get_model("gpt-oss-120b").count("sliding") == 18
    assert get_model("gpt-oss-120b").count("full") == 18
    gemma = get_model("gemma-3-27b")
    assert (gemma.count("sliding"), gemma.count("full")) == (52, 10)
    assert all(x.window == 1024 for x in gemma.layers if x.kind == "sliding")
    nem = get_model("nemotron-h-8b")
    assert (nem.count("mamba2"), nem.count("full")) == (24, 4)
    jamba = get_model("jamba-v0.1")
    assert [i for i, x in enumerate(jamba.layers) if x.kind == "full"] == [4, 12, 20, 28]
    assert jamba.count("mamba1") == 28
    assert get_model("deepseek-v3").count("mla") == 61


def test_nemotron_h_8b_mamba_state() -> None:
    spec = get_model("nemotron-h-8b")
    # Mamba-2: SSM 128 heads x 64 x d_state 128; conv (4-1) x (8192 + 2 x 8 x 128).
    ssm, conv = 128 * 64 * 128, 3 * (128 * 64 + 2 * 8 * 128)
    bf16 = state_bytes_per_sequence(spec, state_dtype="bf16")
    assert bf16 == 24 * (ssm + conv) * 2
    assert round(bf16 / MIB, 1) == 49.4
    # vLLM's NemotronH default: SSM state in float32, conv state in the model dtype.
    assert spec.state_dtype == "float32"
    assert state_bytes_per_sequence(spec) == 24 * (ssm * 4 + conv * 2)


def test_jamba_and_qwen3_next_state() -> None:
    d_inner = 2 * 4096
    jamba = get_model("jamba-v0.1")
    assert state_bytes_per_sequence(jamba) == 28 * (d_inner * 16 + 3 * d_inner) * 2
    qn = get_model("qwen3-next-80b-a3b")
    per_layer = 32 * 128 * 128 + 3 * (2 * 16 * 128 + 32 * 128)
    assert qn.count("linear") == 36 and qn.count("full") == 12
    assert state_bytes_per_sequence(qn) == 36 * per_layer * 2
    assert kv_bytes_per_token(qn) == 12 * 2 * 2 * 256 * 2


def test_llama_8b_full_context() -> None:
    assert sequence_bytes(get_model("llama-3.1-8b"), 131_072) == 17_179_869_184


def test_fp8_halves() -> None:
    for name, _, per_token in BYTES_PER_TOKEN:
        spec = get_model(name)
        assert kv_bytes_per_token(spec, "fp8") * 2 == per_token
        assert sliding_cap_bytes(spec, "fp8") * 2 == sliding_cap_bytes(spec, "bf16")


def test_tp_shards_and_replicates() -> None:
    llama = get_model("llama-3.1-8b")  # 8 KV heads
    assert kv_bytes_per_token(llama, "bf16", tp=2) == 131_072 / 2
    assert kv_bytes_per_token(llama, "bf16", tp=8) == 131_072 / 8
    # TP 16 > 8 KV heads: each GPU holds a replica of one head.
    q = get_model("qwen2.5-0.5b")  # 2 KV heads, 14 query heads
    assert kv_bytes_per_token(q, "bf16", tp=2) == 12_288 / 2
    big = get_model("llama-3.1-405b")  # 128 query heads, 8 KV heads
    assert kv_bytes_per_token(big, "bf16", tp=16) == 126 * 2 * 1 * 128 * 2
    with pytest.raises(ConfigError, match="TP 3"):
        kv_bytes_per_token(llama, "bf16", tp=3)


def test_mla_not_sharded() -> None:
    ds = get_model("deepseek-v3")
    assert kv_bytes_per_token(ds, "bf16", tp=8) == 70_272
    assert sequence_bytes(ds, 1000, "bf16", tp=8) == 1000 * 70_272


def test_mistral_stops_growing_at_window() -> None:
    m = get_model("mistral-7b")
    per_token = 32 * 2 * 8 * 128 * 2
    assert sequence_bytes(m, 100, "bf16") == 100 * per_token
    assert sequence_bytes(m, 4096, "bf16") == 512 * MIB
    assert sequence_bytes(m, 32768, "bf16") == 512 * MIB
