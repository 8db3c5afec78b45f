"""Model memory: ModelSpec, formulas, config.json parsing and the catalog."""

from kvlab.models.catalog import CATALOG, CatalogEntry, catalog_entry, get_model, list_models
from kvlab.models.hf import SUPPORTED_MODEL_TYPES, from_hf_config, load_config
from kvlab.models.spec import (
    KV_DTYPES,
    LAYER_KINDS,
    LayerSpec,
    ModelSpec,
    WeightFormat,
    check_tp,
    dtype_bytes,
    kv_bytes_per_token,
    layer_bytes_per_token,
    layer_kinds_summary,
    sequence_bytes,
    sliding_cap_bytes,
    state_bytes_per_sequence,
    weights_bytes,
    weights_bytes_by_category,
    weights_format,
)
from kvlab.models.summary import LayerGroup, layer_groups, model_summary

__all__ = [
    "CATALOG",
    "KV_DTYPES",
    "LAYER_KINDS",
    "SUPPORTED_MODEL_TYPES",
    "CatalogEntry",
    "LayerGroup",
    "LayerSpec",
    "ModelSpec",
    "WeightFormat",
    "catalog_entry",
    "check_tp",
    "dtype_bytes",
    "from_hf_config",
    "get_model",
    "kv_bytes_per_token",
    "layer_bytes_per_token",
    "layer_groups",
    "layer_kinds_summary",
    "list_models",
    "load_config",
    "model_summary",
    "sequence_bytes",
    "sliding_cap_bytes",
    "state_bytes_per_sequence",
    "weights_bytes",
    "weights_bytes_by_category",
    "weights_format",
]
