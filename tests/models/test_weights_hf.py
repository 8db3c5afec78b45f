"""The parameter breakdown against transformers' own parameter names (meta device).

Each named parameter of the transformers model is put in a category by its name; the
totals per category must equal ``ModelSpec.param_breakdown`` exactly.
"""

from __future__ import annotations

import re

import pytest

from kvlab.models import catalog_entry, get_model

pytestmark = [pytest.mark.hf, pytest.mark.slow]


def _category(name: str) -> str:
    last = name.rsplit(".", 2)
    if "embed_tokens" in name:
        return "embedding"
    if name == "lm_head.weight":
        return "lm_head"
    if ".router." in name or re.search(r"\.gate\.(weight|bias)$", name):
        return "router"
    if "norm" in last[-2] or "norm" in last[-1]:
        return "norms"
    if name.endswith(("bias", "sinks")):
        return "biases"
    if "shared_expert" in name:
        return "shared_experts"
    if ".experts." in name:
        return "experts"
    if ".self_attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    raise AssertionError(f"no category for {name}")


@pytest.mark.parametrize(
    "alias",
    ["gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b", "qwen2.5-7b"],
)
def test_breakdown_equals_transformers(alias: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = dict(catalog_entry(alias).config)
    cfg.pop("quantization_config", None)
    mt = cfg.pop("model_type")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(
            transformers.CONFIG_MAPPING[mt](**cfg)
        )
    got: dict[str, int] = {}
    for name, p in model.named_parameters():
        cat = _category(name.replace("block_sparse_moe", "mlp"))
        got[cat] = got.get(cat, 0) + p.numel()
    for name, b in model.named_buffers():  # a checkpoint tensor, a buffer in transformers
        if name.endswith("e_score_correction_bias"):
            got["biases"] = got.get("biases", 0) + b.numel()
    assert got == dict(get_model(alias).param_breakdown)
