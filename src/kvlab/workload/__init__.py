"""Workloads: request records, generators, trace importers, deterministic content.

Names are loaded on first use, so importing one submodule (say the records)
does not import the generators and numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names loaded lazily: name -> module.
_LAZY: dict[str, str] = {
    "RETENTION_CLASSES": "kvlab.workload.records",
    "Request": "kvlab.workload.records",
    "Segment": "kvlab.workload.records",
    "Workload": "kvlab.workload.records",
    "SHAPES": "kvlab.workload.generators",
    "generate": "kvlab.workload.generators",
    "read_workload": "kvlab.workload.io",
    "write_workload": "kvlab.workload.io",
    "prefix_reuse_bound": "kvlab.workload.stats",
    "workload_stats": "kvlab.workload.stats",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kvlab.workload' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "RETENTION_CLASSES",
    "SHAPES",
    "Request",
    "Segment",
    "Workload",
    "generate",
    "prefix_reuse_bound",
    "read_workload",
    "workload_stats",
    "write_workload",
]
