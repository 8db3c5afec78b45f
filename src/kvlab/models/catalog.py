"""Built-in catalog of public models, and :func:`get_model` to look one up.

Each entry is a compact, hand-written config dict holding only the fields the parser
reads, written from the model's public ``config.json`` (Hugging Face Hub), plus short
aliases. The full configs of some of them ship in ``kvlab/data/model_configs/``; the
tests check that both parse to the same :class:`ModelSpec`.

A name is resolved in this order: Hugging Face id (case-insensitive), alias
(case-insensitive), then a path to a ``config.json`` or a directory holding one.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError
from kvlab.models.hf import from_hf_config, load_config
from kvlab.models.hf.config import naming_file
from kvlab.models.spec import ModelSpec


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog model: Hugging Face id, aliases (first = the short name), config fields."""

    hf_id: str
    aliases: tuple[str, ...]
    config: Mapping[str, Any]
    description: str = ""


def _llama(hidden: int, inter: int, layers: int, heads: int, kv: int, **extra: Any) -> dict:
    cfg: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    cfg.update(extra)
    return cfg


def _qwen(mt: str, hidden: int, inter: int, layers: int, heads: int, kv: int, **extra: Any) -> dict:
    cfg: dict[str, Any] = {
        "model_type": mt,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "torch_dtype": "bfloat16",
    }
    if mt != "qwen2":
        cfg["head_dim"] = 128
    cfg.update(extra)
    return cfg


