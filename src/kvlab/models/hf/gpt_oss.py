"""gpt-oss: ``gpt_oss``.

A Llama-style MoE decoder with sliding layers of ``sliding_window`` (default 128)
alternating with full ones, sliding first (or ``layer_types``); one attention sink per
query head; biased experts and router.
"""

from __future__ import annotations

from kvlab.models.hf.config import Config
from kvlab.models.hf.decoder import DecoderStyle, alternating, parse_decoder
from kvlab.models.hf.registry import Parsed, register

GPT_OSS = DecoderStyle(
    sliding_default=alternating,
    fixed_window=128,
    attention_sinks=True,
    biased_experts=True,
)


@register("gpt_oss")
def parse_gpt_oss(cfg: Config) -> Parsed:
    """gpt-oss (see the module docstring)."""
    return parse_decoder(cfg, GPT_OSS)


__all__ = ["GPT_OSS", "parse_gpt_oss"]
