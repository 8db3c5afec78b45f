"""Parse a Hugging Face ``config.json`` into a :class:`ModelSpec`, without transformers.

One parser per ``model_type`` (see :data:`SUPPORTED_MODEL_TYPES`). Each returns the
per-layer memory shape (which layers are full attention, sliding window, MLA, Mamba or
linear attention) and the parameter counts, both derived from the config alone.

Layer-kind rules follow vLLM 0.32 (``vllm/config/model.py``, ``engine/arg_utils.py`` and
the model files): a config's ``layer_types`` wins; without it a non-null, non-zero
``sliding_window`` makes *every* layer sliding (Mistral-7B-v0.1: 4096; Phi-3-mini-4k:
2047), unless ``use_sliding_window`` is false (Qwen2/Qwen3, where transformers drops
the window). Gemma-2 / Gemma-3 / gpt-oss without ``layer_types`` use their fixed
alternation (transformers' config classes).

Parameter counts: every weight tensor the model's modules create, from the shapes the
config implies: embeddings (+ an untied ``lm_head``), attention projections with their
biases, MLA low-rank projections and norms, dense MLPs (gated or not), MoE experts +
router + shared experts, Mamba / Gated DeltaNet projections, conv and per-head vectors,
and every norm. ``num_active_params`` counts what one token uses: everything but the
routed experts, plus ``top_k`` of them per MoE layer. Multi-token-prediction layers
(DeepSeek ``num_nextn_predict_layers``) and vision towers are not counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError
from kvlab.models.spec import PARAM_CATEGORIES, LayerSpec, ModelSpec, WeightFormat

Config = Mapping[str, Any]


# ---------------------------------------------------------------------------
# Config access
# ---------------------------------------------------------------------------


def _req(cfg: Config, key: str) -> Any:
    value = cfg.get(key)
    if value is None:
        mt = cfg.get("model_type", "?")
        raise ConfigError(f"config field {key!r} is missing (model_type {mt!r}); add it")
    return value


def _int(cfg: Config, key: str, default: int | None = None) -> int:
    value = cfg.get(key)
    if value is None:
        if default is None:
            return int(_req(cfg, key))
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(f"config field {key!r} must be an integer, got {value!r}")
    return int(value)


def _pos(cfg: Config, key: str, default: int | None = None) -> int:
    value = _int(cfg, key, default)
    if value < 1:
        raise ConfigError(f"config field {key!r} must be >= 1, got {value}")
    return value


def _head_dim(cfg: Config, hidden: int, heads: int) -> int:
    if cfg.get("head_dim"):
        return _pos(cfg, "head_dim")
    if hidden % heads:
        raise ConfigError(
            f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}; "
            "set head_dim in the config"
        )
    return hidden // heads


def _dtype(cfg: Config) -> str:
    """The dtype vLLM serves the model in with ``--dtype auto``: the config's
    ``torch_dtype``, float32 checkpoints downcast to bfloat16 (vLLM
    config/model.py ``_resolve_auto_dtype`` on GPUs that support bf16)."""
    raw = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    name = str(raw).removeprefix("torch.")
    if name in ("float16", "half"):
        return "float16"
    return "bfloat16"


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
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path} as JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


# ---------------------------------------------------------------------------
# Parameter counting
# ---------------------------------------------------------------------------


#: Parameter counts by category (kvlab.models.spec.PARAM_CATEGORIES).
Parts = dict[str, int]


@dataclass
class _Params:
    """Running parameter totals: ``total`` every weight, ``active`` the per-token ones,
    ``by_cat`` every weight by category (sums to ``total``)."""

    total: int = 0
    active: int = 0
    by_cat: dict[str, int] = field(default_factory=dict)

    def add(self, cat: str, n: int, active: int | None = None) -> None:
        self.total += n
        self.active += n if active is None else active
        self.by_cat[cat] = self.by_cat.get(cat, 0) + n

    def add_parts(self, parts: Parts, times: int = 1, active_times: int | None = None) -> None:
        """Add ``times`` copies of ``parts``; ``active_times`` of them count as active."""
        act = times if active_times is None else active_times
        for cat, n in parts.items():
            self.add(cat, n * times, n * act)

    def breakdown(self) -> tuple[tuple[str, int], ...]:
        return tuple((c, self.by_cat[c]) for c in PARAM_CATEGORIES if self.by_cat.get(c))


def _sum(*parts: Parts) -> Parts:
    out: Parts = {}
    for part in parts:
        for cat, n in part.items():
            out[cat] = out.get(cat, 0) + n
    return out


def _attention_params(
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    *,
    qkv_bias: bool = False,
    o_bias: bool = False,
    qk_norm: bool = False,
    q_gate: bool = False,
    head_dim_v: int | None = None,
) -> Parts:
    """q/k/v/o projections (+ biases, per-head q/k norms, Qwen3-Next's output gate in q)."""
    dv = head_dim if head_dim_v is None else head_dim_v
    q_out = heads * head_dim * (2 if q_gate else 1)
    kv_out = kv_heads * (head_dim + dv)
    bias = (q_out + kv_out if qkv_bias else 0) + (hidden if o_bias else 0)
    return {
        "attention": hidden * (q_out + kv_out) + heads * dv * hidden,
        "biases": bias,
        "norms": 2 * head_dim if qk_norm else 0,
    }


def _mlp_params(
    hidden: int, inter: int, *, gated: bool = True, bias: bool = False, cat: str = "mlp"
) -> Parts:
    """A (gated) MLP's matrices under ``cat`` and its biases under ``biases``."""
    b = (2 * inter if gated else inter) + hidden if bias else 0
    return {cat: (3 if gated else 2) * hidden * inter, "biases": b}


def _embedding_params(cfg: Config, hidden: int, vocab: int, p: _Params, tied_default: bool) -> bool:
    tied = bool(cfg.get("tie_word_embeddings", tied_default))
    p.add("embedding", vocab * hidden)
    if not tied:
        p.add("lm_head", vocab * hidden)
    return tied


# ---------------------------------------------------------------------------
# Layer kinds
# ---------------------------------------------------------------------------

_SLIDING_NAMES = frozenset({"sliding_attention", "sliding", "local", "chunked_attention"})
_FULL_NAMES = frozenset({"full_attention", "full", "global", "attention"})


def _window(cfg: Config) -> int | None:
    """The config's sliding window, None when absent, zero or disabled (vLLM's reading)."""
    if cfg.get("use_sliding_window") is False:
        return None
    w = cfg.get("sliding_window")
    if w in (None, 0, False):
        return None
    if not isinstance(w, int) or w < 1:
        raise ConfigError(f"config field 'sliding_window' must be a positive integer, got {w!r}")
    return int(w)


def _attention_kinds(cfg: Config, num_layers: int, default: list[bool] | None = None) -> list[bool]:
    """Per layer: True if sliding. ``layer_types`` wins, then ``default``, then all-or-none."""
    types = cfg.get("layer_types")
    if types is not None:
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
    return [_window(cfg) is not None] * num_layers


def _attn_layer(kv_heads: int, head_dim: int, window: int | None) -> LayerSpec:
    if window is None:
        return LayerSpec("full", num_kv_heads=kv_heads, head_dim=head_dim)
    return LayerSpec("sliding", num_kv_heads=kv_heads, head_dim=head_dim, window=window)


# ---------------------------------------------------------------------------
# Parsers. Each returns (layers, params, extras) where extras go to ModelSpec.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    layers: tuple[LayerSpec, ...]
    params: _Params
    hidden: int
    heads: int
    head_dim: int
    vocab: int
    max_context: int
    state_dtype: str | None = None


_Parser = Callable[[Config], _Parsed]


def _decoder(cfg: Config) -> _Parsed:
    """Llama-style decoders: llama, mistral, mixtral, qwen2, qwen3, qwen3_moe, phi3,
    gemma2, gemma3_text, gpt_oss."""
    mt = cfg["model_type"]
    hidden = _pos(cfg, "hidden_size")
    n = _pos(cfg, "num_hidden_layers")
    heads = _pos(cfg, "num_attention_heads")
    kv = _pos(cfg, "num_key_value_heads", heads)
    vocab = _pos(cfg, "vocab_size")
    hd = _head_dim(cfg, hidden, heads)
    gemma = mt in ("gemma2", "gemma3_text")

    # --- layer kinds ---
    default: list[bool] | None = None
    if mt == "gemma2":
        default = [i % 2 == 0 for i in range(n)]
    elif mt == "gemma3_text":
        pattern = _pos(cfg, "sliding_window_pattern", 6)
        default = [(i + 1) % pattern != 0 for i in range(n)]
    elif mt == "gpt_oss":
        default = [i % 2 == 0 for i in range(n)]
    elif mt in ("qwen2", "qwen3", "qwen3_moe") and _window(cfg) is not None:
        # transformers' Qwen2Config: layers from max_window_layers on are sliding.
        mwl = _int(cfg, "max_window_layers", n)
        default = [i >= mwl for i in range(n)]
    sliding = _attention_kinds(cfg, n, default)
    window = _window(cfg) if mt not in ("gemma2", "gemma3_text", "gpt_oss") else None
    if gemma or mt == "gpt_oss":
        window = _pos(cfg, "sliding_window", 4096 if gemma else 128)
    if any(sliding) and window is None:
        raise ConfigError("config has sliding layers but no 'sliding_window'; add it")
    layers = tuple(_attn_layer(kv, hd, window if s else None) for s in sliding)

    # --- parameters ---
    p = _Params()
    _embedding_params(cfg, hidden, vocab, p, tied_default=gemma)
    p.add("norms", hidden)  # final norm
    attn = _attention_params(
        hidden,
        heads,
        kv,
        hd,
        qkv_bias=bool(cfg.get("attention_bias")) or mt == "qwen2",
        o_bias=bool(cfg.get("attention_bias")),
        qk_norm=mt in ("qwen3", "qwen3_moe", "gemma3_text"),
    )
    if mt == "gpt_oss":
        attn["biases"] += heads  # attention sinks
    norms = (4 if gemma else 2) * hidden
    experts = _int(cfg, "num_local_experts", 0) or _int(cfg, "num_experts", 0)
    top_k = _int(cfg, "num_experts_per_tok", 0) or _int(cfg, "experts_per_token", 0)
    inter = _pos(cfg, "intermediate_size")
    mlp_bias = bool(cfg.get("mlp_bias"))
    sparse_step = _pos(cfg, "decoder_sparse_step", 1)
    mlp_only = set(cfg.get("mlp_only_layers") or [])
    for i in range(n):
        p.add_parts(attn)
        p.add("norms", norms)
        moe = experts > 0 and i not in mlp_only and (i + 1) % sparse_step == 0
        if not moe:
            p.add_parts(_mlp_params(hidden, inter, bias=mlp_bias))
            continue
        if top_k < 1:
            raise ConfigError("MoE config needs 'num_experts_per_tok' >= 1")
        moe_inter = _pos(cfg, "moe_intermediate_size", inter)
        one = _mlp_params(hidden, moe_inter, bias=mt == "gpt_oss", cat="experts")
        p.add_parts(one, experts, top_k)
        p.add("router", hidden * experts + (experts if mt == "gpt_oss" else 0))
    return _Parsed(layers, p, hidden, heads, hd, vocab, _pos(cfg, "max_position_embeddings", 4096))


def _opt(cfg: Config) -> _Parsed:
    """OPT: learned positions (offset 2), LayerNorm with bias, biased MHA and fc1/fc2."""
    hidden = _pos(cfg, "hidden_size")
    n = _pos(cfg, "num_hidden_layers")
    heads = _pos(cfg, "num_attention_heads")
    vocab = _pos(cfg, "vocab_size")
    ffn = _pos(cfg, "ffn_dim")
    max_pos = _pos(cfg, "max_position_embeddings", 2048)
    proj = _pos(cfg, "word_embed_proj_dim", hidden)
    hd = _head_dim(cfg, hidden, heads)
    bias = bool(cfg.get("enable_bias", True))
    p = _Params()
    tied = bool(cfg.get("tie_word_embeddings", True))
    p.add("embedding", vocab * proj)
    p.add("lm_head", 0 if tied else vocab * proj)
    p.add("embedding", (max_pos + 2) * hidden)
    if proj != hidden:
        p.add("embedding", 2 * proj * hidden)  # project_in / project_out, no bias
    if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False):
        p.add("norms", 2 * hidden)
    per_layer = _sum(
        _attention_params(hidden, heads, heads, hd, qkv_bias=bias, o_bias=bias),
        _mlp_params(hidden, ffn, gated=False, bias=bias),
        {"norms": 2 * 2 * hidden},
    )
    p.add_parts(per_layer, n)
    layers = tuple(_attn_layer(heads, hd, None) for _ in range(n))
    return _Parsed(layers, p, hidden, heads, hd, vocab, max_pos)


