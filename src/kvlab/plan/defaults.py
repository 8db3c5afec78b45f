"""vLLM's defaults that :func:`kvlab.plan.plan` takes when an option is not given.

Owns the block size, the GPU memory utilization and the batch limits vLLM picks by
itself, some of which depend on the GPU (its memory, its SM generation) or on the
model (MLA on Blackwell).
"""

from __future__ import annotations

from kvlab.hardware import GIB, GpuSpec
from kvlab.models.spec import ModelSpec

#: vLLM's default GPU block size (CacheConfig.DEFAULT_BLOCK_SIZE); the CPU build uses 128.
DEFAULT_BLOCK_SIZE = 16
#: vLLM's default --gpu-memory-utilization (vllm/config/cache.py).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92


def default_block_size(spec: ModelSpec, gpu: GpuSpec) -> int:
    """The block size vLLM picks when ``--block-size`` is not given.

    16 (``CacheConfig.DEFAULT_BLOCK_SIZE``), except for MLA models on Blackwell
    data-center GPUs (SM 10.x), whose first MLA backend, FlashInfer MLA, takes
    32 or 64-token blocks: vLLM then uses the smallest, 32
    (``Platform._preferred_block_size_for_backends``).
    """
    if gpu.sm_version // 10 == 10 and spec.count("mla"):
        return 32
    return DEFAULT_BLOCK_SIZE


def default_batch_limits(gpu: GpuSpec) -> tuple[int, int]:
    """``(max_num_batched_tokens, max_num_seqs)`` vLLM's API server picks for ``gpu``.

    vLLM ``EngineArgs.get_batch_defaults`` (OPENAI_API_SERVER context): >= 160 GiB
    -> 16384 / 1024; >= 70 GiB and not an A100 -> 8192 / 1024; else 2048 / 256.
    """
    if gpu.memory_bytes >= 160 * GIB:
        return 16384, 1024
    if gpu.memory_bytes >= 70 * GIB and not gpu.name.startswith("a100"):
        return 8192, 1024
    return 2048, 256


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "default_batch_limits",
    "default_block_size",
]
