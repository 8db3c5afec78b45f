"""The Llama-style decoder that several families share, and :class:`DecoderStyle`, how a
family's variant differs from Llama.

Each layer is attention (full, or sliding per :mod:`kvlab.models.hf.layers`) plus a dense
gated MLP or, on MoE layers, ``num_local_experts`` / ``num_experts`` routed experts of
``moe_intermediate_size`` with a router (every ``decoder_sparse_step``-th layer, except
``mlp_only_layers``). Families: llama (llama, mistral, mixtral, phi3), qwen, gemma,
gpt_oss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvlab.errors import ConfigError
from kvlab.models.hf.config import Config, head_dim, integer, integer_list, kv_heads, positive
from kvlab.models.hf.layers import attention_layer, sliding_layers, sliding_window
from kvlab.models.hf.params import (
    Params,
    attention_params,
    embedding_params,
    mlp_params,
)
from kvlab.models.hf.registry import Parsed

#: A family's default sliding pattern for ``num_layers`` layers (True = sliding), used
#: when the config has no ``layer_types``; None leaves the all-or-none rule.
SlidingDefault = Callable[[Config, int], list[bool] | None]


@dataclass(frozen=True, slots=True)
class DecoderStyle:
    """How one family's decoder differs from Llama's (the defaults are Llama's).

    ``sliding_default`` its default sliding pattern; ``fixed_window`` a window the
    family always has (read from ``sliding_window``, this value when absent;
    ``use_sliding_window`` is not consulted), None to read the config's window the
    vLLM way; ``tied_embeddings`` the ``tie_word_embeddings`` default; ``qkv_bias``
    q/k/v biases whatever ``attention_bias`` says; ``qk_norm`` per-head q/k norms;
    ``norms_per_layer`` norms of ``hidden_size`` per layer; ``attention_sinks`` one
    learned sink per query head; ``biased_experts`` biases in the experts and router.
    """

    sliding_default: SlidingDefault | None = None
    fixed_window: int | None = None
    tied_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    attention_sinks: bool = False
    biased_experts: bool = False


def alternating(cfg: Config, num_layers: int) -> list[bool]:
    """Sliding on even layers, full on odd (Gemma-2, gpt-oss)."""
    return [i % 2 == 0 for i in range(num_layers)]


def parse_decoder(cfg: Config, style: DecoderStyle) -> Parsed:
    """Layers and parameters of a Llama-style decoder in ``style``."""
    hidden = positive(cfg, "hidden_size")
    n = positive(cfg, "num_hidden_layers")
    heads = positive(cfg, "num_attention_heads")
    vocab = positive(cfg, "vocab_size")
    hd = head_dim(cfg, hidden, heads)
    kv = kv_heads(cfg, heads)

    # --- layer kinds ---
    default = style.sliding_default(cfg, n) if style.sliding_default else None
    sliding = sliding_layers(cfg, n, default)
    if style.fixed_window is None:
        window = sliding_window(cfg)
    else:
        window = positive(cfg, "sliding_window", style.fixed_window)
    if any(sliding) and window is None:
        raise ConfigError("config has sliding layers but no 'sliding_window'; add it")
    layers = tuple(attention_layer(kv, hd, window if s else None) for s in sliding)

    # --- parameters ---
    p = Params()
    embedding_params(cfg, hidden, vocab, p, tied_default=style.tied_embeddings)
    p.add("norms", hidden)  # final norm
    attn = attention_params(
        hidden,
        heads,
        kv,
        hd,
        qkv_bias=bool(cfg.get("attention_bias")) or style.qkv_bias,
        o_bias=bool(cfg.get("attention_bias")),
        qk_norm=style.qk_norm,
    )
    if style.attention_sinks:
        attn["biases"] += heads
    norms = style.norms_per_layer * hidden
    experts = integer(cfg, "num_local_experts", 0) or integer(cfg, "num_experts", 0)
    top_k = integer(cfg, "num_experts_per_tok", 0) or integer(cfg, "experts_per_token", 0)
    inter = positive(cfg, "intermediate_size")
    mlp_bias = bool(cfg.get("mlp_bias"))
    sparse_step = positive(cfg, "decoder_sparse_step", 1)
    mlp_only = set(integer_list(cfg, "mlp_only_layers"))
    for i in range(n):
        p.add_parts(attn)
        p.add("norms", norms)
        moe = experts > 0 and i not in mlp_only and (i + 1) % sparse_step == 0
        if not moe:
            p.add_parts(mlp_params(hidden, inter, bias=mlp_bias))
            continue
        if top_k < 1:
            raise ConfigError("MoE config needs 'num_experts_per_tok' >= 1")
        moe_inter = positive(cfg, "moe_intermediate_size", inter)
        one = mlp_params(hidden, moe_inter, bias=style.biased_experts, cat="experts")
        p.add_parts(one, experts, top_k)
        p.add("router", hidden * experts + (experts if style.biased_experts else 0))
    max_context = positive(cfg, "max_position_embeddings", 4096)
    return Parsed(layers, p, hidden, heads, hd, vocab, max_context)


__all__ = ["DecoderStyle", "SlidingDefault", "alternating", "parse_decoder"]
