"""GLM-4 MoE (``glm4_moe``) and Qwen2-MoE (``qwen2_moe``) configs.

The fixtures under ``fixtures/`` are configs in the shape their checkpoints publish
(transformers' Glm4MoeConfig and Qwen2MoeConfig field names): GLM-4.5-Air and
Qwen1.5-MoE-A2.7B.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvlab.models import from_hf_config, kv_bytes_per_token

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def test_glm_4_5_air() -> None:
    spec = from_hf_config(FIXTURES / "zai-org--GLM-4.5-Air.json")
    assert spec.architecture == "glm4_moe"
    assert len(spec.layers) == 46 and {x.kind for x in spec.layers} == {"full"}
    # 46 layers x (K + V) x 8 KV heads x head_dim 128 (not 4096 / 96) x 2 B
    assert kv_bytes_per_token(spec, "bf16") == 46 * 2 * 8 * 128 * 2 == 188_416
    # published: 106B total, 12B active (without the 2 x 151552 x 4096 embeddings)
    assert spec.num_params == pytest.approx(106e9, rel=0.01)
    emb = 2 * 151_552 * 4096
    assert spec.num_active_params - emb == pytest.approx(12e9, rel=0.02)


def test_qwen1_5_moe_a2_7b() -> None:
    spec = from_hf_config(FIXTURES / "Qwen--Qwen1.5-MoE-A2.7B.json")
    assert spec.architecture == "qwen2_moe"
    assert len(spec.layers) == 24 and {x.kind for x in spec.layers} == {"full"}
    assert kv_bytes_per_token(spec, "bf16") == 24 * 2 * 16 * 128 * 2 == 196_608
    # published: 14.3B total, 2.7B activated
    assert spec.num_params == pytest.approx(14.3e9, rel=0.01)
    assert spec.num_active_params == pytest.approx(2.7e9, rel=0.01)


def test_the_shared_expert_counts_in_qwen2_moe() -> None:
    cfg = _fixture("Qwen--Qwen1.5-MoE-A2.7B.json")
    with_shared = from_hf_config(cfg)
    without = from_hf_config({**cfg, "shared_expert_intermediate_size": 0})
    # per layer: a gated MLP of 5632 (3 x 2048 x 5632) and its gate (2048 -> 1)
    per_layer = 3 * 2048 * 5632 + 2048
    assert with_shared.num_params - without.num_params == 24 * per_layer
    assert with_shared.num_active_params - without.num_active_params == 24 * per_layer


def _shrunk(cfg: dict[str, Any]) -> dict[str, Any]:
    """The fixture at toy sizes (same fields), for transformers to build quickly."""
    small = dict(cfg)
    small.update(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, vocab_size=512)
    small["num_hidden_layers"] = 4
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids of the full vocabulary
        small.pop(key, None)
    if cfg["model_type"] == "glm4_moe":
        small.update(num_attention_heads=8, num_key_value_heads=2, head_dim=16)
        small.update(n_routed_experts=6, num_experts_per_tok=2, first_k_dense_replace=1)
        small["num_nextn_predict_layers"] = 0  # not counted by kvlab (see kvlab.models.hf.glm)
    else:
        small.update(num_attention_heads=4, num_key_value_heads=4, num_experts=6)
        small.update(num_experts_per_tok=2, shared_expert_intermediate_size=48)
        small.update(decoder_sparse_step=2, mlp_only_layers=[3])
    return small


@pytest.mark.hf
@pytest.mark.slow
@pytest.mark.parametrize("name", ["zai-org--GLM-4.5-Air.json", "Qwen--Qwen1.5-MoE-A2.7B.json"])
def test_count_equals_transformers(name: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = _shrunk(_fixture(name))
    mt = cfg["model_type"]
    if mt not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers has no {mt}")
    hf_cfg = transformers.CONFIG_MAPPING[mt](**{k: v for k, v in cfg.items() if k != "model_type"})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    n = sum(p.numel() for p in model.parameters())
    # the router's score-correction bias is a buffer in transformers, a tensor on disk
    n += sum(b.numel() for k, b in model.named_buffers() if k.endswith("e_score_correction_bias"))
    assert from_hf_config(cfg).num_params == n
