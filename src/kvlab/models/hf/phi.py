"""Phi-1 / 1.5 / 2: ``phi``.

Parallel attention + MLP with one LayerNorm per layer and biased linears (the untied
``lm_head`` too); full attention, or sliding per the config's window or ``layer_types``.
"""

from __future__ import annotations

from kvlab.models.hf.config import Config, head_dim, kv_heads, positive
from kvlab.models.hf.layers import attention_layer, sliding_layers, sliding_window
from kvlab.models.hf.params import Params, attention_params, embedding_params, mlp_params, sum_parts
from kvlab.models.hf.registry import Parsed, register


@register("phi")
def parse_phi(cfg: Config) -> Parsed:
    """Phi-1/1.5/2: parallel attention + MLP, one LayerNorm per layer, biased linears."""
    hidden = positive(cfg, "hidden_size")
    n = positive(cfg, "num_hidden_layers")
    heads = positive(cfg, "num_attention_heads")
    kv = kv_heads(cfg, heads)
    vocab = positive(cfg, "vocab_size")
    inter = positive(cfg, "intermediate_size")
    hd = head_dim(cfg, hidden, heads)
    p = Params()
    tied = embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("biases", 0 if tied else vocab)  # lm_head has a bias
    p.add("norms", 2 * hidden)  # final LayerNorm
    qk_ln = 4 * hd if cfg.get("qk_layernorm") else 0
    per_layer = sum_parts(
        attention_params(hidden, heads, kv, hd, qkv_bias=True, o_bias=True),
        mlp_params(hidden, inter, gated=False, bias=True),
        {"norms": 2 * hidden + qk_ln},
    )
    p.add_parts(per_layer, n)
    sliding = sliding_layers(cfg, n)
    layers = tuple(attention_layer(kv, hd, sliding_window(cfg) if s else None) for s in sliding)
    max_context = positive(cfg, "max_position_embeddings", 2048)
    return Parsed(layers, p, hidden, heads, hd, vocab, max_context)


__all__ = ["parse_phi"]
