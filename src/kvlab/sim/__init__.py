"""kvlab.sim: a fast, vLLM-v1-exact simulation of the paged KV cache and its scheduler.

``simulate(workload, SimConfig(model=..., gpu=...)) -> RunResult``.

The names below load on first use, so that importing one module of the package
(``kvlab.sim.cache_curve``, say) does not import the engine.
"""

from __future__ import annotations

from typing import Any

from kvlab._lazy import load_lazy

#: Public names loaded lazily: name -> module.
_LAZY: dict[str, str] = {
    "POLICIES": "kvlab.sim.policies",
    "SimConfig": "kvlab.sim.config",
    "simulate": "kvlab.sim.engine",
}


def __getattr__(name: str) -> Any:
    return load_lazy(__name__, _LAZY, globals(), name)


__all__ = ["POLICIES", "SimConfig", "simulate"]