def _phi(cfg: Config) -> _Parsed:
    """Phi-1/1.5/2: parallel attention + MLP, one LayerNorm per layer, biased linears."""
    hidden = _pos(cfg, "hidden_size")
    n = _pos(cfg, "num_hidden_layers")
    heads = _pos(cfg, "num_attention_heads")
    kv = _pos(cfg, "num_key_value_heads", heads)
    vocab = _pos(cfg, "vocab_size")
    inter = _pos(cfg, "intermediate_size")
    hd = _head_dim(cfg, hidden, heads)
    p = _Params()
    tied = _embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("biases", 0 if tied else vocab)  # lm_head has a bias
    p.add("norms", 2 * hidden)  # final LayerNorm
    qk_ln = 4 * hd if cfg.get("qk_layernorm") else 0
    per_layer = _sum(
        _attention_params(hidden, heads, kv, hd, qkv_bias=True, o_bias=True),
        _mlp_params(hidden, inter, gated=False, bias=True),
        {"norms": 2 * hidden + qk_ln},
    )
    p.add_parts(per_layer, n)
    sliding = _attention_kinds(cfg, n)
    layers = tuple(_attn_layer(kv, hd, _window(cfg) if s else None) for s in sliding)
    return _Parsed(layers, p, hidden, heads, hd, vocab, _pos(cfg, "max_position_embeddings", 2048))


