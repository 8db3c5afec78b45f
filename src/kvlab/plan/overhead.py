"""The memory vLLM spends per GPU besides weights and KV cache: a documented estimate.

Owns :class:`Overhead` and its constants. The estimate is what turns a GPU's memory into
available KV memory when the caller does not give that figure
(``kv_cache_memory_bytes``, like vLLM's ``--kv-cache-memory-bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvlab.hardware import MIB
from kvlab.models.spec import ModelSpec

# Overhead estimate constants (per GPU). See Overhead.
CUDA_CONTEXT_BYTES = 512 * MIB
CUDA_GRAPH_BYTES = 512 * MIB
#: NCCL buffers by TP size: AIConfigurator gpu_systems ``misc.nccl_mem``.
NCCL_BYTES = {1: 0, 2: 358_612_992, 4: 411_041_792, 8: 411_041_792}
#: Peak transient activation of the profile forward pass, in units of
#: ``max_num_batched_tokens * hidden_size * 2 bytes`` (residual, QKV, attention
#: output, MLP gate/up/act/down buffers of one layer live at once).
ACTIVATION_FACTOR = 18


@dataclass(frozen=True, slots=True)
class Overhead:
    """Per-GPU memory vLLM spends besides weights and KV cache: an estimate.

    ``cuda_context_bytes`` (CUDA context, cuBLAS workspaces: non-torch memory),
    ``nccl_bytes`` (NCCL buffers at TP > 1, AIConfigurator's measured table),
    ``activation_bytes`` (peak of vLLM's profile run: ``ACTIVATION_FACTOR *
    max_num_batched_tokens * hidden_size * 2`` bytes, or the sampler's
    ``2 * max_num_seqs * vocab_size * 4`` bytes of fp32 logits, whichever is
    larger), ``cuda_graph_bytes`` (captured CUDA graphs, which vLLM profiles and
    subtracts by default). Typical error: 1-2 GiB; read vLLM's "Available KV
    cache memory" log line and pass it as ``kv_cache_memory_bytes`` to be exact.
    """

    cuda_context_bytes: int
    nccl_bytes: int
    activation_bytes: int
    cuda_graph_bytes: int

    @property
    def total_bytes(self) -> int:
        return (
            self.cuda_context_bytes
            + self.nccl_bytes
            + self.activation_bytes
            + self.cuda_graph_bytes
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "cuda_context_bytes": self.cuda_context_bytes,
            "nccl_bytes": self.nccl_bytes,
            "activation_bytes": self.activation_bytes,
            "cuda_graph_bytes": self.cuda_graph_bytes,
            "total_bytes": self.total_bytes,
        }


def estimate_overhead(
    spec: ModelSpec, *, tp: int, max_num_batched_tokens: int, max_num_seqs: int
) -> Overhead:
    """The :class:`Overhead` estimate for ``spec`` at ``tp``."""
    forward = ACTIVATION_FACTOR * max_num_batched_tokens * spec.hidden_size * 2
    sampler = 2 * max_num_seqs * spec.vocab_size * 4
    nccl = NCCL_BYTES.get(tp, NCCL_BYTES[8]) if tp > 1 else 0
    return Overhead(CUDA_CONTEXT_BYTES, nccl, max(forward, sampler), CUDA_GRAPH_BYTES)


__all__ = [
    "ACTIVATION_FACTOR",
    "CUDA_CONTEXT_BYTES",
    "CUDA_GRAPH_BYTES",
    "NCCL_BYTES",
    "Overhead",
    "estimate_overhead",
]
