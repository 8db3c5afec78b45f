"""Model memory: ModelSpec, formulas, config.json parsing and the catalog."""

from kvlab.models.spec import (
    KV_DTYPES,
    LAYER_KINDS,
    LayerSpec,
    ModelSpec,
    dtype_bytes,
    kv_bytes_per_token,
    sequence_bytes,
    sliding_cap_bytes,
    state_bytes_per_sequence,
    weights_bytes,
)

__all__ = [
    "KV_DTYPES",
    "LAYER_KINDS",
    "LayerSpec",
    "ModelSpec",
    "dtype_bytes",
    "kv_bytes_per_token",
    "sequence_bytes",
    "sliding_cap_bytes",
    "state_bytes_per_sequence",
    "weights_bytes",
]
