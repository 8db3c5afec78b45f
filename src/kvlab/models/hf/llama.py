"""Llama-like decoders with Llama's own style: ``llama``, ``mistral``, ``mixtral``, ``phi3``.

Full attention, or every layer sliding when the config has a non-zero
``sliding_window`` (Mistral-7B-v0.1: 4096; Phi-3-mini-4k: 2047) or ``layer_types``
say so; Mixtral's MoE layers through ``num_local_experts``.
"""

from __future__ import annotations

from kvlab.models.hf.config import Config
from kvlab.models.hf.decoder import DecoderStyle, parse_decoder
from kvlab.models.hf.registry import Parsed, register

LLAMA = DecoderStyle()


@register("llama", "mistral", "mixtral", "phi3")
def parse_llama(cfg: Config) -> Parsed:
    """A Llama-style decoder (see :mod:`kvlab.models.hf.decoder`)."""
    return parse_decoder(cfg, LLAMA)


__all__ = ["LLAMA", "parse_llama"]
