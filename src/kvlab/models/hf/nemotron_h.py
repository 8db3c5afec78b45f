"""Nemotron-H and Nemotron-3-Nano: ``nemotron_h``.

``hybrid_override_pattern`` names each block: ``M`` Mamba-2, ``*`` attention, ``-`` MLP,
``E`` MoE. MLP and MoE blocks hold no per-sequence memory, so they are not layers of the
spec. The SSM state is float32 unless the config's ``mamba_ssm_cache_dtype`` says
otherwise (vLLM's NemotronH default).
"""

from __future__ import annotations

from kvlab.errors import ConfigError
from kvlab.models.hf.config import Config, head_dim, integer, kv_heads, positive, required
from kvlab.models.hf.layers import attention_layer
from kvlab.models.hf.params import Params, attention_params, embedding_params, mlp_params
from kvlab.models.hf.registry import Parsed, register
from kvlab.models.spec import LayerSpec


def _mamba2_layer(cfg: Config, hidden: int) -> tuple[LayerSpec, int]:
    """A Mamba-2 mixer (Nemotron-H): state shape and parameters."""
    nh = positive(cfg, "mamba_num_heads")
    hd = positive(cfg, "mamba_head_dim")
    d_state = positive(cfg, "ssm_state_size")
    groups = positive(cfg, "n_groups", 1)
    d_conv = positive(cfg, "conv_kernel", 4)
    d_inner = nh * hd
    conv_dim = d_inner + 2 * groups * d_state
    layer = LayerSpec(
        "mamba2",
        state_elems=nh * hd * d_state,
        conv_elems=(d_conv - 1) * conv_dim,
        state_heads=nh,
    )
    params = hidden * (d_inner + conv_dim + nh)  # in_proj: z, xBC, dt
    params += conv_dim * d_conv + (conv_dim if cfg.get("use_conv_bias", True) else 0)
    params += 3 * nh  # dt_bias, A_log, D
    params += d_inner  # gated RMSNorm
    params += d_inner * hidden  # out_proj
    if cfg.get("mamba_proj_bias"):
        params += d_inner + conv_dim + nh + hidden
    return layer, params


@register("nemotron_h")
def parse_nemotron_h(cfg: Config) -> Parsed:
    """Nemotron-H: ``hybrid_override_pattern`` M (Mamba-2), * (attention), - (MLP), E (MoE)."""
    hidden = positive(cfg, "hidden_size")
    pattern = str(required(cfg, "hybrid_override_pattern"))
    n = positive(cfg, "num_hidden_layers", len(pattern))
    if len(pattern) != n:
        raise ConfigError(
            f"hybrid_override_pattern has {len(pattern)} layers, num_hidden_layers says {n}"
        )
    heads = positive(cfg, "num_attention_heads")
    kv = kv_heads(cfg, heads)
    vocab = positive(cfg, "vocab_size")
    if cfg.get("head_dim") is not None:
        hd = positive(cfg, "head_dim")
    elif cfg.get("attention_head_dim") is not None:
        hd = positive(cfg, "attention_head_dim")
    else:
        hd = head_dim(cfg, hidden, heads)
    p = Params()
    embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("norms", hidden)  # norm_f
    mlp_bias = bool(cfg.get("mlp_bias"))
    layers: list[LayerSpec] = []
    for i, ch in enumerate(pattern):
        p.add("norms", hidden)  # the block's pre-norm
        if ch == "M":
            layer, n_params = _mamba2_layer(cfg, hidden)
            layers.append(layer)
            p.add("recurrent", n_params)
        elif ch == "*":
            layers.append(attention_layer(kv, hd, None))
            bias = bool(cfg.get("attention_bias"))
            p.add_parts(attention_params(hidden, heads, kv, hd, qkv_bias=bias, o_bias=bias))
        elif ch == "-":
            inter = positive(cfg, "intermediate_size")
            p.add_parts(mlp_params(hidden, inter, gated=False, bias=mlp_bias))
        elif ch == "E":
            experts = positive(cfg, "n_routed_experts")
            top_k = positive(cfg, "num_experts_per_tok")
            moe_inter = positive(cfg, "moe_intermediate_size")
            one = mlp_params(hidden, moe_inter, gated=False, cat="experts")
            shared_inter = integer(cfg, "moe_shared_expert_intermediate_size", 0)
            shared = integer(cfg, "n_shared_experts", 1 if shared_inter else 0)
            p.add_parts(one, experts, top_k)
            if shared_inter:
                sh = mlp_params(hidden, shared_inter, gated=False, cat="shared_experts")
                p.add_parts(sh, shared)
            p.add("router", hidden * experts)
            p.add("biases", experts)  # e_score_correction_bias
        else:
            raise ConfigError(
                f"hybrid_override_pattern[{i}] = {ch!r} is not a supported layer kind; "
                "supported: M (Mamba-2), * (attention), - (MLP), E (MoE)"
            )
    # vLLM's NemotronH default keeps the SSM state in float32 unless the config says otherwise
    # (vllm/model_executor/models/config.py, NemotronHForCausalLMConfig).
    state_dtype = str(cfg.get("mamba_ssm_cache_dtype") or "float32")
    return Parsed(
        tuple(layers),
        p,
        hidden,
        heads,
        hd,
        vocab,
        positive(cfg, "max_position_embeddings", 4096),
        state_dtype=state_dtype,
    )


__all__ = ["parse_nemotron_h"]