def _deepseek(cfg: Config) -> _Parsed:
    """DeepSeek-V2/V3 (MLA + MoE). Excludes the multi-token-prediction layers."""
    hidden = _pos(cfg, "hidden_size")
    n = _pos(cfg, "num_hidden_layers")
    heads = _pos(cfg, "num_attention_heads")
    vocab = _pos(cfg, "vocab_size")
    lora = _pos(cfg, "kv_lora_rank")
    rope = _pos(cfg, "qk_rope_head_dim")
    nope = _pos(cfg, "qk_nope_head_dim")
    v_dim = _pos(cfg, "v_head_dim")
    q_lora = cfg.get("q_lora_rank")
    qk = nope + rope
    p = _Params()
    _embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("norms", hidden)  # final norm
    attn = hidden * (lora + rope)  # kv_a_proj_with_mqa
    attn += lora * heads * (nope + v_dim)  # kv_b_proj
    attn += heads * v_dim * hidden  # o_proj
    attn_norms = lora  # kv_a_layernorm
    if q_lora:
        q_lora = int(q_lora)
        attn += hidden * q_lora + q_lora * heads * qk  # q_a_proj, q_b_proj
        attn_norms += q_lora  # q_a_layernorm
    else:
        attn += hidden * heads * qk
    experts = _int(cfg, "n_routed_experts", 0)
    top_k = _int(cfg, "num_experts_per_tok", 0)
    shared = _int(cfg, "n_shared_experts", 0)
    first_dense = _int(cfg, "first_k_dense_replace", 0)
    freq = _pos(cfg, "moe_layer_freq", 1)
    inter = _pos(cfg, "intermediate_size")
    for i in range(n):
        p.add("attention", attn)
        p.add("norms", attn_norms + 2 * hidden)
        if not experts or i < first_dense or i % freq:
            p.add_parts(_mlp_params(hidden, inter))
            continue
        moe_inter = _pos(cfg, "moe_intermediate_size")
        p.add_parts(_mlp_params(hidden, moe_inter, cat="experts"), experts, top_k)
        p.add_parts(_mlp_params(hidden, moe_inter, cat="shared_experts"), shared)
        p.add("router", hidden * experts)
        if cfg.get("topk_method") == "noaux_tc":
            p.add("biases", experts)  # e_score_correction_bias
    layers = tuple(LayerSpec("mla", kv_lora_rank=lora, qk_rope_head_dim=rope) for _ in range(n))
    return _Parsed(layers, p, hidden, heads, qk, vocab, _pos(cfg, "max_position_embeddings"))