def _deepseek_v3() -> dict:
    return {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
        "moe_layer_freq": 1,
        "topk_method": "noaux_tc",
        "num_nextn_predict_layers": 1,
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
        },
        "vocab_size": 129280,
        "max_position_embeddings": 163840,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def _gpt_oss(layers: int, experts: int) -> dict:
    return {
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_hidden_layers": layers,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "attention_bias": True,
        "num_local_experts": experts,
        "num_experts_per_tok": 4,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * (layers // 2),
        "vocab_size": 201088,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "quantization_config": {
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
            "quant_method": "mxfp4",
        },
    }


def _qwen3_next() -> dict:
    return {
        "model_type": "qwen3_next",
        "hidden_size": 2048,
        "intermediate_size": 5120,
        "moe_intermediate_size": 512,
        "shared_expert_intermediate_size": 512,
        "num_hidden_layers": 48,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "head_dim": 256,
        "full_attention_interval": 4,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 32,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4,
        "num_experts": 512,
        "num_experts_per_tok": 10,
        "decoder_sparse_step": 1,
        "vocab_size": 151936,
        "max_position_embeddings": 262144,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def _nemotron_h(**fields: Any) -> dict:
    cfg: dict[str, Any] = {
        "model_type": "nemotron_h",
        "conv_kernel": 4,
        "n_groups": 8,
        "mamba_head_dim": 64,
        "vocab_size": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    cfg.update(fields)
    cfg["num_hidden_layers"] = len(cfg["hybrid_override_pattern"])
    return cfg


def _opt(hidden: int, ffn: int, layers: int, heads: int) -> dict:
    return {
        "model_type": "opt",
        "hidden_size": hidden,
        "ffn_dim": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "word_embed_proj_dim": hidden,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
        "do_layer_norm_before": True,
        "enable_bias": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
    }


_MISTRAL_7B = {
    "model_type": "mistral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

# Nemotron-H-8B: 24 Mamba-2, 4 attention, 24 MLP layers (published hybrid_override_pattern).
_NEMOTRON_H_8B_PATTERN = "M-M-M-M*-" + "M-M-M-M-M*-" * 3 + "M-M-M-M-M-"
_NEMOTRON_H_56B_PATTERN = "M-M-M-M*-" + "M-M-M-M-M*-" * 9 + "M-M-M-M-M-"
_NEMOTRON_3_NANO_PATTERN = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"  # 23 M, 23 E, 6 *

CATALOG: tuple[CatalogEntry, ...] = (
    # --- Llama ---
    CatalogEntry("meta-llama/Llama-3.1-8B", ("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B"),
                 _llama(4096, 14336, 32, 32, 8)),
    CatalogEntry("meta-llama/Llama-3.1-70B", ("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B"),
                 _llama(8192, 28672, 80, 64, 8)),
    CatalogEntry("meta-llama/Llama-3.1-405B",
                 ("llama-3.1-405b", "meta-llama/Meta-Llama-3.1-405B"),
                 _llama(16384, 53248, 126, 128, 8)),
    CatalogEntry("meta-llama/Llama-3.2-1B", ("llama-3.2-1b",),
                 _llama(2048, 8192, 16, 32, 8, head_dim=64, tie_word_embeddings=True)),
    CatalogEntry("meta-llama/Llama-3.2-3B", ("llama-3.2-3b",),
                 _llama(3072, 8192, 28, 24, 8, head_dim=128, tie_word_embeddings=True)),
    # --- Qwen ---
    CatalogEntry("Qwen/Qwen2.5-0.5B", ("qwen2.5-0.5b",),
                 _qwen("qwen2", 896, 4864, 24, 14, 2, max_position_embeddings=32768,
                       sliding_window=32768, max_window_layers=24, tie_word_embeddings=True)),
    CatalogEntry("Qwen/Qwen2.5-7B", ("qwen2.5-7b",),
                 _qwen("qwen2", 3584, 18944, 28, 28, 4, vocab_size=152064,
                       max_position_embeddings=131072, sliding_window=131072,
                       max_window_layers=28)),
    CatalogEntry("Qwen/Qwen2.5-72B", ("qwen2.5-72b",),
                 _qwen("qwen2", 8192, 29568, 80, 64, 8, vocab_size=152064,
                       max_position_embeddings=131072, sliding_window=131072,
                       max_window_layers=80)),
    CatalogEntry("Qwen/Qwen3-8B", ("qwen3-8b",), _qwen("qwen3", 4096, 12288, 36, 32, 8)),
    CatalogEntry("Qwen/Qwen3-32B", ("qwen3-32b",), _qwen("qwen3", 5120, 25600, 64, 64, 8)),
    CatalogEntry("Qwen/Qwen3-30B-A3B", ("qwen3-30b-a3b",),
                 _qwen("qwen3_moe", 2048, 6144, 48, 32, 4, moe_intermediate_size=768,
                       num_experts=128, num_experts_per_tok=8, decoder_sparse_step=1)),
    CatalogEntry("Qwen/Qwen3-235B-A22B", ("qwen3-235b-a22b",),
                 _qwen("qwen3_moe", 4096, 12288, 94, 64, 4, moe_intermediate_size=1536,
                       num_experts=128, num_experts_per_tok=8, decoder_sparse_step=1)),
    CatalogEntry("Qwen/Qwen3-Next-80B-A3B-Thinking", ("qwen3-next-80b-a3b-thinking",),
                 _qwen3_next()),
    CatalogEntry("Qwen/Qwen3-Next-80B-A3B-Instruct",
                 ("qwen3-next-80b-a3b", "qwen3-next-80b-a3b-instruct"), _qwen3_next()),
    # --- OpenAI ---
    CatalogEntry("openai/gpt-oss-20b", ("gpt-oss-20b",), _gpt_oss(24, 32),
                 "MoE experts ship in MXFP4, the rest in bf16"),
    CatalogEntry("openai/gpt-oss-120b", ("gpt-oss-120b",), _gpt_oss(36, 128),
                 "MoE experts ship in MXFP4, the rest in bf16"),
    # --- DeepSeek ---
    CatalogEntry("deepseek-ai/DeepSeek-V3", ("deepseek-v3",), _deepseek_v3(),
                 "linears ship in FP8 (128x128 block scales); the MTP layer is not counted"),
    CatalogEntry("deepseek-ai/DeepSeek-R1", ("deepseek-r1",), _deepseek_v3(),
                 "linears ship in FP8 (128x128 block scales); the MTP layer is not counted"),
    # --- Mistral ---
    CatalogEntry("mistralai/Mistral-7B-v0.1", ("mistral-7b", "mistral-7b-v0.1"),
                 {**_MISTRAL_7B, "vocab_size": 32000, "sliding_window": 4096}),
    CatalogEntry("mistralai/Mistral-7B-v0.3", ("mistral-7b-v0.3",),
                 {**_MISTRAL_7B, "vocab_size": 32768, "sliding_window": None}),
    CatalogEntry("mistralai/Mixtral-8x7B-v0.1", ("mixtral-8x7b",),
                 {**_MISTRAL_7B, "model_type": "mixtral", "vocab_size": 32000,
                  "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": None}),
    # --- Gemma ---
    CatalogEntry("google/gemma-2-9b", ("gemma-2-9b",), {
        "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
        "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 256, "sliding_window": 4096, "vocab_size": 256000,
        "max_position_embeddings": 8192, "torch_dtype": "float32",
    }),
    CatalogEntry("google/gemma-3-27b-it", ("gemma-3-27b", "google/gemma-3-27b-pt"), {
        "model_type": "gemma3", "torch_dtype": "bfloat16",
        "text_config": {
            "model_type": "gemma3_text", "hidden_size": 5376, "intermediate_size": 21504,
            "num_hidden_layers": 62, "num_attention_heads": 32, "num_key_value_heads": 16,
            "head_dim": 128, "sliding_window": 1024, "sliding_window_pattern": 6,
            "vocab_size": 262208, "max_position_embeddings": 131072,
        },
    }, "text model only (the SigLIP vision tower is not counted)"),
    # --- NVIDIA ---
    CatalogEntry("nvidia/Nemotron-H-8B-Base-8K", ("nemotron-h-8b",), _nemotron_h(
        hybrid_override_pattern=_NEMOTRON_H_8B_PATTERN, hidden_size=4096,
        intermediate_size=21504, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        mamba_num_heads=128, ssm_state_size=128, max_position_embeddings=8192)),
    CatalogEntry("nvidia/Nemotron-H-56B-Base-8K", ("nemotron-h-56b",), _nemotron_h(
        hybrid_override_pattern=_NEMOTRON_H_56B_PATTERN, hidden_size=8192,
        intermediate_size=32768, num_attention_heads=64, num_key_value_heads=8, head_dim=128,
        mamba_num_heads=256, ssm_state_size=256, max_position_embeddings=8192)),
    CatalogEntry("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
                 ("nemotron-3-nano-30b-a3b", "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B"),
                 _nemotron_h(
        hybrid_override_pattern=_NEMOTRON_3_NANO_PATTERN, hidden_size=2688,
        intermediate_size=1856, num_attention_heads=32, num_key_value_heads=2, head_dim=128,
        mamba_num_heads=64, ssm_state_size=128, max_position_embeddings=262144,
        n_routed_experts=128, n_shared_experts=1, num_experts_per_tok=6,
        moe_intermediate_size=1856, moe_shared_expert_intermediate_size=3712,
        mamba_ssm_cache_dtype="float32")),
    # --- AI21 ---
    CatalogEntry("ai21labs/Jamba-v0.1", ("jamba-v0.1",), {
        "model_type": "jamba", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "attn_layer_period": 8, "attn_layer_offset": 4, "expert_layer_period": 2,
        "expert_layer_offset": 1, "num_experts": 16, "num_experts_per_tok": 2,
        "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": 256,
        "mamba_conv_bias": True, "mamba_proj_bias": False, "vocab_size": 65536,
        "max_position_embeddings": 262144, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }),
    # --- Meta OPT ---
    CatalogEntry("facebook/opt-1.3b", ("opt-1.3b",), _opt(2048, 8192, 24, 32)),
    CatalogEntry("facebook/opt-2.7b", ("opt-2.7b",), _opt(2560, 10240, 32, 32)),
    # --- Microsoft Phi ---
    CatalogEntry("microsoft/phi-2", ("phi-2",), {
        "model_type": "phi", "hidden_size": 2560, "intermediate_size": 10240,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 51200, "max_position_embeddings": 2048, "tie_word_embeddings": False,
        "torch_dtype": "float16",
    }),
    CatalogEntry("microsoft/Phi-3-mini-4k-instruct", ("phi-3-mini-4k", "phi-3-mini"), {
        "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 32064, "max_position_embeddings": 4096, "sliding_window": 2047,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }, "vLLM applies the config's sliding_window 2047 to every layer"),
    CatalogEntry("microsoft/phi-4", ("phi-4",), {
        "model_type": "phi3", "hidden_size": 5120, "intermediate_size": 17920,
        "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 10,
        "vocab_size": 100352, "max_position_embeddings": 16384, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }),
)  # fmt: skip


def _key(name: str) -> str:
    return name.strip().lower()


def _index() -> dict[str, CatalogEntry]:
    out: dict[str, CatalogEntry] = {}
    for e in CATALOG:
        for k in (e.hf_id, *e.aliases):
            out[_key(k)] = e
    return out


_INDEX: dict[str, CatalogEntry] = _index()


@functools.cache
def _catalog_spec(hf_id: str) -> ModelSpec:
    entry = _INDEX[_key(hf_id)]
    spec = from_hf_config(entry.config, name=entry.hf_id)
    return replace(spec, aliases=entry.aliases, description=entry.description)


@functools.lru_cache(maxsize=64)
def _path_spec(path: str) -> ModelSpec:
    p = Path(path)
    with naming_file(p / "config.json" if p.is_dir() else p):
        cfg = load_config(p)
    if cfg.get("_name_or_path"):
        name = str(cfg["_name_or_path"])
    elif p.is_dir():
        name = p.name
    else:  # "org--model.json", as the shipped configs are named
        name = p.stem.replace("--", "/") if p.stem != "config" else p.parent.name
    with naming_file(p / "config.json" if p.is_dir() else p):
        return from_hf_config(cfg, name=name)


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` for a catalog id or alias (case-insensitive), or a path.

    A path is a ``config.json`` or a directory holding one. Raises ConfigError naming the
    closest catalog names when nothing matches.
    """
    entry = _INDEX.get(_key(name))
    if entry is not None:
        return _catalog_spec(entry.hf_id)
    path = Path(name).expanduser()
    if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
        return _path_spec(str(path.resolve()))
    close = difflib.get_close_matches(_key(name), list(_INDEX), n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown model {name!r}{hint} (see `kvlab models list`, or pass a config.json path)"
    )


def list_models() -> list[ModelSpec]:
    """Every catalog model, in catalog order."""
    return [_catalog_spec(e.hf_id) for e in CATALOG]


def catalog_entry(name: str) -> CatalogEntry:
    """The catalog entry for an id or alias; ConfigError if there is none."""
    entry = _INDEX.get(_key(name))
    if entry is None:
        get_model(name)  # raises with suggestions unless it is a path
        raise ConfigError(f"{name!r} is a path, not a catalog model")
    return entry


__all__ = ["CATALOG", "CatalogEntry", "catalog_entry", "get_model", "list_models"]
