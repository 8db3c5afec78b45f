"""from_hf_config: shipped configs, layer-kind rules, parameter counts, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kvlab.errors import ConfigError
from kvlab.models import (
    SUPPORTED_MODEL_TYPES,
    ModelSpec,
    catalog_entry,
    from_hf_config,
    get_model,
    kv_bytes_per_token,
)

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "kvlab" / "data" / "model_configs"
SHIPPED = sorted(CONFIGS.glob("*.json"))


def _strip(spec: ModelSpec) -> ModelSpec:
    return dataclasses.replace(spec, name="", aliases=(), description="")


def test_fifteen_configs_ship_with_licence() -> None:
    assert len(SHIPPED) == 15
    assert (CONFIGS / "LICENSE").is_file()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_equals_catalog_entry(path: Path) -> None:
    hf_id = path.stem.replace("--", "/")
    from_file = from_hf_config(path)
    entry = catalog_entry(hf_id)  # the catalog's compact, hand-written dict
    assert json.loads(path.read_text())["model_type"] in SUPPORTED_MODEL_TYPES
    assert _strip(from_file) == _strip(from_hf_config(entry.config))
    assert _strip(get_model(str(path))) == _strip(get_model(hf_id))


def test_from_hf_config_accepts_dict_file_and_directory(tmp_path: Path) -> None:
    src = CONFIGS / "meta-llama--Meta-Llama-3.1-8B.json"
    (tmp_path / "config.json").write_text(src.read_text())
    a = from_hf_config(json.loads(src.read_text()), name="x")
    b = from_hf_config(src, name="x")
    c = from_hf_config(tmp_path, name="x")
    d = ModelSpec.from_hf_config(str(tmp_path), name="x")
    assert a == b == c == d
    assert a.name == "x"


# (alias, official total, official active, tolerance, why the tolerance is not 1%)
OFFICIAL = [
    ("llama-3.1-8b", 8.03e9, None, 0.01, ""),
    ("llama-3.1-70b", 70.6e9, None, 0.01, ""),
    ("llama-3.1-405b", 405.9e9, None, 0.01, ""),
    ("llama-3.2-1b", 1.24e9, None, 0.01, ""),
    ("qwen2.5-7b", 7.62e9, None, 0.01, ""),
    ("qwen3-8b", 8.19e9, None, 0.01, ""),
    ("qwen3-32b", 32.8e9, None, 0.01, ""),
    ("qwen3-235b-a22b", 235e9, 22e9, 0.01, ""),
    ("mixtral-8x7b", 46.7e9, 12.9e9, 0.01, ""),
    ("mistral-7b", 7.24e9, None, 0.01, ""),
    # OPT-1.3b's "1.3B" is the rounded name; the checkpoint holds 1,315,758,080 weights.
    ("opt-1.3b", 1_315_758_080, None, 1e-9, ""),
    ("phi-3-mini", 3.82e9, None, 0.01, ""),
    ("phi-4", 14.7e9, None, 0.01, ""),
    ("gemma-3-27b", 27.0e9, None, 0.01, "text model; the 27.4B card figure adds SigLIP"),
    ("gemma-2-9b", 9.24e9, None, 0.01, ""),
    ("nemotron-h-56b", 56e9, None, 0.01, ""),
    ("nemotron-3-nano-30b-a3b", 31.6e9, 3.6e9, 0.01, "card: 3.6B active incl. embeddings"),
    ("jamba-v0.1", 51.6e9, 12e9, 0.01, ""),
    ("deepseek-v3", 671e9, None, 0.01, "671B excludes the 14B MTP module, as we do"),
    ("qwen3-next-80b-a3b", 80e9, None, 0.01, ""),
    ("gpt-oss-120b", 116.83e9, None, 0.01, ""),
    ("gpt-oss-20b", 20.91e9, None, 0.01, ""),
    # Qwen's cards truncate: 3.353B active (embeddings included, as for 235B-A22B) -> "3.3B".
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.02, "card truncates 3.35B to 3.3B"),
    # Nemotron-H-8B: 8.10B; the card's name rounds it to 8B.
    ("nemotron-h-8b", 8e9, None, 0.015, "card rounds 8.10B to 8B"),
]


@pytest.mark.parametrize(("name", "total", "active", "tol", "why"), OFFICIAL)
def test_parameter_counts_match_official_sizes(
    name: str, total: float, active: float | None, tol: float, why: str
) -> None:
    spec = get_model(name)
    assert abs(spec.num_params - total) <= tol * total, (spec.num_params, why)
    if active is not None:
        assert abs(spec.num_active_params - active) <= tol * active, (spec.num_active_params, why)
    else:
        assert spec.num_active_params <= spec.num_params


def _embedding(name: str) -> int:
    spec = get_model(name)
    return spec.vocab_size * spec.hidden_size


@pytest.mark.parametrize(("name", "active"), [("gpt-oss-120b", 5.13e9), ("gpt-oss-20b", 3.61e9)])
def test_gpt_oss_active_excludes_input_embedding(name: str, active: float) -> None:
    # OpenAI's model card counts the unembedding but not the embedding table as active.
    spec = get_model(name)
    assert abs(spec.num_active_params - _embedding(name) - active) <= 0.01 * active


def test_deepseek_v3_active() -> None:
    # "37B activated" is rounded: 37.55B with both embedding tables, 36.63B without the
    # input embedding; both are within 1.5% of 37B, neither within 1%.
    spec = get_model("deepseek-v3")
    assert abs(spec.num_active_params - 37e9) <= 0.015 * 37e9
    assert abs(spec.num_active_params - _embedding("deepseek-v3") - 37e9) <= 0.015 * 37e9


def test_qwen3_next_active() -> None:
    # "A3B" counts active weights without the two embedding tables (3.25B), rounded.
    spec = get_model("qwen3-next-80b-a3b")
    assert round((spec.num_active_params - 2 * _embedding("qwen3-next-80b-a3b")) / 1e9) == 3


def test_dense_active_equals_total() -> None:
    for name in ("llama-3.1-8b", "gemma-3-27b", "nemotron-h-56b", "opt-1.3b", "phi-2"):
        spec = get_model(name)
        assert spec.num_active_params == spec.num_params
        assert not spec.is_moe


# ---------------------------------------------------------------------------
# Layer-kind rules (vLLM's reading of sliding_window / layer_types)
# ---------------------------------------------------------------------------


def _llama_like(**extra: object) -> dict:
    cfg = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "max_position_embeddings": 256,
    }
    cfg.update(extra)
    return cfg


def test_qwen2_use_sliding_window_false_means_full() -> None:
    cfg = _llama_like(model_type="qwen2", sliding_window=32, use_sliding_window=False)
    spec = from_hf_config(cfg)
    assert spec.count("full") == 4


def test_qwen2_use_sliding_window_true_uses_max_window_layers() -> None:
    cfg = _llama_like(
        model_type="qwen2", sliding_window=32, use_sliding_window=True, max_window_layers=2
    )
    assert [x.kind for x in from_hf_config(cfg).layers] == ["full", "full", "sliding", "sliding"]


def test_sliding_window_without_layer_types_applies_to_all_layers() -> None:
    for mt in ("mistral", "phi3", "llama"):
        spec = from_hf_config(_llama_like(model_type=mt, sliding_window=16))
        assert spec.count("sliding") == 4
        assert {x.window for x in spec.layers} == {16}
    assert get_model("phi-3-mini").count("sliding") == 32
    assert get_model("mistral-7b-v0.3").count("full") == 32


def test_sliding_window_zero_means_none() -> None:
    assert from_hf_config(_llama_like(sliding_window=0)).count("full") == 4


def test_layer_types_win() -> None:
    cfg = _llama_like(
        model_type="mistral",
        sliding_window=16,
        layer_types=["full_attention", "sliding_attention", "full_attention", "full_attention"],
    )
    assert [x.kind for x in from_hf_config(cfg).layers] == ["full", "sliding", "full", "full"]


def test_gemma_patterns() -> None:
    g2 = from_hf_config(_llama_like(model_type="gemma2", head_dim=16, sliding_window=8))
    assert [x.kind for x in g2.layers] == ["sliding", "full", "sliding", "full"]
    g3 = from_hf_config(
        _llama_like(
            model_type="gemma3_text",
            num_hidden_layers=7,
            head_dim=16,
            sliding_window=8,
            sliding_window_pattern=3,
        )
    )
    assert [x.kind for x in g3.layers] == [
        "sliding",
        "sliding",
        "full",
        "sliding",
        "sliding",
        "full",
        "sliding",
    ]


def test_gemma3_multimodal_wrapper_uses_text_config() -> None:
    text = _llama_like(head_dim=16, sliding_window=8, num_hidden_layers=6)
    text.pop("model_type")
    spec = from_hf_config({"model_type": "gemma3", "text_config": text})
    assert spec.architecture == "gemma3_text"
    assert spec.count("full") == 1 and spec.count("sliding") == 5


def test_qwen3_next_interval() -> None:
    spec = get_model("qwen3-next-80b-a3b")
    assert [x.kind for x in spec.layers[:8]] == ["linear"] * 3 + ["full"] + ["linear"] * 3 + [
        "full"
    ]


def test_mla_layers() -> None:
    spec = get_model("deepseek-v3")
    layer = spec.layers[0]
    assert (layer.kv_lora_rank, layer.qk_rope_head_dim) == (512, 64)
    assert kv_bytes_per_token(spec, "bf16") == 61 * 576 * 2


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_unsupported_model_type_lists_supported() -> None:
    with pytest.raises(ConfigError) as e:
        from_hf_config({"model_type": "bloom", "hidden_size": 64})
    msg = str(e.value)
    assert "bloom" in msg and "llama" in msg and "nemotron_h" in msg
    assert "\n" not in msg


def test_unknown_pattern_char() -> None:
    cfg = dict(catalog_entry("nemotron-h-8b").config)
    cfg["hybrid_override_pattern"] = "M*X" + cfg["hybrid_override_pattern"][3:]
    with pytest.raises(ConfigError, match=r"hybrid_override_pattern\[2\] = 'X'"):
        from_hf_config(cfg)


def test_unknown_layer_type() -> None:
    cfg = _llama_like(layer_types=["full_attention", "conv", "full_attention", "full_attention"])
    with pytest.raises(ConfigError, match=r"layer_types\[1\] = 'conv'"):
        from_hf_config(cfg)


def test_missing_field_is_named() -> None:
    cfg = _llama_like()
    del cfg["hidden_size"]
    with pytest.raises(ConfigError, match="'hidden_size' is missing"):
        from_hf_config(cfg)


def test_layer_types_length_checked() -> None:
    with pytest.raises(ConfigError, match="layer_types"):
        from_hf_config(_llama_like(layer_types=["full_attention"]))


def test_bad_values() -> None:
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        from_hf_config(_llama_like(num_hidden_layers=0))
    with pytest.raises(ConfigError, match="num_attention_heads"):
        from_hf_config(_llama_like(num_attention_heads="4"))
    with pytest.raises(ConfigError, match="head_dim"):
        from_hf_config(_llama_like(num_attention_heads=5))


def test_bad_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config\.json"):
        from_hf_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        from_hf_config(tmp_path)
