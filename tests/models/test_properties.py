"""Hypothesis properties of the formulas and the parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.models import (
    from_hf_config,
    kv_bytes_per_token,
    list_models,
    sequence_bytes,
    sliding_cap_bytes,
    state_bytes_per_sequence,
)

MODELS = list_models()
model = st.sampled_from(MODELS)
length = st.integers(min_value=0, max_value=1_000_000)


@given(model, length, length)
def test_sequence_bytes_monotone(spec, a: int, b: int) -> None:  # type: ignore[no-untyped-def]
    lo, hi = sorted((a, b))
    assert sequence_bytes(spec, lo) <= sequence_bytes(spec, hi)


@given(model, length)
def test_sequence_bytes_decomposes(spec, n: int) -> None:  # type: ignore[no-untyped-def]
    """growing part + sliding part (capped) + fixed state, every model."""
    total = sequence_bytes(spec, n)
    growing = kv_bytes_per_token(spec) * n
    sliding = total - growing - state_bytes_per_sequence(spec)
    assert 0 <= sliding <= sliding_cap_bytes(spec) + 1e-6
    if n >= max((x.window or 0) for x in spec.layers):
        assert sliding == pytest.approx(sliding_cap_bytes(spec))


FULL_ONLY = [m for m in MODELS if {x.kind for x in m.layers} <= {"full", "mla"}]


@given(st.sampled_from(FULL_ONLY), length)
def test_full_attention_is_linear(spec, n: int) -> None:  # type: ignore[no-untyped-def]
    assert sequence_bytes(spec, n) == n * kv_bytes_per_token(spec)


@given(model, length)
def test_fp8_halves_everything_but_state(spec, n: int) -> None:  # type: ignore[no-untyped-def]
    state = state_bytes_per_sequence(spec)
    assert (sequence_bytes(spec, n, "fp8") - state) * 2 == pytest.approx(
        sequence_bytes(spec, n, "bf16") - state
    )


@st.composite
def llama_configs(draw: st.DrawFn) -> dict:
    kv = draw(st.sampled_from([1, 2, 4, 8]))
    heads = kv * draw(st.integers(1, 8))
    head_dim = draw(st.sampled_from([16, 32, 64, 128]))
    return {
        "model_type": draw(st.sampled_from(["llama", "mistral", "qwen3", "phi3"])),
        "hidden_size": heads * head_dim,
        "intermediate_size": draw(st.integers(1, 20_000)),
        "num_hidden_layers": draw(st.integers(1, 128)),
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": draw(st.integers(1, 300_000)),
        "max_position_embeddings": draw(st.integers(1, 1_000_000)),
        "tie_word_embeddings": draw(st.booleans()),
    }


@settings(max_examples=200)
@given(llama_configs())
def test_random_llama_like_configs(cfg: dict) -> None:
    spec = from_hf_config(cfg)
    h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv, v = cfg["num_key_value_heads"], cfg["vocab_size"]
    d = h // cfg["num_attention_heads"]
    attn = 2 * h * h + 2 * h * kv * d + (2 * d if cfg["model_type"] == "qwen3" else 0)
    expected = v * h * (1 if cfg["tie_word_embeddings"] else 2) + h + n * (attn + 3 * h * i + 2 * h)
    assert spec.num_params == spec.num_active_params == expected
    assert spec.num_layers == n and spec.count("full") == n
    assert kv_bytes_per_token(spec, "bf16") == 2 * n * kv * d * 2
    assert spec.max_context == cfg["max_position_embeddings"]


@given(model, st.sampled_from([1, 2, 4, 8, 16]))
def test_tp_shards_attention_or_replicates(spec, tp: int) -> None:  # type: ignore[no-untyped-def]
    from kvlab.errors import ConfigError
    from kvlab.models import check_tp

    try:
        check_tp(spec, tp)
    except ConfigError:
        return
    for layer in spec.layers:
        per_gpu = layer.elems_per_token(tp)
        if layer.kind == "mla":
            assert per_gpu == layer.elems_per_token(1)  # never sharded
        elif layer.kind in ("full", "sliding"):
            shards = min(tp, layer.num_kv_heads)
            assert per_gpu * shards == layer.elems_per_token(1)


@given(st.text(alphabet="M*-E", min_size=1, max_size=40), st.sampled_from("XYm#. "))
def test_nemotron_pattern_chars(pattern: str, bad: str) -> None:
    from kvlab.errors import ConfigError
    from kvlab.models import catalog_entry

    cfg = dict(catalog_entry("nemotron-3-nano-30b-a3b").config)
    cfg.pop("num_hidden_layers")
    cfg["hybrid_override_pattern"] = pattern
    spec = from_hf_config(cfg)
    assert spec.count("mamba2") == pattern.count("M")
    assert spec.count("full") == pattern.count("*")
    cfg["hybrid_override_pattern"] = pattern + bad
    with pytest.raises(ConfigError, match="hybrid_override_pattern"):
        from_hf_config(cfg)
