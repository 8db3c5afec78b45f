"""Plain-data summaries of a ModelSpec: layer groups and memory figures (for CLI and JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kvlab.models.spec import (
    ModelSpec,
    dtype_bytes,
    kv_bytes_per_token,
    layer_kinds_summary,
    sequence_bytes,
    sliding_cap_bytes,
    state_bytes_per_sequence,
    weights_bytes,
    weights_bytes_by_category,
    weights_format,
)


@dataclass(frozen=True, slots=True)
class LayerGroup:
    """Layers of one identical shape: ``count`` of them, first at ``first_index``
    (an index into ``ModelSpec.layers``).

    Byte figures are per layer, per GPU at the summary's ``tp`` and dtypes.
    """

    kind: str
    count: int
    first_index: int
    num_kv_heads: int
    num_kv_heads_per_gpu: int
    head_dim: int
    head_dim_v: int
    window: int | None
    latent_dim: int
    bytes_per_token: float
    state_bytes: float


def layer_groups(spec: ModelSpec, kv_dtype: str | None = None, tp: int = 1) -> list[LayerGroup]:
    """Group the model's layers by identical shape, in order of first appearance."""
    kv_b = dtype_bytes(kv_dtype or spec.dtype)
    ssm_b = dtype_bytes(spec.state_dtype)
    conv_b = dtype_bytes(spec.dtype)
    groups: dict[Any, LayerGroup] = {}
    for i, layer in enumerate(spec.layers):
        g = groups.get(layer)
        if g is not None:
            groups[layer] = LayerGroup(**{**asdict(g), "count": g.count + 1})
            continue
        groups[layer] = LayerGroup(
            kind=layer.kind,
            count=1,
            first_index=i,
            num_kv_heads=layer.num_kv_heads,
            num_kv_heads_per_gpu=layer.kv_heads_per_gpu(tp) if layer.num_kv_heads else 0,
            head_dim=layer.head_dim,
            head_dim_v=layer.v_dim,
            window=layer.window,
            latent_dim=layer.kv_lora_rank + layer.qk_rope_head_dim,
            bytes_per_token=layer.elems_per_token(tp) * kv_b,
            state_bytes=layer.ssm_elems_per_gpu(tp) * ssm_b + layer.conv_elems_per_gpu(tp) * conv_b,
        )
    return list(groups.values())


def _weight_quant(spec: ModelSpec) -> dict[str, Any] | None:
    """The checkpoint's quantized format as plain data (None: all in ``spec.dtype``)."""
    fmt = spec.weight_format
    if fmt is None:
        return None
    return {
        "method": fmt.method,
        "categories": list(fmt.categories),
        "block_size": list(fmt.block_size) if fmt.block_size else None,
        "bytes_per_param": fmt.bytes_per_param(),
    }


def model_summary(spec: ModelSpec, kv_dtype: str | None = None, tp: int = 1) -> dict[str, Any]:
    """JSON-ready memory facts of ``spec`` (bytes per GPU at ``tp``; KV in ``kv_dtype``)."""
    kv = kv_dtype or spec.dtype
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "architecture": spec.architecture,
        "description": spec.description,
        "num_layers": spec.num_layers,
        "layers_by_kind": layer_kinds_summary(spec.layers),
        "hidden_size": spec.hidden_size,
        "num_attention_heads": spec.num_attention_heads,
        "vocab_size": spec.vocab_size,
        "num_params": spec.num_params,
        "num_active_params": spec.num_active_params,
        "max_context": spec.max_context,
        "dtype": spec.dtype,
        "state_dtype": spec.state_dtype,
        "kv_dtype": kv,
        "tp": tp,
        "kv_bytes_per_token": kv_bytes_per_token(spec, kv, tp),
        "sliding_cap_bytes": sliding_cap_bytes(spec, kv, tp),
        "state_bytes_per_sequence": state_bytes_per_sequence(spec, tp),
        "max_context_sequence_bytes": sequence_bytes(spec, spec.max_context, kv, tp),
        "weights_bytes": weights_bytes(spec, tp),
        "weights_format": weights_format(spec),
        "weight_quant": _weight_quant(spec),
        "params_by_category": dict(spec.param_breakdown),
        "weights_bytes_by_category": weights_bytes_by_category(spec, tp),
        "layer_groups": [asdict(g) for g in layer_groups(spec, kv, tp)],
    }


__all__ = ["LayerGroup", "layer_groups", "model_summary"]
