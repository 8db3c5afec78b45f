"""Workloads: request records, generators, trace importers, deterministic content.

Names are loaded on first use, so importing one submodule (say the records)
does not import the generators and numpy.
"""

from __future__ import annotations

from typing import Any

from kvlab._lazy import load_lazy

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
    return load_lazy(__name__, _LAZY, globals(), name)


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
