"""DeepSeek-V2 / V3 / R1: ``deepseek_v2``, ``deepseek_v3``.

Every layer multi-head latent attention (MLA): one latent of ``kv_lora_rank +
qk_rope_head_dim`` per token; an optional low-rank query (``q_lora_rank``). MoE from
``first_k_dense_replace`` on, every ``moe_layer_freq``-th layer, with shared experts and
(``noaux_tc``) a router score-correction bias. The multi-token-prediction layers are not
counted.
"""

from __future__ import annotations

from kvlab.models.hf.config import Config, integer, positive
from kvlab.models.hf.params import Params, embedding_params, mlp_params
from kvlab.models.hf.registry import Parsed, register
from kvlab.models.spec import LayerSpec


@register("deepseek_v2", "deepseek_v3")
def parse_deepseek(cfg: Config) -> Parsed:
    """DeepSeek-V2/V3 (MLA + MoE). Excludes the multi-token-prediction layers."""
    hidden = positive(cfg, "hidden_size")
    n = positive(cfg, "num_hidden_layers")
    heads = positive(cfg, "num_attention_heads")
    vocab = positive(cfg, "vocab_size")
    lora = positive(cfg, "kv_lora_rank")
    rope = positive(cfg, "qk_rope_head_dim")
    nope = positive(cfg, "qk_nope_head_dim")
    v_dim = positive(cfg, "v_head_dim")
    q_lora = integer(cfg, "q_lora_rank", 0)
    qk = nope + rope
    p = Params()
    embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("norms", hidden)  # final norm
    attn = hidden * (lora + rope)  # kv_a_proj_with_mqa
    attn += lora * heads * (nope + v_dim)  # kv_b_proj
    attn += heads * v_dim * hidden  # o_proj
    attn_norms = lora  # kv_a_layernorm
    if q_lora:
        attn += hidden * q_lora + q_lora * heads * qk  # q_a_proj, q_b_proj
        attn_norms += q_lora  # q_a_layernorm
    else:
        attn += hidden * heads * qk
    experts = integer(cfg, "n_routed_experts", 0)
    top_k = integer(cfg, "num_experts_per_tok", 0)
    shared = integer(cfg, "n_shared_experts", 0)
    first_dense = integer(cfg, "first_k_dense_replace", 0)
    freq = positive(cfg, "moe_layer_freq", 1)
    inter = positive(cfg, "intermediate_size")
    for i in range(n):
        p.add("attention", attn)
        p.add("norms", attn_norms + 2 * hidden)
        if not experts or i < first_dense or i % freq:
            p.add_parts(mlp_params(hidden, inter))
            continue
        moe_inter = positive(cfg, "moe_intermediate_size")
        p.add_parts(mlp_params(hidden, moe_inter, cat="experts"), experts, top_k)
        p.add_parts(mlp_params(hidden, moe_inter, cat="shared_experts"), shared)
        p.add("router", hidden * experts)
        if cfg.get("topk_method") == "noaux_tc":
            p.add("biases", experts)  # e_score_correction_bias
    layers = tuple(LayerSpec("mla", kv_lora_rank=lora, qk_rope_head_dim=rope) for _ in range(n))
    return Parsed(layers, p, hidden, heads, qk, vocab, positive(cfg, "max_position_embeddings"))


__all__ = ["parse_deepseek"]
