"""The parser registry: one family module per model family, each registering its types."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import kvlab.models.hf as hf
from kvlab.errors import ConfigError
from kvlab.models import SUPPORTED_MODEL_TYPES, from_hf_config
from kvlab.models.hf.registry import PARSERS, WRAPPERS, register, register_wrapper

#: Modules of kvlab.models.hf that are not model families.
INFRASTRUCTURE = {"config", "decoder", "layers", "params", "parse", "registry", "weight_format"}


def _family_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(hf.__path__)]
    return sorted(set(names) - INFRASTRUCTURE)


def test_supported_types_are_the_registered_ones() -> None:
    assert set(SUPPORTED_MODEL_TYPES) == set(PARSERS) | set(WRAPPERS)
    assert list(SUPPORTED_MODEL_TYPES) == sorted(SUPPORTED_MODEL_TYPES)
    assert not set(PARSERS) & set(WRAPPERS)


def test_every_family_module_registers_a_parser() -> None:
    families = _family_modules()
    assert families == [
        "deepseek",
        "gemma",
        "glm",
        "gpt_oss",
        "jamba",
        "llama",
        "nemotron_h",
        "opt",
        "phi",
        "qwen",
        "qwen3_next",
    ]
    for name in families:
        module = importlib.import_module(f"kvlab.models.hf.{name}")
        owned = {mt for mt, fn in PARSERS.items() if fn.__module__ == module.__name__}
        assert owned, f"{name} registers no parser"


def test_registering_a_type_twice_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="'llama' is registered twice"):
        register("llama")
    with pytest.raises(RuntimeError, match="'gemma3' is registered twice"):
        register_wrapper("gemma3")
    assert "llama" in PARSERS and "gemma3" in WRAPPERS


def test_wrapper_is_parsed_by_its_text_model_parser() -> None:
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    }
    wrapped = from_hf_config({"model_type": "gemma3", "text_config": text})
    direct = from_hf_config({"model_type": "gemma3_text", **text})
    assert wrapped == direct
    assert wrapped.architecture == "gemma3_text"


def test_unknown_model_type_error_is_unchanged() -> None:
    with pytest.raises(ConfigError) as e:
        from_hf_config({"model_type": "bloom"})
    assert str(e.value) == (
        "unsupported model_type 'bloom'; supported: deepseek_v2, deepseek_v3, gemma2, gemma3, "
        "gemma3_text, glm4_moe, gpt_oss, jamba, llama, mistral, mixtral, nemotron_h, opt, phi, "
        "phi3, qwen2, qwen2_moe, qwen3, qwen3_moe, qwen3_next"
    )