def _mamba2_layer(cfg: Config, hidden: int) -> tuple[LayerSpec, int]:
    """A Mamba-2 mixer (Nemotron-H): state shape and parameters."""
    nh = _pos(cfg, "mamba_num_heads")
    hd = _pos(cfg, "mamba_head_dim")
    d_state = _pos(cfg, "ssm_state_size")
    groups = _pos(cfg, "n_groups", 1)
    d_conv = _pos(cfg, "conv_kernel", 4)
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


def _nemotron_h(cfg: Config) -> _Parsed:
    """Nemotron-H: ``hybrid_override_pattern`` M (Mamba-2), * (attention), - (MLP), E (MoE)."""
    hidden = _pos(cfg, "hidden_size")
    pattern = str(_req(cfg, "hybrid_override_pattern"))
    n = _pos(cfg, "num_hidden_layers", len(pattern))
    if len(pattern) != n:
        raise ConfigError(
            f"hybrid_override_pattern has {len(pattern)} layers, num_hidden_layers says {n}"
        )
    heads = _pos(cfg, "num_attention_heads")
    kv = _pos(cfg, "num_key_value_heads", heads)
    vocab = _pos(cfg, "vocab_size")
    if cfg.get("head_dim"):
        hd = _pos(cfg, "head_dim")
    elif cfg.get("attention_head_dim"):
        hd = _pos(cfg, "attention_head_dim")
    else:
        hd = _head_dim(cfg, hidden, heads)
    p = _Params()
    _embedding_params(cfg, hidden, vocab, p, tied_default=False)
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
            layers.append(_attn_layer(kv, hd, None))
            bias = bool(cfg.get("attention_bias"))
            p.add_parts(_attention_params(hidden, heads, kv, hd, qkv_bias=bias, o_bias=bias))
        elif ch == "-":
            inter = _pos(cfg, "intermediate_size")
            p.add_parts(_mlp_params(hidden, inter, gated=False, bias=mlp_bias))
        elif ch == "E":
            experts = _pos(cfg, "n_routed_experts")
            top_k = _pos(cfg, "num_experts_per_tok")
            moe_inter = _pos(cfg, "moe_intermediate_size")
            one = _mlp_params(hidden, moe_inter, gated=False, cat="experts")
            shared_inter = _int(cfg, "moe_shared_expert_intermediate_size", 0)
            shared = _int(cfg, "n_shared_experts", 1 if shared_inter else 0)
            p.add_parts(one, experts, top_k)
            if shared_inter:
                sh = _mlp_params(hidden, shared_inter, gated=False, cat="shared_experts")
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
    return _Parsed(
        tuple(layers),
        p,
        hidden,
        heads,
        hd,
        vocab,
        _pos(cfg, "max_position_embeddings", 4096),
        state_dtype=state_dtype,
    )


