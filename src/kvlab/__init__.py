"""kvlab: plan, simulate and measure the KV cache of LLM inference.

The core (models, hardware, plan, workload, sim) is pure Python + numpy and
imports no heavy library; live backends and plots are optional extras.
"""

from __future__ import annotations

__version__ = "0.1.0"

from kvlab.errors import (
    BackendError,
    CapacityError,
    ConfigError,
    KvlabError,
    WorkloadError,
)
from kvlab.results import RequestRecord, RunResult

__all__ = [
    "BackendError",
    "CapacityError",
    "ConfigError",
    "KvlabError",
    "RequestRecord",
    "RunResult",
    "WorkloadError",
    "__version__",
]
