"""Checkpoint weight formats: parameter breakdown, quantization_config, weights_bytes.

Expected counts are written out from the published configs (hidden 2880, 128 experts,
... for gpt-oss-120b; hidden 7168, 256 experts, ... for DeepSeek-V3), and expected bytes
from those counts: MXFP4 = 4 bits + one E8M0 byte per 32 weights = 17/32 byte (OCP
Microscaling Formats v1.0); FP8 = 1 byte + one float32 scale per 128 x 128 block
(DeepSeek-V3 config.json ``weight_block_size``); everything else bf16 (2 bytes).
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlab.errors import ConfigError
from kvlab.models import from_hf_config, get_model, list_models
from kvlab.models.spec import (
    PARAM_CATEGORIES,
    ModelSpec,
    WeightFormat,
    weights_bytes,
    weights_bytes_by_category,
    weights_format,
)

GIB = 2**30
CONFIGS = Path(__file__).resolve().parents[2] / "src" / "kvlab" / "data" / "model_configs"


def _shipped(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


# ---------------------------------------------------------------------------
# Breakdown by category, counted by hand
# ---------------------------------------------------------------------------


def _gpt_oss_breakdown(layers: int, experts: int) -> dict[str, int]:
    hidden, vocab, heads, kv, hd = 2880, 201088, 64, 8, 64
    q, kvo = heads * hd, kv * hd * 2
    return {
        "embedding": vocab * hidden,
        "lm_head": vocab * hidden,
        "attention": layers * (hidden * (q + kvo) + q * hidden),
        "experts": layers * experts * 3 * hidden * hidden,  # intermediate 2880
        "router": layers * (hidden * experts + experts),
        "norms": hidden * (2 * layers + 1),
        # q/k/v/o biases + 64 sinks + expert biases (gate_up 2*2880, down 2880)
        "biases": layers * (q + kvo + hidden + heads + experts * 3 * hidden),
    }


def _deepseek_v3_breakdown() -> dict[str, int]:
    hidden, vocab, heads, layers, dense, moe_layers = 7168, 129280, 128, 61, 3, 58
    attn = (
        hidden * 1536  # q_a_proj
        + 1536 * heads * (128 + 64)  # q_b_proj
        + hidden * (512 + 64)  # kv_a_proj_with_mqa
        + 512 * heads * (128 + 128)  # kv_b_proj
        + heads * 128 * hidden  # o_proj
    )
    return {
        "embedding": vocab * hidden,
        "lm_head": vocab * hidden,
        "attention": layers * attn,
        "mlp": dense * 3 * hidden * 18432,
        "experts": moe_layers * 256 * 3 * hidden * 2048,
        "shared_experts": moe_layers * 3 * hidden * 2048,
        "router": moe_layers * 256 * hidden,
        "norms": hidden + layers * (512 + 1536 + 2 * hidden),
        "biases": moe_layers * 256,  # e_score_correction_bias
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-oss-120b", _gpt_oss_breakdown(36, 128)),
        ("gpt-oss-20b", _gpt_oss_breakdown(24, 32)),
        ("deepseek-v3", _deepseek_v3_breakdown()),
    ],
)
def test_breakdown_by_hand(name: str, expected: dict[str, int]) -> None:
    spec = get_model(name)
    assert dict(spec.param_breakdown) == expected
    assert sum(expected.values()) == spec.num_params


def test_breakdown_covers_every_catalog_model() -> None:
    for spec in list_models():
        cats = [c for c, _ in spec.param_breakdown]
        assert cats == [c for c in PARAM_CATEGORIES if c in cats], spec.name
        assert sum(n for _, n in spec.param_breakdown) == spec.num_params, spec.name
        assert all(n > 0 for _, n in spec.param_breakdown), spec.name


# ---------------------------------------------------------------------------
# quantization_config
# ---------------------------------------------------------------------------


def test_gpt_oss_format_from_shipped_config() -> None:
    spec = from_hf_config(_shipped("openai--gpt-oss-120b"))
    assert spec.weight_format == WeightFormat("mxfp4", ("experts",))
    assert weights_format(spec) == "mxfp4 experts + bf16"


def test_deepseek_format_from_shipped_config() -> None:
    spec = from_hf_config(_shipped("deepseek-ai--DeepSeek-V3"))
    assert spec.weight_format == WeightFormat(
        "fp8", ("attention", "mlp", "experts", "shared_experts"), (128, 128)
    )
    assert weights_format(spec) == "fp8 linears + bf16"


def test_bf16_checkpoints_have_no_format() -> None:
    for name in ("nemotron-3-nano-30b-a3b", "qwen3-next-80b-a3b", "llama-3.1-8b"):
        spec = get_model(name)
        assert spec.weight_format is None
        assert weights_bytes(spec) == spec.num_params * 2
        assert weights_format(spec) == "bf16"


def _llama_cfg(**qc: object) -> dict:
    cfg = dict(_shipped("meta-llama--Meta-Llama-3.1-8B"))
    cfg["quantization_config"] = qc
    return cfg


def test_modules_to_not_convert_exclude_categories() -> None:
    cfg = _llama_cfg(
        quant_method="fp8",
        weight_block_size=[128, 128],
        modules_to_not_convert=["model.layers.*.self_attn", "lm_head"],
    )
    assert from_hf_config(cfg).weight_format == WeightFormat("fp8", ("mlp",), (128, 128))


def test_ignored_layers_and_last_component_decides() -> None:
    # "mlp.router" names the router only, not the whole MLP.
    cfg = _llama_cfg(quant_method="fp8", ignored_layers=["model.layers.0.mlp.router"])
    assert from_hf_config(cfg).weight_format == WeightFormat("fp8", ("attention", "mlp"))
    cfg = _llama_cfg(quant_method="fp8", ignored_layers=["model.layers.3.mlp"])
    assert from_hf_config(cfg).weight_format == WeightFormat("fp8", ("attention",))


def test_per_tensor_fp8_has_no_scale_bytes() -> None:
    spec = from_hf_config(_llama_cfg(quant_method="fp8"))
    quantized = spec.params_in("attention", "mlp")
    rest = spec.num_params - quantized
    assert weights_bytes(spec) == quantized + 2 * rest


def test_unknown_methods_keep_model_dtype() -> None:
    for qc in ({"quant_method": "awq", "bits": 4}, {"quant_method": "gptq"}, {}):
        spec = from_hf_config(_llama_cfg(**qc))
        assert spec.weight_format is None
        assert weights_bytes(spec) == spec.num_params * 2


@pytest.mark.parametrize("block", [[128], [0, 128], "128x128", [128.5, 128]])
def test_bad_block_size_is_a_config_error(block: object) -> None:
    with pytest.raises(ConfigError, match="weight_block_size"):
        from_hf_config(_llama_cfg(quant_method="fp8", weight_block_size=block))


def test_weight_format_validation() -> None:
    with pytest.raises(ConfigError, match="unknown weight format"):
        WeightFormat("nf4", ("experts",))
    with pytest.raises(ConfigError, match="categories"):
        WeightFormat("fp8", ("kv_cache",))
    spec = get_model("llama-3.1-8b")
    with pytest.raises(ConfigError, match="param_breakdown"):
        dataclasses.replace(spec, param_breakdown=(("mlp", 1),))
    with pytest.raises(ConfigError, match="needs a param_breakdown"):
        dataclasses.replace(spec, param_breakdown=(), weight_format=WeightFormat("fp8", ("mlp",)))


def test_spec_stays_hashable() -> None:
    a, b = get_model("gpt-oss-120b"), from_hf_config(_shipped("openai--gpt-oss-120b"))
    assert hash(dataclasses.replace(a, name="x", aliases=(), description="")) == hash(
        dataclasses.replace(b, name="x")
    )


# ---------------------------------------------------------------------------
# weights_bytes: exact, then against the public checkpoint sizes
# ---------------------------------------------------------------------------

MXFP4 = Fraction(1, 2) + Fraction(1, 32)  # 4.25 bits
FP8_128 = 1 + Fraction(4, 128 * 128)


def _expected(breakdown: dict[str, int], quantized: set[str], per: Fraction) -> Fraction:
    return sum(
        (n * (per if c in quantized else 2) for c, n in breakdown.items()), start=Fraction(0)
    )


def test_gpt_oss_120b_bytes_exact() -> None:
    spec = get_model("gpt-oss-120b")
    expected = _expected(_gpt_oss_breakdown(36, 128), {"experts"}, MXFP4)
    # experts 114,661,785,600 x 17/32 + 2,167,371,072 others x 2
    assert expected == 60_914_073_600 + 4_334_742_144
    assert weights_bytes(spec) == expected
    assert weights_bytes(spec, tp=4) == expected / 4
    assert sum(weights_bytes_by_category(spec).values()) == expected


def test_gpt_oss_20b_bytes_exact() -> None:
    spec = get_model("gpt-oss-20b")
    assert weights_bytes(spec) == _expected(_gpt_oss_breakdown(24, 32), {"experts"}, MXFP4)


def test_deepseek_v3_bytes_exact() -> None:
    spec = get_model("deepseek-v3")
    quantized = {"attention", "mlp", "experts", "shared_experts"}
    expected = _expected(_deepseek_v3_breakdown(), quantized, FP8_128)
    # 669,065,609,216 FP8 weights + 40,836,524 float32 scales + 1,960,809,984 bf16 others.
    # (The checkpoint pads kv_a_proj_with_mqa's 576 rows to 5 blocks of 128: 28 more
    # scales per layer, 6,832 bytes in all, not counted.)
    assert expected == 669_065_609_216 + 4 * 40_836_524 + 2 * 1_960_809_984
    assert weights_bytes(spec) == expected


@pytest.mark.parametrize(
    ("name", "public_gib", "rel_tol"),
    [
        # Hugging Face openai/gpt-oss-120b: about 60.8 GiB of safetensors; within 1%.
        ("gpt-oss-120b", 60.8, 0.01),
        # Hugging Face openai/gpt-oss-20b: about 12.8 GiB of safetensors; within 1%.
        ("gpt-oss-20b", 12.8, 0.01),
    ],
)
def test_against_public_checkpoint_size(name: str, public_gib: float, rel_tol: float) -> None:
    assert weights_bytes(get_model(name)) / GIB == pytest.approx(public_gib, rel=rel_tol)


def test_deepseek_v3_against_public_checkpoint_size() -> None:
    """deepseek-ai/DeepSeek-V3 on Hugging Face: 642 GiB of safetensors, including the
    multi-token-prediction layer (11.5B unique weights, mostly FP8 experts, plus its own
    bf16 copies of the embedding and head: about 14 GiB), which we do not count. So the
    main model should be 642 - 14 GiB, within 2 GiB."""
    gib = weights_bytes(get_model("deepseek-v3")) / GIB
    assert 642 - 14 - 2 <= gib <= 642 - 14 + 2


def test_explicit_weight_dtype_prices_every_weight() -> None:
    spec = get_model("gpt-oss-120b")
    assert weights_bytes(spec, weight_dtype="bf16") == spec.num_params * 2
    assert weights_bytes(spec, weight_dtype="fp8", tp=2) == spec.num_params / 2
    assert weights_format(spec, "fp8") == "fp8"
    assert weights_bytes_by_category(spec, weight_dtype="bf16")["experts"] == (
        2 * spec.params_in("experts")
    )


def test_before_after_figures() -> None:
    """Pricing every weight in bf16 (the old figure) vs the checkpoint as shipped."""
    for name, old_gib, new_gib in (
        ("gpt-oss-120b", 217.6, 60.8),
        ("gpt-oss-20b", 39.0, 12.8),
        ("deepseek-v3", 1249.9, 626.9),
    ):
        spec = get_model(name)
        assert weights_bytes(spec, weight_dtype="bf16") / GIB == pytest.approx(old_gib, abs=0.05)
        assert weights_bytes(spec) / GIB == pytest.approx(new_gib, abs=0.05)


@given(
    experts=st.integers(0, 10**9),
    rest=st.integers(1, 10**9),
    tp=st.integers(1, 16),
    method=st.sampled_from(["fp8", "mxfp4"]),
)
def test_quantized_never_above_bf16(experts: int, rest: int, tp: int, method: str) -> None:
    breakdown = (("experts", experts), ("norms", rest)) if experts else (("norms", rest),)
    spec = ModelSpec(
        name="t",
        architecture="t",
        layers=(),
        hidden_size=1,
        num_attention_heads=1,
        vocab_size=1,
        num_params=experts + rest,
        num_active_params=experts + rest,
        max_context=1,
        param_breakdown=breakdown,
        weight_format=WeightFormat(method, ("experts",), (128, 128) if method == "fp8" else None),
    )
    got = weights_bytes(spec, tp)
    per = Fraction(17, 32) if method == "mxfp4" else FP8_128
    assert got == pytest.approx(float((experts * per + 2 * rest) / tp), rel=1e-12)
    assert (experts / 2 + 2 * rest) / tp <= got <= weights_bytes(spec, tp, "bf16")
    assert got == pytest.approx(sum(weights_bytes_by_category(spec, tp).values()), rel=1e-12)
