"""kvlab: plan, simulate and measure the KV cache of LLM inference.

The public API (pinned by ``tests/test_public_api.py``)::

    import kvlab

    spec = kvlab.get_model("meta-llama/Llama-3.1-8B")
    kvlab.plan(spec, "h100-sxm", context_tokens=131072).to_dict()
    wl = kvlab.generate("agentic", seed=1)            # or kvlab.load_workload(path)
    run = kvlab.simulate(wl, kvlab.SimConfig(model="llama-3.1-8b", gpu="h100"))
    run.save("runs/agentic"); kvlab.RunResult.load("runs/agentic")

The core (models, hardware, plan, workload, sim) is pure Python + numpy and
imports no heavy library; names are loaded on first use, so ``import kvlab``
stays cheap. Live backends and plots are optional extras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvlab._lazy import load_lazy

__version__ = "0.1.0"

from kvlab.errors import (
    BackendError,
    CapacityError,
    ConfigError,
    DependencyMissing,
    KvlabError,
    WorkloadError,
)

# Eager, because the submodule kvlab.plan would otherwise shadow the function.
from kvlab.plan import PlanResult, plan

if TYPE_CHECKING:
    from kvlab.results import RequestRecord, RunResult

#: Public names loaded lazily: name -> module.
_LAZY: dict[str, str] = {
    "RequestRecord": "kvlab.results",
    "RunResult": "kvlab.results",
    "ModelSpec": "kvlab.models.spec",
    "LayerSpec": "kvlab.models.spec",
    "get_model": "kvlab.models.catalog",
    "list_models": "kvlab.models.catalog",
    "from_hf_config": "kvlab.models.hf",
    "kv_bytes_per_token": "kvlab.models.spec",
    "sequence_bytes": "kvlab.models.spec",
    "weights_bytes": "kvlab.models.spec",
    "GpuSpec": "kvlab.hardware",
    "get_gpu": "kvlab.hardware",
    "list_gpus": "kvlab.hardware",
    "Request": "kvlab.workload.records",
    "Segment": "kvlab.workload.records",
    "Workload": "kvlab.workload.records",
    "generate": "kvlab.workload.generators",
    "load_workload": "kvlab.workload.detect",
    "read_workload": "kvlab.workload.io",
    "write_workload": "kvlab.workload.io",
    "SimConfig": "kvlab.sim.config",
    "simulate": "kvlab.sim.engine",
    "cache_curve": "kvlab.sim.cache_curve",
}


def __getattr__(name: str) -> Any:
    return load_lazy(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BackendError",
    "CapacityError",
    "ConfigError",
    "DependencyMissing",
    "GpuSpec",
    "KvlabError",
    "LayerSpec",
    "ModelSpec",
    "PlanResult",
    "Request",
    "RequestRecord",
    "RunResult",
    "Segment",
    "SimConfig",
    "Workload",
    "WorkloadError",
    "__version__",
    "cache_curve",
    "from_hf_config",
    "generate",
    "get_gpu",
    "get_model",
    "kv_bytes_per_token",
    "list_gpus",
    "list_models",
    "load_workload",
    "plan",
    "read_workload",
    "sequence_bytes",
    "simulate",
    "weights_bytes",
    "write_workload",
]
