"""The checkpoint's weight format, from a config's ``quantization_config``.

Owns which parameter categories a quantized checkpoint stores in its quantized format
(the rest ship in the model dtype); :func:`kvlab.models.spec.weights_bytes` prices them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvlab.errors import ConfigError
from kvlab.models.hf.config import Config
from kvlab.models.spec import WeightFormat

#: Categories each method quantizes by default. MXFP4 (gpt-oss): the MoE experts only,
#: as vLLM's Mxfp4Config does (FusedMoE layers; linear layers stay unquantized). FP8
#: (DeepSeek-V3): every linear of the decoder layers; embeddings, lm_head and the router
#: ship in bf16 (vLLM's DeepseekV2 gate is created without a quant config).
_QUANTIZED_BY_DEFAULT: dict[str, tuple[str, ...]] = {
    "mxfp4": ("experts",),
    "fp8": ("attention", "mlp", "experts", "shared_experts"),
}

#: Module-name components of ``modules_to_not_convert`` / ``ignored_layers`` patterns and
#: the categories they exclude (the last matching component decides).
_MODULE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "embed_tokens": ("embedding",),
    "lm_head": ("lm_head",),
    "self_attn": ("attention",),
    "attn": ("attention",),
    "attention": ("attention",),
    "mlp": ("mlp", "experts", "shared_experts", "router"),
    "experts": ("experts",),
    "shared_expert": ("shared_experts",),
    "shared_experts": ("shared_experts",),
    "router": ("router",),
    "gate": ("router",),
    "mixer": ("recurrent",),
}


def _excluded_categories(patterns: list[Any]) -> set[str]:
    """Categories named by module patterns such as ``model.layers.*.self_attn``.

    A pattern excludes its whole category in every layer, also when it names one layer
    (prices the checkpoint higher, never lower); the last known component decides
    (``model.layers.*.mlp.router``: the router only; ``...self_attn.q_proj``: attention).
    """
    out: set[str] = set()
    for pattern in patterns:
        named = [x for x in str(pattern).split(".") if x in _MODULE_CATEGORIES]
        if named:
            out.update(_MODULE_CATEGORIES[named[-1]])
    return out


def weight_format(cfg: Config, present: set[str]) -> WeightFormat | None:
    """The checkpoint's weight format from ``quantization_config``, over the parameter
    categories ``present`` in the model.

    Understands ``quant_method`` ``mxfp4`` and ``fp8`` (``weight_block_size``); any other
    method (or none) returns None: weights are priced in the model dtype.
    """
    qc = cfg.get("quantization_config")
    if not isinstance(qc, Mapping):
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method not in _QUANTIZED_BY_DEFAULT:
        return None
    skip = _excluded_categories(
        list(qc.get("modules_to_not_convert") or []) + list(qc.get("ignored_layers") or [])
    )
    cats = tuple(c for c in _QUANTIZED_BY_DEFAULT[method] if c in present and c not in skip)
    block = qc.get("weight_block_size") if method == "fp8" else None
    if block is not None:
        if (
            not isinstance(block, list | tuple)
            or len(block) != 2
            or not all(isinstance(b, int) and b >= 1 for b in block)
        ):
            raise ConfigError(
                f"quantization_config.weight_block_size must be two positive integers, "
                f"got {block!r}"
            )
        block = (int(block[0]), int(block[1]))
    return WeightFormat(method, cats, block)


__all__ = ["weight_format"]
