"""Capacity planning: will a model fit on a GPU, and how many sequences at what context?

:func:`plan` reproduces, in our own code, how vLLM v1 sizes its paged KV cache
(vLLM 0.32, ``vllm/v1/core/kv_cache_utils.py`` and ``vllm/v1/kv_cache_interface.py``);
docs/plan.md walks through it. One module per noun:

``defaults``
    vLLM's defaults that depend on the model and GPU (block size, batch limits).
``groups``
    every layer's cache page and the KV cache groups vLLM forms (hybrid block-size
    alignment, page unification, sliding-window and Mamba groups).
``capacity``
    KV memory -> blocks, tokens, max concurrency; vLLM's startup check.
``overhead``
    the per-GPU memory besides weights and KV cache: a documented estimate.
``result``
    :class:`PlanResult` and its ``--json`` form.
``advice``
    the verdict with its reasons, notes, and the what-ifs (fp8, TP, shorter context,
    block size, offload).
``planner``
    :func:`plan` itself, tying the above together.

This package re-exports the public names; ``kvlab.plan`` as an attribute of ``kvlab``
is the function (``kvlab.plan(...)``), so reach a submodule with
``from kvlab.plan.capacity import ...``.
"""

from kvlab.plan.capacity import Capacity, compute_capacity, estimate_max_model_len
from kvlab.plan.defaults import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    default_batch_limits,
    default_block_size,
)
from kvlab.plan.groups import CacheGroup, LayerCache, cdiv, group_layers, layer_caches
from kvlab.plan.overhead import Overhead, estimate_overhead
from kvlab.plan.planner import plan
from kvlab.plan.result import PlanResult

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "CacheGroup",
    "Capacity",
    "LayerCache",
    "Overhead",
    "PlanResult",
    "cdiv",
    "compute_capacity",
    "default_batch_limits",
    "default_block_size",
    "estimate_max_model_len",
    "estimate_overhead",
    "group_layers",
    "layer_caches",
    "plan",
]