def _jamba(cfg: Config) -> _Parsed:
    """Jamba: Mamba-1 layers with attention every ``attn_layer_period``, MoE every
    ``expert_layer_period`` layers."""
    hidden = _pos(cfg, "hidden_size")
    n = _pos(cfg, "num_hidden_layers")
    heads = _pos(cfg, "num_attention_heads")
    kv = _pos(cfg, "num_key_value_heads", heads)
    vocab = _pos(cfg, "vocab_size")
    hd = _head_dim(cfg, hidden, heads)
    attn_period = _pos(cfg, "attn_layer_period", 8)
    attn_offset = _int(cfg, "attn_layer_offset", 4)
    exp_period = _pos(cfg, "expert_layer_period", 2)
    exp_offset = _int(cfg, "expert_layer_offset", 1)
    experts = _int(cfg, "num_experts", 16)
    top_k = _int(cfg, "num_experts_per_tok", 2)
    inter = _pos(cfg, "intermediate_size")
    d_state = _pos(cfg, "mamba_d_state", 16)
    d_conv = _pos(cfg, "mamba_d_conv", 4)
    d_inner = _pos(cfg, "mamba_expand", 2) * hidden
    dt_rank_raw = cfg.get("mamba_dt_rank", "auto")
    dt_rank = math.ceil(hidden / 16) if dt_rank_raw == "auto" else int(dt_rank_raw)
    mamba = hidden * 2 * d_inner + d_inner * hidden  # in_proj, out_proj
    if cfg.get("mamba_proj_bias"):
        mamba += 2 * d_inner + hidden
    mamba += d_inner * d_conv + (d_inner if cfg.get("mamba_conv_bias", True) else 0)
    mamba += d_inner * (dt_rank + 2 * d_state)  # x_proj
    mamba += dt_rank * d_inner + d_inner  # dt_proj
    mamba += d_inner * d_state + d_inner  # A_log, D
    mamba += dt_rank + 2 * d_state  # dt / B / C layernorms
    attn = _attention_params(hidden, heads, kv, hd)
    p = _Params()
    _embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("norms", hidden)  # final norm
    layers: list[LayerSpec] = []
    for i in range(n):
        p.add("norms", 2 * hidden)
        if i % attn_period == attn_offset:
            layers.append(_attn_layer(kv, hd, None))
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
            p.add_parts(_mlp_params(hidden, inter, cat="experts"), experts, top_k)
            p.add("router", hidden * experts)
        else:
            p.add_parts(_mlp_params(hidden, inter))
    return _Parsed(
        tuple(layers), p, hidden, heads, hd, vocab, _pos(cfg, "max_position_embeddings", 262144)
    )


