"""OPT: ``opt``.

Full multi-head attention; learned positions (offset 2), LayerNorms with bias, biased
attention and fc1/fc2 MLP; an optional embedding projection (``word_embed_proj_dim``).
"""

from __future__ import annotations

from kvlab.models.hf.config import Config, head_dim, positive
from kvlab.models.hf.layers import attention_layer
from kvlab.models.hf.params import Params, attention_params, mlp_params, sum_parts
from kvlab.models.hf.registry import Parsed, register


@register("opt")
def parse_opt(cfg: Config) -> Parsed:
    """OPT: learned positions (offset 2), LayerNorm with bias, biased MHA and fc1/fc2."""
    hidden = positive(cfg, "hidden_size")
    n = positive(cfg, "num_hidden_layers")
    heads = positive(cfg, "num_attention_heads")
    vocab = positive(cfg, "vocab_size")
    ffn = positive(cfg, "ffn_dim")
    max_pos = positive(cfg, "max_position_embeddings", 2048)
    proj = positive(cfg, "word_embed_proj_dim", hidden)
    hd = head_dim(cfg, hidden, heads)
    bias = bool(cfg.get("enable_bias", True))
    p = Params()
    tied = bool(cfg.get("tie_word_embeddings", True))
    p.add("embedding", vocab * proj)
    p.add("lm_head", 0 if tied else vocab * proj)
    p.add("embedding", (max_pos + 2) * hidden)
    if proj != hidden:
        p.add("embedding", 2 * proj * hidden)  # project_in / project_out, no bias
    if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False):
        p.add("norms", 2 * hidden)
    per_layer = sum_parts(
        attention_params(hidden, heads, heads, hd, qkv_bias=bias, o_bias=bias),
        mlp_params(hidden, ffn, gated=False, bias=bias),
        {"norms": 2 * 2 * hidden},
    )
    p.add_parts(per_layer, n)
    layers = tuple(attention_layer(heads, hd, None) for _ in range(n))
    return Parsed(layers, p, hidden, heads, hd, vocab, max_pos)


__all__ = ["parse_opt"]
