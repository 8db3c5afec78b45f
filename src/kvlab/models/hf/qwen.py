"""Qwen2 / Qwen2.5 and Qwen3 (dense and MoE): ``qwen2``, ``qwen2_moe``, ``qwen3``,
``qwen3_moe``.

Llama-style decoders; Qwen2 always has q/k/v biases, Qwen3 per-head q/k norms.
Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B) adds to every MoE layer one shared expert of
``shared_expert_intermediate_size`` and its sigmoid gate (``shared_expert_gate``, a
hidden -> 1 projection), both used by every token (transformers' Qwen2MoeConfig). The
window follows transformers' Qwen2Config: ``use_sliding_window: false`` disables it;
with it on, layers from ``max_window_layers`` on are sliding.
"""

from __future__ import annotations

from kvlab.models.hf.config import Config, integer, integer_list, positive
from kvlab.models.hf.decoder import DecoderStyle, parse_decoder
from kvlab.models.hf.layers import sliding_window
from kvlab.models.hf.params import mlp_params
from kvlab.models.hf.registry import Parsed, register


def _from_max_window_layers(cfg: Config, num_layers: int) -> list[bool] | None:
    """Layers from ``max_window_layers`` on slide, when the config has a window."""
    if sliding_window(cfg) is None:
        return None
    mwl = integer(cfg, "max_window_layers", num_layers)
    return [i >= mwl for i in range(num_layers)]


QWEN2 = DecoderStyle(sliding_default=_from_max_window_layers, qkv_bias=True)
QWEN3 = DecoderStyle(sliding_default=_from_max_window_layers, qk_norm=True)


@register("qwen2")
def parse_qwen2(cfg: Config) -> Parsed:
    """Qwen2 / Qwen2.5: biased q/k/v."""
    return parse_decoder(cfg, QWEN2)


@register("qwen2_moe")
def parse_qwen2_moe(cfg: Config) -> Parsed:
    """Qwen2-MoE: Qwen2's decoder with routed experts (``num_experts``, every
    ``decoder_sparse_step``-th layer but ``mlp_only_layers``) plus a gated shared expert."""
    parsed = parse_decoder(cfg, QWEN2)
    hidden = parsed.hidden
    shared = integer(cfg, "shared_expert_intermediate_size", 0)
    if shared and integer(cfg, "num_experts", 0):
        step = positive(cfg, "decoder_sparse_step", 1)
        dense = set(integer_list(cfg, "mlp_only_layers"))
        n = len(parsed.layers)
        moe_layers = sum(1 for i in range(n) if i not in dense and (i + 1) % step == 0)
        parsed.params.add_parts(mlp_params(hidden, shared, cat="shared_experts"), moe_layers)
        parsed.params.add("router", hidden * moe_layers)  # shared_expert_gate
    return parsed


@register("qwen3", "qwen3_moe")
def parse_qwen3(cfg: Config) -> Parsed:
    """Qwen3 and Qwen3-MoE: q/k norms."""
    return parse_decoder(cfg, QWEN3)


__all__ = ["QWEN2", "QWEN3", "parse_qwen2", "parse_qwen2_moe", "parse_qwen3"]