def _qwen3_next(cfg: Config) -> _Parsed:
    """Qwen3-Next: Gated DeltaNet linear layers + gated full attention every
    ``full_attention_interval`` layers; MoE with a gated shared expert."""
    hidden = _pos(cfg, "hidden_size")
    n = _pos(cfg, "num_hidden_layers")
    heads = _pos(cfg, "num_attention_heads")
    kv = _pos(cfg, "num_key_value_heads", heads)
    vocab = _pos(cfg, "vocab_size")
    hd = _head_dim(cfg, hidden, heads)
    types = cfg.get("layer_types")
    if types is None:
        interval = _pos(cfg, "full_attention_interval", 4)
        types = [
            "full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n)
        ]
    if len(types) != n:
        raise ConfigError(f"config field 'layer_types' has {len(types)} entries for {n} layers")
    k_heads = _pos(cfg, "linear_num_key_heads")
    v_heads = _pos(cfg, "linear_num_value_heads")
    k_dim = _pos(cfg, "linear_key_head_dim")
    v_dim = _pos(cfg, "linear_value_head_dim")
    d_conv = _pos(cfg, "linear_conv_kernel_dim", 4)
    conv_dim = 2 * k_heads * k_dim + v_heads * v_dim
    linear = hidden * (conv_dim + v_heads * v_dim)  # in_proj_qkvz
    linear += hidden * 2 * v_heads  # in_proj_ba
    linear += conv_dim * d_conv  # depthwise conv, no bias
    linear += 2 * v_heads + v_dim  # dt_bias, A_log, gated norm
    linear += v_heads * v_dim * hidden  # out_proj
    attn = _attention_params(hidden, heads, kv, hd, qk_norm=True, q_gate=True)
    experts = _int(cfg, "num_experts", 0)
    top_k = _int(cfg, "num_experts_per_tok", 0)
    sparse_step = _pos(cfg, "decoder_sparse_step", 1)
    mlp_only = set(cfg.get("mlp_only_layers") or [])
    p = _Params()
    _embedding_params(cfg, hidden, vocab, p, tied_default=False)
    p.add("norms", hidden)
    layers: list[LayerSpec] = []
    for i, t in enumerate(types):
        p.add("norms", 2 * hidden)
        if t == "full_attention":
            layers.append(_attn_layer(kv, hd, None))
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
            one = _mlp_params(hidden, _pos(cfg, "moe_intermediate_size"), cat="experts")
            shared_inter = _int(cfg, "shared_expert_intermediate_size", 0)
            p.add_parts(one, experts, top_k)
            p.add("router", hidden * experts)
            if shared_inter:  # shared expert + its sigmoid gate (hidden -> 1)
                p.add_parts(_mlp_params(hidden, shared_inter, cat="shared_experts"))
                p.add("shared_experts", hidden)
        else:
            p.add_parts(_mlp_params(hidden, _pos(cfg, "intermediate_size")))
    return _Parsed(
        tuple(layers), p, hidden, heads, hd, vocab, _pos(cfg, "max_position_embeddings", 32768)
    )


