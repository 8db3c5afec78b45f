"""Parameter counts against transformers' own modules, built on the meta device.

Every catalog config is instantiated by transformers (no weights are allocated) and its
parameters are counted; our config-only count must equal it exactly. DeepSeek-V3 and
Nemotron-H keep the router's ``e_score_correction_bias`` as a buffer in transformers
but as a checkpoint tensor, so those buffers are added.
"""

from __future__ import annotations

import pytest

from kvlab.models import CATALOG, get_model

pytestmark = [pytest.mark.hf, pytest.mark.slow]


def _hf_count(config: dict) -> int:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = dict(config)
    if cfg["model_type"] == "gemma3":
        cfg = {**cfg["text_config"], "model_type": "gemma3_text"}
    mt = cfg.pop("model_type")
    if mt not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers has no {mt}")
    hf_cfg = transformers.CONFIG_MAPPING[mt](**cfg)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    n = sum(p.numel() for p in model.parameters())
    n += sum(
        b.numel() for name, b in model.named_buffers() if name.endswith("e_score_correction_bias")
    )
    return int(n)


@pytest.mark.parametrize("entry", CATALOG, ids=lambda e: e.aliases[0])
def test_count_equals_transformers(entry) -> None:  # type: ignore[no-untyped-def]
    assert get_model(entry.hf_id).num_params == _hf_count(dict(entry.config))


def _hf_config(config: dict):  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    cfg = dict(config)
    if cfg["model_type"] == "gemma3":
        cfg = {**cfg["text_config"], "model_type": "gemma3_text"}
    mt = cfg.pop("model_type")
    return transformers.CONFIG_MAPPING[mt](**cfg)


ATTENTION_ONLY = [
    e
    for e in CATALOG
    if e.config["model_type"] not in ("deepseek_v3", "qwen3_next", "nemotron_h", "jamba")
]


@pytest.mark.parametrize("entry", ATTENTION_ONLY, ids=lambda e: e.aliases[0])
def test_sliding_layers_follow_vllm_rule(entry) -> None:  # type: ignore[no-untyped-def]
    """vLLM (engine/arg_utils.py + model files): after transformers' config class has
    normalised the config, ``layer_types`` picks sliding layers; without it (or all
    sliding) a set ``sliding_window`` applies to every layer."""
    hf = _hf_config(dict(entry.config))
    n = hf.num_hidden_layers
    window = getattr(hf, "sliding_window", None) or None
    types = getattr(hf, "layer_types", None)
    if types is None or all(t == "sliding_attention" for t in types):
        expected = [window] * n
    else:
        expected = [window if t == "sliding_attention" else None for t in types]
    assert [x.window for x in get_model(entry.hf_id).layers] == expected
