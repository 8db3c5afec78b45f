"""The tiny local model: tokenizer, config and the directory it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvlab.backends.tiny_model import (
    SPECIAL_TOKENS,
    TinyModelConfig,
    llama_config_dict,
    train_tokenizer,
)
from kvlab.errors import ConfigError


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="divide by heads"):
        TinyModelConfig(hidden=100, heads=3)
    with pytest.raises(ConfigError, match="kv_heads"):
        TinyModelConfig(heads=4, kv_heads=3)
    assert TinyModelConfig().head_dim == 32


def test_llama_config_shape() -> None:
    d = llama_config_dict(TinyModelConfig(layers=3, hidden=256, heads=8, kv_heads=2))
    assert d["num_hidden_layers"] == 3
    assert d["head_dim"] == 32
    assert d["num_key_value_heads"] == 2
    assert d["eos_token_id"] == SPECIAL_TOKENS.index("</s>")


def test_tokenizer_has_exact_vocab_and_words_are_single_tokens() -> None:
    pytest.importorskip("tokenizers")
    words = ("lantern", "kettle", "zephyrine", "quorble")
    tok = train_tokenizer(2048, words)
    assert tok.get_vocab_size() == 2048
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i
    for w in words:
        assert len(tok.encode(" " + w).ids) == 1, w
    text = "The keeper climbed the tower."
    assert tok.decode(tok.encode(text).ids) == text


def test_tokenizer_is_deterministic() -> None:
    pytest.importorskip("tokenizers")
    a, b = train_tokenizer(1024), train_tokenizer(1024)
    assert a.to_str() == b.to_str()


@pytest.mark.hf
@pytest.mark.slow
def test_written_model_loads_in_transformers(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kvlab.backends.tiny_model import write_tiny_model

    d = write_tiny_model(tmp_path / "m", TinyModelConfig(seed=3))
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    cfg = json.loads((d / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (2, 2, 2048)
    tok = AutoTokenizer.from_pretrained(d)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=True
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    assert tok.decode(ids) == "<|user|>\nhello</s>\n<|assistant|>\n"
    model = AutoModelForCausalLM.from_pretrained(d)
    out = model(torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), 2048)
    # Same seed, same weights.
    d2 = write_tiny_model(tmp_path / "m2", TinyModelConfig(seed=3))
    assert (d / "model.safetensors").read_bytes() == (d2 / "model.safetensors").read_bytes()


def test_missing_transformers_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    from kvlab.backends.hf import HfBackend, HfConfig
    from kvlab.backends.tiny_model import write_tiny_model
    from kvlab.errors import DependencyMissing

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(DependencyMissing, match=r"kvlab\[hf\]"):
        write_tiny_model(tmp_path / "m")
    with pytest.raises(DependencyMissing, match=r"transformers.*kvlab\[hf\]"):
        HfBackend(HfConfig(model_dir=str(tmp_path)))