_PARSERS: dict[str, _Parser] = {
    "llama": _decoder,
    "mistral": _decoder,
    "mixtral": _decoder,
    "qwen2": _decoder,
    "qwen3": _decoder,
    "qwen3_moe": _decoder,
    "phi3": _decoder,
    "gemma2": _decoder,
    "gemma3_text": _decoder,
    "gpt_oss": _decoder,
    "qwen3_next": _qwen3_next,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "nemotron_h": _nemotron_h,
    "jamba": _jamba,
    "opt": _opt,
    "phi": _phi,
}

#: model_type values :func:`from_hf_config` understands (``gemma3`` = multimodal wrapper,
#: parsed from its ``text_config``).
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted([*_PARSERS, "gemma3"]))


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language-model part of a multimodal config (Gemma-3's ``text_config``)."""
    if cfg.get("model_type") == "gemma3":
        text = dict(cfg.get("text_config") or {})
        text.setdefault("model_type", "gemma3_text")
        for key in ("torch_dtype", "dtype", "tie_word_embeddings", "quantization_config"):
            if key in cfg and key not in text:
                text[key] = cfg[key]
        return _gemma3_defaults(text)
    if cfg.get("model_type") == "gemma3_text":
        return _gemma3_defaults(cfg)
    return cfg


def _gemma3_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """Gemma-3 text configs omit fields that take transformers' Gemma3TextConfig defaults."""
    out = {
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "head_dim": 256,
        "tie_word_embeddings": True,
    }
    out.update({k: v for k, v in cfg.items() if v is not None})
    return out


# ---------------------------------------------------------------------------
# Checkpoint weight format (quantization_config)
# ---------------------------------------------------------------------------

#: Categories each method quantizes by default. MXFP4 (gpt-oss): the MoE experts only,
#: as vLLM's Mxfp4Config does (FusedMoE layers; linear layers stay unquantized). FP8
#: (DeepSeek-V3): every linear of the decoder layers; embeddings, lm_head and the router
#: ship in bf16 (vLLM's DeepseekV2 gate is created without a quant config).
_QUANTIZED_BY_DEFAULT: dict[str, tuple[str, ...]] = {
    "mxfp4": ("experts",),
    "fp8": ("attention", "mlp", "experts", "shared_experts"),
}

#: Module-name components of ``modules_to_not_convert`` / ``ignored_layers`` patterns and
#: the categories they exclude (the last matching component decides).
_MODULE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "embed_tokens": ("embedding",),
    "lm_head": ("lm_head",),
    "self_attn": ("attention",),
    "attn": ("attention",),
    "attention": ("attention",),
    "mlp": ("mlp", "experts", "shared_experts", "router"),
    "experts": ("experts",),
    "shared_expert": ("shared_experts",),
    "shared_experts": ("shared_experts",),
    "router": ("router",),
    "gate": ("router",),
    "mixer": ("recurrent",),
}


