"""GLM-4.5 / 4.6 MoE (``glm4_moe``): grouped-query attention on every layer, MoE from
``first_k_dense_replace`` on.

Field names are transformers' Glm4MoeConfig: ``n_routed_experts`` experts of
``moe_intermediate_size`` (``num_experts_per_tok`` per token), ``n_shared_experts``
shared ones, a router with a score-correction bias (``e_score_correction_bias``, one
per routed expert); ``attention_bias`` biases q/k/v (never o_proj); ``use_qk_norm``
per-head q/k norms; ``head_dim`` may differ from hidden / heads; partial rotary
embeddings change no shape. The multi-token-prediction layers
(``num_nextn_predict_layers``) are not counted, as for DeepSeek: vLLM serves them only
as a speculative draft model.
"""

from __future__ import annotations

from kvlab.models.hf.config import Config, head_dim, integer, kv_heads, positive
from kvlab.models.hf.layers import attention_layer
from kvlab.models.hf.params import Params, attention_params, embedding_params, mlp_params
from kvlab.models.hf.registry import Parsed, register


@register("glm4_moe")
def parse_glm4_moe(cfg: Config) -> Parsed:
    """GLM-4 MoE (GLM-4.5, GLM-4.5-Air, GLM-4.6): full attention on every layer."""
    hidden = positive(cfg, "hidden_size")
    n = positive(cfg, "num_hidden_layers")
    heads = positive(cfg, "num_attention_heads")
    vocab = positive(cfg, "vocab_size")
    hd = head_dim(cfg, hidden, heads)
    kv = kv_heads(cfg, heads)
    p = Params()
    embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("norms", hidden)  # final norm
    attn = attention_params(
        hidden,
        heads,
        kv,
        hd,
        qkv_bias=bool(cfg.get("attention_bias")),
        qk_norm=bool(cfg.get("use_qk_norm")),
    )
    experts = integer(cfg, "n_routed_experts", 0)
    top_k = integer(cfg, "num_experts_per_tok", 0)
    shared = integer(cfg, "n_shared_experts", 0)
    first_dense = integer(cfg, "first_k_dense_replace", 1)
    inter = positive(cfg, "intermediate_size")
    for i in range(n):
        p.add_parts(attn)
        p.add("norms", 2 * hidden)
        if not experts or i < first_dense:
            p.add_parts(mlp_params(hidden, inter))
            continue
        moe_inter = positive(cfg, "moe_intermediate_size")
        p.add_parts(mlp_params(hidden, moe_inter, cat="experts"), experts, top_k)
        p.add_parts(mlp_params(hidden, moe_inter, cat="shared_experts"), shared)
        p.add("router", hidden * experts)
        p.add("biases", experts)  # e_score_correction_bias
    layers = tuple(attention_layer(kv, hd, None) for _ in range(n))
    return Parsed(layers, p, hidden, heads, hd, vocab, positive(cfg, "max_position_embeddings"))


__all__ = ["parse_glm4_moe"]
