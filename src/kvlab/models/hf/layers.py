"""Which attention layers are sliding, and their window: vLLM 0.32's reading of a config.

A config's ``layer_types`` wins; without it a family may give its own default pattern
(Gemma's alternation, Qwen's ``max_window_layers``); without that, a non-null, non-zero
``sliding_window`` makes *every* layer sliding, unless ``use_sliding_window`` is false.
"""

from __future__ import annotations

from kvlab.errors import ConfigError
from kvlab.models.hf.config import Config
from kvlab.models.spec import LayerSpec

_SLIDING_NAMES = frozenset({"sliding_attention", "sliding", "local", "chunked_attention"})
_FULL_NAMES = frozenset({"full_attention", "full", "global", "attention"})


def sliding_window(cfg: Config) -> int | None:
    """The config's sliding window, None when absent, zero or disabled (vLLM's reading)."""
    if cfg.get("use_sliding_window") is False:
        return None
    w = cfg.get("sliding_window")
    if w in (None, 0, False):
        return None
    if not isinstance(w, int) or w < 1:
        raise ConfigError(f"config field 'sliding_window' must be a positive integer, got {w!r}")
    return int(w)


def sliding_layers(cfg: Config, num_layers: int, default: list[bool] | None = None) -> list[bool]:
    """Per layer: True if sliding. ``layer_types`` wins, then ``default``, then all-or-none."""
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list):
            raise ConfigError(f"config field 'layer_types' must be a list, got {types!r}")
        if len(types) != num_layers:
            raise ConfigError(
                f"config field 'layer_types' has {len(types)} entries for {num_layers} layers"
            )
        out = []
        for i, t in enumerate(types):
            if t in _SLIDING_NAMES:
                out.append(True)
            elif t in _FULL_NAMES:
                out.append(False)
            else:
                raise ConfigError(
                    f"layer_types[{i}] = {t!r} is not a supported layer kind; "
                    f"supported: {', '.join(sorted(_SLIDING_NAMES | _FULL_NAMES))}"
                )
        return out
    if default is not None:
        return default
    return [sliding_window(cfg) is not None] * num_layers


def attention_layer(kv_heads: int, head_dim: int, window: int | None) -> LayerSpec:
    """A full attention layer, or a sliding one when ``window`` is given."""
    if window is None:
        return LayerSpec("full", num_kv_heads=kv_heads, head_dim=head_dim)
    return LayerSpec("sliding", num_kv_heads=kv_heads, head_dim=head_dim, window=window)


__all__ = ["attention_layer", "sliding_layers", "sliding_window"]
