"""Parameter counting from the shapes a config implies, by category.

Every weight tensor the model's modules create: embeddings (+ an untied ``lm_head``),
attention projections with their biases, dense MLPs (gated or not), MoE experts + router
+ shared experts, and every norm; the family modules add what is theirs (MLA low-rank
projections, Mamba / Gated DeltaNet mixers). ``num_active_params`` counts what one token
uses: everything but the routed experts, plus ``top_k`` of them per MoE layer.
Multi-token-prediction layers (DeepSeek ``num_nextn_predict_layers``) and vision towers
are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvlab.models.hf.config import Config
from kvlab.models.spec import PARAM_CATEGORIES

#: Parameter counts by category (kvlab.models.spec.PARAM_CATEGORIES).
Parts = dict[str, int]


@dataclass
class Params:
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


def sum_parts(*parts: Parts) -> Parts:
    """Category-wise sum of several :data:`Parts`."""
    out: Parts = {}
    for part in parts:
        for cat, n in part.items():
            out[cat] = out.get(cat, 0) + n
    return out


def attention_params(
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


def mlp_params(
    hidden: int, inter: int, *, gated: bool = True, bias: bool = False, cat: str = "mlp"
) -> Parts:
    """A (gated) MLP's matrices under ``cat`` and its biases under ``biases``."""
    b = (2 * inter if gated else inter) + hidden if bias else 0
    return {cat: (3 if gated else 2) * hidden * inter, "biases": b}


def embedding_params(cfg: Config, hidden: int, vocab: int, p: Params, tied_default: bool) -> bool:
    """Add the input embedding and, unless tied, the output head; return whether tied."""
    tied = bool(cfg.get("tie_word_embeddings", tied_default))
    p.add("embedding", vocab * hidden)
    if not tied:
        p.add("lm_head", vocab * hidden)
    return tied


__all__ = [
    "Params",
    "Parts",
    "attention_params",
    "embedding_params",
    "mlp_params",
    "sum_parts",
]
