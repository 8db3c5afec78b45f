"""Jamba: ``jamba``.

Mamba-1 layers with attention where ``i % attn_layer_period == attn_layer_offset``, and
MoE where ``i % expert_layer_period == expert_layer_offset``.
"""

from __future__ import annotations

import math

from kvlab.models.hf.config import Config, head_dim, integer, kv_heads, positive
from kvlab.models.hf.layers import attention_layer
from kvlab.models.hf.params import Params, attention_params, embedding_params, mlp_params
from kvlab.models.hf.registry import Parsed, register
from kvlab.models.spec import LayerSpec


@register("jamba")
def parse_jamba(cfg: Config) -> Parsed:
    """Jamba: Mamba-1 layers with attention every ``attn_layer_period``, MoE every
    ``expert_layer_period`` layers."""
    hidden = positive(cfg, "hidden_size")
    n = positive(cfg, "num_hidden_layers")
    heads = positive(cfg, "num_attention_heads")
    kv = kv_heads(cfg, heads)
    vocab = positive(cfg, "vocab_size")
    hd = head_dim(cfg, hidden, heads)
    attn_period = positive(cfg, "attn_layer_period", 8)
    attn_offset = integer(cfg, "attn_layer_offset", 4)
    exp_period = positive(cfg, "expert_layer_period", 2)
    exp_offset = integer(cfg, "expert_layer_offset", 1)
    experts = integer(cfg, "num_experts", 16)
    top_k = integer(cfg, "num_experts_per_tok", 2)
    inter = positive(cfg, "intermediate_size")
    d_state = positive(cfg, "mamba_d_state", 16)
    d_conv = positive(cfg, "mamba_d_conv", 4)
    d_inner = positive(cfg, "mamba_expand", 2) * hidden
    dt_rank_raw = cfg.get("mamba_dt_rank", "auto")
    dt_rank = math.ceil(hidden / 16) if dt_rank_raw == "auto" else positive(cfg, "mamba_dt_rank")
    mamba = hidden * 2 * d_inner + d_inner * hidden  # in_proj, out_proj
    if cfg.get("mamba_proj_bias"):
        mamba += 2 * d_inner + hidden
    mamba += d_inner * d_conv + (d_inner if cfg.get("mamba_conv_bias", True) else 0)
    mamba += d_inner * (dt_rank + 2 * d_state)  # x_proj
    mamba += dt_rank * d_inner + d_inner  # dt_proj
    mamba += d_inner * d_state + d_inner  # A_log, D
    mamba += dt_rank + 2 * d_state  # dt / B / C layernorms
    attn = attention_params(hidden, heads, kv, hd)
    p = Params()
    embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("norms", hidden)  # final norm
    layers: list[LayerSpec] = []
    for i in range(n):
        p.add("norms", 2 * hidden)
        if i % attn_period == attn_offset:
            layers.append(attention_layer(kv, hd, None))
            p.add_parts(attn)
        else:
            layers.append(
                LayerSpec(
                    "mamba1",
                    state_elems=d_inner * d_state,
                    conv_elems=(d_conv - 1) * d_inner,
                    state_heads=d_inner,
                )
            )
            p.add("recurrent", mamba)
        if experts > 1 and i % exp_period == exp_offset:
            p.add_parts(mlp_params(hidden, inter, cat="experts"), experts, top_k)
            p.add("router", hidden * experts)
        else:
            p.add_parts(mlp_params(hidden, inter))
    return Parsed(
        tuple(layers), p, hidden, heads, hd, vocab, positive(cfg, "max_position_embeddings", 262144)
    )


__all__ = ["parse_jamba"]
