"""Qwen2 / Qwen2.5 and Qwen3 (dense and MoE): ``qwen2``, ``qwen3``, ``qwen3_moe``.

Llama-style decoders; Qwen2 always has q/k/v biases, Qwen3 per-head q/k norms. The
window follows transformers' Qwen2Config: ``use_sliding_window: false`` disables it;
with it on, layers from ``max_window_layers`` on are sliding.
"""

from __future__ import annotations

from kvlab.models.hf.config import Config, integer
from kvlab.models.hf.decoder import DecoderStyle, parse_decoder
from kvlab.models.hf.layers import sliding_window
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


@register("qwen3", "qwen3_moe")
def parse_qwen3(cfg: Config) -> Parsed:
    """Qwen3 and Qwen3-MoE: q/k norms."""
    return parse_decoder(cfg, QWEN3)


__all__ = ["QWEN2", "QWEN3", "parse_qwen2", "parse_qwen3"]
