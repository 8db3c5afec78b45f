"""Model memory: ModelSpec, formulas, config.json parsing and the catalog.

Names load on first use, so ``import kvlab.models.spec`` (what the planner and the
simulator need) does not import the catalog or the config parsers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvlab._lazy import load_lazy

if TYPE_CHECKING:
    from kvlab.models.catalog import (
        CATALOG,
        CatalogEntry,
        catalog_entry,
        get_model,
        list_models,
    )
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

#: Public names loaded lazily: name -> module.
_LAZY: dict[str, str] = {
    "CATALOG": "kvlab.models.catalog",
    "CatalogEntry": "kvlab.models.catalog",
    "catalog_entry": "kvlab.models.catalog",
    "get_model": "kvlab.models.catalog",
    "list_models": "kvlab.models.catalog",
    "SUPPORTED_MODEL_TYPES": "kvlab.models.hf",
    "from_hf_config": "kvlab.models.hf",
    "load_config": "kvlab.models.hf",
    "KV_DTYPES": "kvlab.models.spec",
    "LAYER_KINDS": "kvlab.models.spec",
    "LayerSpec": "kvlab.models.spec",
    "ModelSpec": "kvlab.models.spec",
    "WeightFormat": "kvlab.models.spec",
    "check_tp": "kvlab.models.spec",
    "dtype_bytes": "kvlab.models.spec",
    "kv_bytes_per_token": "kvlab.models.spec",
    "layer_bytes_per_token": "kvlab.models.spec",
    "layer_kinds_summary": "kvlab.models.spec",
    "sequence_bytes": "kvlab.models.spec",
    "sliding_cap_bytes": "kvlab.models.spec",
    "state_bytes_per_sequence": "kvlab.models.spec",
    "weights_bytes": "kvlab.models.spec",
    "weights_bytes_by_category": "kvlab.models.spec",
    "weights_format": "kvlab.models.spec",
    "LayerGroup": "kvlab.models.summary",
    "layer_groups": "kvlab.models.summary",
    "model_summary": "kvlab.models.summary",
}


def __getattr__(name: str) -> Any:
    return load_lazy(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted(__all__)


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
