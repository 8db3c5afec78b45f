"""PlanResult: everything one plan computed, and its ``--json`` form.

Owns the result record and its serialisation; :mod:`kvlab.plan.planner` fills it,
:mod:`kvlab.plan.advice` writes its verdict, reasons, notes and what-ifs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kvlab.plan.capacity import Capacity
from kvlab.plan.overhead import Overhead


def finite(x: float) -> float | None:
    """``x``, or None when it is infinite (JSON has no infinity: an attention-free
    model's concurrency is unbounded)."""
    return None if math.isinf(x) else x


@dataclass(frozen=True, slots=True)
class PlanResult:
    """Everything :func:`plan` computed; ``to_dict()`` is the ``--json`` output.

    Bytes are per GPU. ``kv_bytes_per_token`` counts growing layers (full
    attention, MLA) only; ``sequence_bytes`` is one sequence at
    ``context_tokens``, token-exact (no block rounding), all layers, including
    ``state_bytes_per_sequence``. ``fits`` answers: can vLLM start and hold
    ``concurrency`` sequences of ``context_tokens`` at once; ``reasons`` says
    why, with numbers.
    """

    model: str
    gpu: str
    kv_dtype: str
    tp: int
    context_tokens: int
    concurrency: int
    gpu_memory_bytes: int
    gpu_memory_utilization: float
    weights_bytes: int
    overhead: Overhead
    overhead_bytes: int
    kv_memory_source: str
    available_kv_bytes: int
    kv_bytes_per_token: int
    sequence_bytes: int
    state_bytes_per_sequence: int
    max_num_batched_tokens: int
    max_num_seqs: int
    async_scheduling: bool
    enable_prefix_caching: bool
    requested_block_size: int
    weight_dtype: str | None
    capacity: Capacity
    vllm_starts: bool
    estimated_max_model_len: int | None
    fits: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    whatifs: tuple[dict[str, Any], ...] = field(default=())
    weights_format: str = ""

    @property
    def block_size(self) -> int:
        return self.capacity.block_size

    @property
    def num_gpu_blocks(self) -> int:
        return self.capacity.num_gpu_blocks

    @property
    def kv_cache_tokens(self) -> int:
        return self.capacity.kv_cache_tokens

    @property
    def max_concurrency(self) -> float:
        return self.capacity.max_concurrency

    def to_dict(self) -> dict[str, Any]:
        cap = self.capacity
        args = (cap.max_model_len, cap.in_flight_tokens, cap.mamba_pages)
        return {
            "model": self.model,
            "gpu": self.gpu,
            "kv_dtype": self.kv_dtype,
            "tp": self.tp,
            "context_tokens": self.context_tokens,
            "concurrency": self.concurrency,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "sequence_bytes": self.sequence_bytes,
            "state_bytes_per_sequence": self.state_bytes_per_sequence,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "weights_bytes": self.weights_bytes,
            "weight_dtype": self.weight_dtype or "model",
            "weights_format": self.weights_format,
            "overhead_bytes": self.overhead_bytes,
            "overhead": self.overhead.to_dict(),
            "kv_memory_source": self.kv_memory_source,
            "available_kv_bytes": self.available_kv_bytes,
            "block_size": cap.block_size,
            "requested_block_size": self.requested_block_size,
            "bytes_per_block": cap.bytes_per_block,
            "blocks_per_request": cap.blocks_per_request,
            "num_gpu_blocks": cap.num_gpu_blocks,
            "kv_cache_tokens": cap.kv_cache_tokens,
            "max_concurrency": finite(cap.max_concurrency),
            "groups": [g.to_dict(*args) for g in cap.groups],
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_num_seqs": self.max_num_seqs,
            "async_scheduling": self.async_scheduling,
            "enable_prefix_caching": self.enable_prefix_caching,
            "vllm_starts": self.vllm_starts,
            "estimated_max_model_len": self.estimated_max_model_len,
            "vllm_log": cap.log_lines() if cap.groups else [],
            "fits": self.fits,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "whatifs": [dict(w) for w in self.whatifs],
            **self._override_dict(),
        }

    def _override_dict(self) -> dict[str, Any]:
        """The block override's keys, present only when one was given (so plans
        without it print what they always did)."""
        before = self.capacity.blocks_before_override
        if before is None:
            return {}
        return {
            "num_gpu_blocks_override": self.capacity.num_gpu_blocks,
            "blocks_before_override": before,
            "override_kv_bytes": self.capacity.available_kv_bytes,
        }


__all__ = ["PlanResult", "finite"]