def _excluded_categories(patterns: list[Any]) -> set[str]:
    """Categories named by module patterns such as ``model.layers.*.self_attn``.

    A pattern excludes its whole category in every layer, also when it names one layer
    (prices the checkpoint higher, never lower); the last known component decides
    (``model.layers.*.mlp.router``: the router only; ``...self_attn.q_proj``: attention).
    """
    out: set[str] = set()
    for pattern in patterns:
        named = [x for x in str(pattern).split(".") if x in _MODULE_CATEGORIES]
        if named:
            out.update(_MODULE_CATEGORIES[named[-1]])
    return out


def _weight_format(cfg: Config, present: set[str]) -> WeightFormat | None:
    """The checkpoint's weight format from ``quantization_config``, over the parameter
    categories ``present`` in the model.

    Understands ``quant_method`` ``mxfp4`` and ``fp8`` (``weight_block_size``); any other
    method (or none) returns None: weights are priced in the model dtype.
    """
    qc = cfg.get("quantization_config")
    if not isinstance(qc, Mapping):
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method not in _QUANTIZED_BY_DEFAULT:
        return None
    skip = _excluded_categories(
        list(qc.get("modules_to_not_convert") or []) + list(qc.get("ignored_layers") or [])
    )
    cats = tuple(c for c in _QUANTIZED_BY_DEFAULT[method] if c in present and c not in skip)
    block = qc.get("weight_block_size") if method == "fp8" else None
    if block is not None:
        if (
            not isinstance(block, list | tuple)
            or len(block) != 2
            or not all(isinstance(b, int) and b >= 1 for b in block)
        ):
            raise ConfigError(
                f"quantization_config.weight_block_size must be two positive integers, "
                f"got {block!r}"
            )
        block = (int(block[0]), int(block[1]))
    return WeightFormat(method, cats, block)


def from_hf_config(config: Config | str | Path, name: str | None = None) -> ModelSpec:
    """A :class:`ModelSpec` from a Hugging Face config (dict, config.json path or directory).

    Raises ConfigError for an unsupported ``model_type``, a missing or invalid field, or an
    unknown layer kind, naming the field.
    """
    cfg = _text_config(load_config(config))
    mt = cfg.get("model_type")
    parser = _PARSERS.get(str(mt))
    if parser is None:
        raise ConfigError(
            f"unsupported model_type {mt!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    parsed = parser(cfg)
    dtype = _dtype(cfg)
    label = name or str(cfg.get("_name_or_path") or mt)
    return ModelSpec(
        name=label,
        architecture=str(mt),
        layers=parsed.layers,
        hidden_size=parsed.hidden,
        num_attention_heads=parsed.heads,
        vocab_size=parsed.vocab,
        num_params=parsed.params.total,
        num_active_params=parsed.params.active,
        max_context=parsed.max_context,
        dtype=dtype,
        state_dtype=parsed.state_dtype or dtype,
        head_dim=parsed.head_dim,
        param_breakdown=parsed.params.breakdown(),
        weight_format=_weight_format(cfg, {c for c, _ in parsed.params.breakdown()}),
    )


__all__ = ["SUPPORTED_MODEL_TYPES", "from_hf_config", "load_config"]
