"""A Hugging Face ``config.json`` as parsers read it: loading, typed fields, the serving dtype.

Every accessor raises :class:`~kvlab.errors.ConfigError` naming the field: a required
field that is missing, a value that is not a whole number (NaN and infinity are not), a
negative one, one above :data:`MAX_CONFIG_INT` (a layer count above :data:`MAX_LAYERS`),
or, for :func:`positive`, one below 1. :func:`naming_file` prefixes those messages with
the file they came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError

#: The largest integer a config field may hold (2**40, about 1.1e12; real sizes and counts
#: stay below 2**32). Larger values are typos or corruption, refused before any arithmetic.
MAX_CONFIG_INT = 2**40
#: The most layers a config may declare (released models have at most a few hundred);
#: parsers build one record per layer, so this bounds their time and memory.
MAX_LAYERS = 100_000
#: Fields that count layers, bounded by :data:`MAX_LAYERS`.
LAYER_COUNT_FIELDS: frozenset[str] = frozenset({"num_hidden_layers"})
#: ``torch_dtype`` values a checkpoint may declare (``torch.`` prefix allowed).
CONFIG_DTYPES: frozenset[str] = frozenset({"bfloat16", "float16", "half", "float32", "float"})

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
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason}); expected a JSON object") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply to be a model config") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path} as JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


@contextmanager
def naming_file(path: str | Path | None) -> Iterator[None]:
    """Prefix a ConfigError raised inside with ``path`` (unless it names it already)."""
    try:
        yield
    except ConfigError as e:
        if path is None or str(e).startswith(str(path)) or f" {path}" in str(e):
            raise
        raise ConfigError(f"{path}: {e}") from None


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
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config field {key!r} must be an integer, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value == int(value)):
        raise ConfigError(f"config field {key!r} must be an integer, got {value!r}")
    if value < 0:
        raise ConfigError(f"config field {key!r} must be >= 0, got {value!r}")
    bound = MAX_LAYERS if key in LAYER_COUNT_FIELDS else MAX_CONFIG_INT
    if value > bound:
        raise ConfigError(f"config field {key!r} is {value!r}, above the limit {bound:,}")
    return int(value)


def integer_list(cfg: Config, key: str) -> list[int]:
    """``cfg[key]`` as a list of integers >= 0 (e.g. layer indices); [] when missing."""
    value = cfg.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"config field {key!r} must be a list of integers, got {value!r}")
    return [integer({key: v}, key) for v in value]


def kv_heads(cfg: Config, heads: int) -> int:
    """``num_key_value_heads`` (default ``heads``): >= 1 and dividing ``heads`` (grouped-query
    attention shares each KV head among ``heads / kv`` query heads)."""
    kv = positive(cfg, "num_key_value_heads", heads)
    if kv > heads or heads % kv:
        raise ConfigError(
            f"config field 'num_key_value_heads' ({kv}) must divide num_attention_heads ({heads})"
        )
    return kv


def positive(cfg: Config, key: str, default: int | None = None) -> int:
    """:func:`integer`, which must be >= 1."""
    value = integer(cfg, key, default)
    if value < 1:
        raise ConfigError(f"config field {key!r} must be >= 1, got {value}")
    return value


def head_dim(cfg: Config, hidden: int, heads: int) -> int:
    """``head_dim`` when the config gives one, else ``hidden / heads`` (which must divide)."""
    if cfg.get("head_dim") is not None:
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
    key = "torch_dtype" if cfg.get("torch_dtype") else "dtype"
    raw = cfg.get(key) or "bfloat16"
    name = str(raw).removeprefix("torch.")
    if name not in CONFIG_DTYPES:
        raise ConfigError(
            f"config field {key!r} is {raw!r}; expected one of {', '.join(sorted(CONFIG_DTYPES))}"
        )
    if name in ("float16", "half"):
        return "float16"
    return "bfloat16"


__all__ = [
    "CONFIG_DTYPES",
    "LAYER_COUNT_FIELDS",
    "MAX_CONFIG_INT",
    "MAX_LAYERS",
    "Config",
    "head_dim",
    "integer",
    "integer_list",
    "kv_heads",
    "load_config",
    "naming_file",
    "positive",
    "required",
    "serving_dtype",
]
