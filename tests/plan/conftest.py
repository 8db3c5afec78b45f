"""Hand-built ModelSpecs for the plan tests (numbers from the models' config.json)."""

from __future__ import annotations

import pytest

from kvlab.models.spec import LayerSpec, ModelSpec


def llama_8b() -> ModelSpec:
    """meta-llama/Llama-3.1-8B: 32 full layers, 8 KV heads x 128, 8.03e9 parameters."""
    full = LayerSpec("full", num_kv_heads=8, head_dim=128)
    return ModelSpec(
        name="meta-llama/Llama-3.1-8B",
        architecture="LlamaForCausalLM",
        layers=(full,) * 32,
        hidden_size=4096,
        num_attention_heads=32,
        vocab_size=128256,
        num_params=8_030_261_248,
        num_active_params=8_030_261_248,
        max_context=131072,
    )


def gpt_oss_20b() -> ModelSpec:
    """openai/gpt-oss-20b: 24 layers alternating sliding(128) / full, 8 KV heads x 64."""
    sliding = LayerSpec("sliding", num_kv_heads=8, head_dim=64, window=128)
    full = LayerSpec("full", num_kv_heads=8, head_dim=64)
    return ModelSpec(
        name="openai/gpt-oss-20b",
        architecture="GptOssForCausalLM",
        layers=(sliding, full) * 12,
        hidden_size=2880,
        num_attention_heads=64,
        vocab_size=201088,
        num_params=20_914_757_184,
        num_active_params=3_610_000_000,
        max_context=131072,
    )


def nemotron_h_like(state_dtype: str = "bfloat16") -> ModelSpec:
    """A Nemotron-H-8B-like hybrid: 24 Mamba-2 layers and 4 attention layers (8 x 128).

    Mamba-2: 128 heads x 64, d_state 128, n_groups 8, d_conv 4 ->
    SSM 128*64*128 = 1,048,576 elements, conv 3*(8192 + 2*8*128) = 30,720.
    """
    mamba = LayerSpec("mamba2", state_elems=1_048_576, conv_elems=30_720, state_heads=128)
    attn = LayerSpec("full", num_kv_heads=8, head_dim=128)
    layers = (
        (mamba,) * 6
        + (attn,)
        + (mamba,) * 6
        + (attn,)
        + (mamba,) * 6
        + (attn,)
        + (mamba,) * 6
        + (attn,)
    )
    return ModelSpec(
        name="nemotron-h-like",
        architecture="NemotronHForCausalLM",
        layers=layers,
        hidden_size=4096,
        num_attention_heads=32,
        vocab_size=131072,
        num_params=8_100_000_000,
        num_active_params=8_100_000_000,
        max_context=8192,
        state_dtype=state_dtype,
    )


def deepseek_mla_like() -> ModelSpec:
    """A DeepSeek-V3-like MLA model: 61 layers, latent 512 + rope 64."""
    mla = LayerSpec("mla", kv_lora_rank=512, qk_rope_head_dim=64)
    return ModelSpec(
        name="deepseek-mla-like",
        architecture="DeepseekV3ForCausalLM",
        layers=(mla,) * 61,
        hidden_size=7168,
        num_attention_heads=128,
        vocab_size=129280,
        num_params=671_000_000_000,
        num_active_params=37_000_000_000,
        max_context=163840,
    )


@pytest.fixture
def llama() -> ModelSpec:
    return llama_8b()


@pytest.fixture
def gpt_oss() -> ModelSpec:
    return gpt_oss_20b()


@pytest.fixture
def hybrid() -> ModelSpec:
    return nemotron_h_like()


@pytest.fixture
def mla() -> ModelSpec:
    return deepseek_mla_like()
