"""The built-in catalog and get_model's name resolution."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kvlab.errors import ConfigError
from kvlab.models import CATALOG, get_model, list_models

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "kvlab" / "data" / "model_configs"

REQUIRED = [
    "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B",
    "meta-llama/Llama-3.1-405B",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-3B",
    "Qwen/Qwen2.5-0.5B",
    "Qwen/Qwen2.5-7B",
    "Qwen/Qwen2.5-72B",
    "Qwen/Qwen3-8B",
    "Qwen/Qwen3-32B",
    "Qwen/Qwen3-30B-A3B",
    "Qwen/Qwen3-235B-A22B",
    "qwen3-next-80b-a3b",
    "openai/gpt-oss-20b",
    "openai/gpt-oss-120b",
    "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1",
    "mistralai/Mistral-7B-v0.1",
    "mistralai/Mistral-7B-v0.3",
    "mistralai/Mixtral-8x7B-v0.1",
    "google/gemma-2-9b",
    "gemma-3-27b",
    "nvidia/Nemotron-H-8B-Base-8K",
    "nvidia/Nemotron-H-56B-Base-8K",
    "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B",
    "ai21labs/Jamba-v0.1",
    "facebook/opt-1.3b",
    "facebook/opt-2.7b",
    "microsoft/Phi-3-mini-4k-instruct",
    "microsoft/phi-4",
]


def test_catalog_size_and_unique_names() -> None:
    models = list_models()
    assert len(models) >= 30
    names = [m.name for m in models]
    assert len(set(names)) == len(names)
    keys = [k.lower() for e in CATALOG for k in (e.hf_id, *e.aliases)]
    assert len(set(keys)) == len(keys), "an alias is used twice"


@pytest.mark.parametrize("name", REQUIRED)
def test_required_models_resolve(name: str) -> None:
    spec = get_model(name)
    assert spec.num_params > 0 and spec.layers and spec.aliases


def test_every_model_has_short_alias_and_valid_layers() -> None:
    for spec in list_models():
        alias = spec.aliases[0]
        assert alias == alias.lower() and "/" not in alias
        assert get_model(alias) is spec
        assert spec.max_context > 0
        assert spec.num_active_params <= spec.num_params


def test_lookup_is_case_insensitive_and_cached() -> None:
    a = get_model("meta-llama/Llama-3.1-8B")
    assert get_model("META-LLAMA/llama-3.1-8b") is a
    assert get_model("  llama-3.1-8b ") is a
    assert get_model("meta-llama/Meta-Llama-3.1-8B") is a
    assert a.aliases[0] == "llama-3.1-8b"


def test_path_to_file_and_directory(tmp_path: Path) -> None:
    src = CONFIGS / "openai--gpt-oss-20b.json"
    by_file = get_model(str(src))
    assert by_file.name == "openai/gpt-oss-20b"
    shutil.copy(src, tmp_path / "config.json")
    by_dir = get_model(str(tmp_path))
    assert by_dir.name == tmp_path.name
    assert by_dir.num_params == by_file.num_params == get_model("gpt-oss-20b").num_params


def test_name_or_path_from_config(tmp_path: Path) -> None:
    cfg = json.loads((CONFIGS / "Qwen--Qwen3-8B.json").read_text())
    cfg["_name_or_path"] = "my/finetune"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert get_model(str(tmp_path / "config.json")).name == "my/finetune"


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ConfigError) as e:
        get_model("llama-3.1-8")
    msg = str(e.value)
    assert "llama-3.1-8b" in msg and "did you mean" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="unknown model"):
        get_model("zzzz-nothing-like-it")


def test_docs_list_every_model_and_type() -> None:
    from kvlab.models import SUPPORTED_MODEL_TYPES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    for entry in CATALOG:
        assert f"| {entry.hf_id} | `{entry.aliases[0]}` |" in doc, entry.hf_id
    for mt in SUPPORTED_MODEL_TYPES:
        assert f"`{mt}`" in doc, mt
