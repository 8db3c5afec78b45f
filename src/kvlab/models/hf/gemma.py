"""Gemma-2 and Gemma-3: ``gemma2``, ``gemma3_text``, and ``gemma3`` (the multimodal wrapper).

Llama-style decoders with tied embeddings, four norms per layer and a window of
``sliding_window`` (default 4096). Gemma-2: sliding on even layers, full on odd.
Gemma-3: every ``sliding_window_pattern``-th layer (default 6) full, the rest sliding,
and per-head q/k norms; its text configs omit fields that take transformers'
Gemma3TextConfig defaults. Either way ``layer_types`` wins. A ``gemma3`` config is parsed
from its ``text_config``.
"""

from __future__ import annotations

from typing import Any

from kvlab.errors import ConfigError
from kvlab.models.hf.config import Config, positive
from kvlab.models.hf.decoder import DecoderStyle, alternating, parse_decoder
from kvlab.models.hf.registry import Parsed, register, register_wrapper


def _every_nth_full(cfg: Config, num_layers: int) -> list[bool]:
    """Gemma-3: layer i is full when (i + 1) is a multiple of ``sliding_window_pattern``."""
    pattern = positive(cfg, "sliding_window_pattern", 6)
    return [(i + 1) % pattern != 0 for i in range(num_layers)]


GEMMA2 = DecoderStyle(
    sliding_default=alternating, fixed_window=4096, tied_embeddings=True, norms_per_layer=4
)
GEMMA3 = DecoderStyle(
    sliding_default=_every_nth_full,
    fixed_window=4096,
    tied_embeddings=True,
    qk_norm=True,
    norms_per_layer=4,
)


def gemma3_defaults(cfg: Config) -> dict[str, Any]:
    """``cfg`` over transformers' Gemma3TextConfig defaults for the fields Gemma-3 text
    configs omit; null fields take the default too."""
    out = {
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "head_dim": 256,
        "tie_word_embeddings": True,
    }
    out.update({k: v for k, v in cfg.items() if v is not None})
    return out


@register("gemma2")
def parse_gemma2(cfg: Config) -> Parsed:
    """Gemma-2 (see the module docstring)."""
    return parse_decoder(cfg, GEMMA2)


@register("gemma3_text")
def parse_gemma3_text(cfg: Config) -> Parsed:
    """Gemma-3's language model (see the module docstring)."""
    return parse_decoder(gemma3_defaults(cfg), GEMMA3)


@register_wrapper("gemma3")
def gemma3_text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language-model part of a Gemma-3 multimodal config: its ``text_config``
    (``model_type`` gemma3_text unless it says otherwise) with the wrapper's dtype,
    embedding tie and quantization config where the text config has none."""
    raw = cfg.get("text_config") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config field 'text_config' must be an object, got {raw!r}")
    text = dict(raw)
    text.setdefault("model_type", "gemma3_text")
    for key in ("torch_dtype", "dtype", "tie_word_embeddings", "quantization_config"):
        if key in cfg and key not in text:
            text[key] = cfg[key]
    return gemma3_defaults(text)


__all__ = [
    "GEMMA2",
    "GEMMA3",
    "gemma3_defaults",
    "gemma3_text_config",
    "parse_gemma2",
    "parse_gemma3_text",
]
