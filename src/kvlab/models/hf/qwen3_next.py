"""Qwen3-Next: ``qwen3_next``.

Gated DeltaNet linear-attention layers, with gated full attention every
``full_attention_interval``-th layer (or per ``layer_types``); MoE with a gated shared
expert.
"""

from __future__ import annotations

from kvlab.errors import ConfigError
from kvlab.models.hf.config import Config, head_dim, integer, integer_list, kv_heads, positive
from kvlab.models.hf.layers import attention_layer
from kvlab.models.hf.params import Params, attention_params, embedding_params, mlp_params
from kvlab.models.hf.registry import Parsed, register
from kvlab.models.spec import LayerSpec


@register("qwen3_next")
def parse_qwen3_next(cfg: Config) -> Parsed:
    """Qwen3-Next: Gated DeltaNet linear layers + gated full attention every
    ``full_attention_interval`` layers; MoE with a gated shared expert."""
    hidden = positive(cfg, "hidden_size")
    n = positive(cfg, "num_hidden_layers")
    heads = positive(cfg, "num_attention_heads")
    kv = kv_heads(cfg, heads)
    vocab = positive(cfg, "vocab_size")
    hd = head_dim(cfg, hidden, heads)
    types = cfg.get("layer_types")
    if types is None:
        interval = positive(cfg, "full_attention_interval", 4)
        types = [
            "full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n)
        ]
    if not isinstance(types, list):
        raise ConfigError(f"config field 'layer_types' must be a list, got {types!r}")
    if len(types) != n:
        raise ConfigError(f"config field 'layer_types' has {len(types)} entries for {n} layers")
    k_heads = positive(cfg, "linear_num_key_heads")
    v_heads = positive(cfg, "linear_num_value_heads")
    k_dim = positive(cfg, "linear_key_head_dim")
    v_dim = positive(cfg, "linear_value_head_dim")
    d_conv = positive(cfg, "linear_conv_kernel_dim", 4)
    conv_dim = 2 * k_heads * k_dim + v_heads * v_dim
    linear = hidden * (conv_dim + v_heads * v_dim)  # in_proj_qkvz
    linear += hidden * 2 * v_heads  # in_proj_ba
    linear += conv_dim * d_conv  # depthwise conv, no bias
    linear += 2 * v_heads + v_dim  # dt_bias, A_log, gated norm
    linear += v_heads * v_dim * hidden  # out_proj
    attn = attention_params(hidden, heads, kv, hd, qk_norm=True, q_gate=True)
    experts = integer(cfg, "num_experts", 0)
    top_k = integer(cfg, "num_experts_per_tok", 0)
    sparse_step = positive(cfg, "decoder_sparse_step", 1)
    mlp_only = set(integer_list(cfg, "mlp_only_layers"))
    p = Params()
    embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("norms", hidden)
    layers: list[LayerSpec] = []
    for i, t in enumerate(types):
        p.add("norms", 2 * hidden)
        if t == "full_attention":
            layers.append(attention_layer(kv, hd, None))
            p.add_parts(attn)
        elif t == "linear_attention":
            layers.append(
                LayerSpec(
                    "linear",
                    state_elems=v_heads * k_dim * v_dim,
                    conv_elems=(d_conv - 1) * conv_dim,
                    state_heads=v_heads,
                )
            )
            p.add("recurrent", linear)
        else:
            raise ConfigError(
                f"layer_types[{i}] = {t!r} is not a supported layer kind; "
                "supported: full_attention, linear_attention"
            )
        if experts and i not in mlp_only and (i + 1) % sparse_step == 0:
            one = mlp_params(hidden, positive(cfg, "moe_intermediate_size"), cat="experts")
            shared_inter = integer(cfg, "shared_expert_intermediate_size", 0)
            p.add_parts(one, experts, top_k)
            p.add("router", hidden * experts)
            if shared_inter:  # shared expert + its sigmoid gate (hidden -> 1)
                p.add_parts(mlp_params(hidden, shared_inter, cat="shared_experts"))
                p.add("shared_experts", hidden)
        else:
            p.add_parts(mlp_params(hidden, positive(cfg, "intermediate_size")))
    return Parsed(
        tuple(layers), p, hidden, heads, hd, vocab, positive(cfg, "max_position_embeddings", 32768)
    )


__all__ = ["parse_qwen3_next"]
