"""``from_hf_config``: a :class:`~kvlab.models.spec.ModelSpec` from a Hugging Face config.

Loads the config, unwraps a multimodal wrapper to its language model, looks the
``model_type`` up in the registry (:mod:`kvlab.models.hf.registry`) and builds the spec
from what the family's parser read, plus the serving dtype and the checkpoint's weight
format. Importing this module imports every family module, which registers its parsers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError

# Every family module, imported for its registration (add a new family here).
from kvlab.models.hf import (  # noqa: F401
    deepseek,
    gemma,
    glm,
    gpt_oss,
    jamba,
    llama,
    nemotron_h,
    opt,
    phi,
    qwen,
    qwen3_next,
)
from kvlab.models.hf.config import Config, load_config, naming_file, serving_dtype
from kvlab.models.hf.registry import PARSERS, WRAPPERS
from kvlab.models.hf.weight_format import weight_format
from kvlab.models.spec import ModelSpec

#: model_type values :func:`from_hf_config` understands (``gemma3`` = multimodal wrapper,
#: parsed from its ``text_config``).
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted([*PARSERS, *WRAPPERS]))


def from_hf_config(config: Config | str | Path, name: str | None = None) -> ModelSpec:
    """A :class:`ModelSpec` from a Hugging Face config (dict, config.json path or directory).

    Raises ConfigError for an unsupported ``model_type``, a missing or invalid field, or an
    unknown layer kind, naming the field.
    """
    path = None if isinstance(config, Mapping) else config
    with naming_file(path):
        return _from_config(load_config(config), name)


def _from_config(cfg: dict[str, Any], name: str | None) -> ModelSpec:
    unwrap = WRAPPERS.get(str(cfg.get("model_type")))
    if unwrap is not None:
        cfg = unwrap(cfg)
    mt = cfg.get("model_type")
    parser = PARSERS.get(str(mt))
    if parser is None:
        raise ConfigError(
            f"unsupported model_type {mt!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    parsed = parser(cfg)
    dtype = serving_dtype(cfg)
    label = name or str(cfg.get("_name_or_path") or mt)
    return ModelSpec(
        name=label,
        architecture=str(mt),
        layers=parsed.layers,
        hidden_size=parsed.hidden,
        num_attention_heads=parsed.heads,
        vocab_size=parsed.vocab,
        num_params=parsed.params.total,
        num_active_params=parsed.params.active,
        max_context=parsed.max_context,
        dtype=dtype,
        state_dtype=parsed.state_dtype or dtype,
        head_dim=parsed.head_dim,
        param_breakdown=parsed.params.breakdown(),
        weight_format=weight_format(cfg, {c for c, _ in parsed.params.breakdown()}),
    )


__all__ = ["SUPPORTED_MODEL_TYPES", "from_hf_config"]
