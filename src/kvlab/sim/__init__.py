"""kvlab.sim: a fast, vLLM-v1-exact simulation of the paged KV cache and its scheduler.

``simulate(workload, SimConfig(model=..., gpu=...)) -> RunResult``.

The names below load on first use, so that importing one module of the package
(``kvlab.sim.cache_curve``, say) does not import the engine.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names loaded lazily: name -> module.
_LAZY: dict[str, str] = {
    "POLICIES": "kvlab.sim.policies",
    "SimConfig": "kvlab.sim.config",
    "simulate": "kvlab.sim.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kvlab.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["POLICIES", "SimConfig", "simulate"]
