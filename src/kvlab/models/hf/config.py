"""A Hugging Face ``config.json`` as parsers read it: loading, typed fields, the serving dtype.

Every accessor raises :class:`~kvlab.errors.ConfigError` naming the field: a required
field that is missing, a value that is not an integer, or one below 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError

#: A parsed ``config.json`` (or the compact dict a catalog entry holds).
Config = Mapping[str, Any]


def load_config(config: Config | str | Path) -> dict[str, Any]:
    """A config dict from a mapping, a config.json path or a directory holding one."""
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"no config.json at {path}; pass a file or a model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path} as JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def required(cfg: Config, key: str) -> Any:
    """``cfg[key]``; ConfigError when it is missing or null."""
    value = cfg.get(key)
    if value is None:
        mt = cfg.get("model_type", "?")
        raise ConfigError(f"config field {key!r} is missing (model_type {mt!r}); add it")
    return value


def integer(cfg: Config, key: str, default: int | None = None) -> int:
    """``cfg[key]`` as an int (a whole float is accepted); ``default`` when missing,
    required when ``default`` is None."""
    value = cfg.get(key)
    if value is None:
        if default is None:
            return int(required(cfg, key))
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(f"config field {key!r} must be an integer, got {value!r}")
    return int(value)


def positive(cfg: Config, key: str, default: int | None = None) -> int:
    """:func:`integer`, which must be >= 1."""
    value = integer(cfg, key, default)
    if value < 1:
        raise ConfigError(f"config field {key!r} must be >= 1, got {value}")
    return value


def head_dim(cfg: Config, hidden: int, heads: int) -> int:
    """``head_dim`` when the config gives one, else ``hidden / heads`` (which must divide)."""
    if cfg.get("head_dim"):
        return positive(cfg, "head_dim")
    if hidden % heads:
        raise ConfigError(
            f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}; "
            "set head_dim in the config"
        )
    return hidden // heads


def serving_dtype(cfg: Config) -> str:
    """The dtype vLLM serves the model in with ``--dtype auto``: the config's
    ``torch_dtype``, float32 checkpoints downcast to bfloat16 (vLLM
    config/model.py ``_resolve_auto_dtype`` on GPUs that support bf16)."""
    raw = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    name = str(raw).removeprefix("torch.")
    if name in ("float16", "half"):
        return "float16"
    return "bfloat16"


__all__ = [
    "Config",
    "head_dim",
    "integer",
    "load_config",
    "positive",
    "required",
    "serving_dtype",
]
