"""SimConfig: every knob of a simulation, frozen and validated at construction."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import ConfigError

SCHEDULING = ("fcfs", "priority")
OFFLOAD_MODES = ("evict", "write_through")


@dataclass(frozen=True)
class SimConfig:
    """Engine configuration (vLLM names where vLLM has the knob).

    ``model`` and ``gpu`` are a :class:`kvlab.models.spec.ModelSpec` and a GPU
    spec (``mem_bw_bytes_per_s``, ``bf16_flops``, ``memory_bytes``, host link
    fields) or their catalog names. ``num_blocks`` counts the null block, as
    vLLM's ``num_gpu_blocks`` does; None derives it from GPU memory.
    ``max_model_len`` None means the model's context length; ``max_num_seqs`` and
    ``max_num_batched_tokens`` None mean vLLM's API-server defaults for the GPU
    (:func:`kvlab.plan.default_batch_limits`).
    ``cost_model`` replaces the roofline clock (any object with ``step_ticks``,
    ``window_ticks`` and ``label``, see :mod:`kvlab.sim.cost_model`).
    Offload: ``offload_blocks`` (or ``offload_gb``) of host memory behind a
    link of ``offload_bw_bytes_per_s`` per direction (None: the GPU's host link)
    with ``offload_latency_s`` per transfer.
    ``extents``: without an offload tier, keep blocks as extents
    (:mod:`kvlab.sim.extents`, same results for every eviction policy that
    supports them, much faster); False runs the per-block reference pool. The
    run's provenance says which was used (``kv_pool``, ``kv_pool_reason``).
    ``async_scheduling``: follow vLLM's ``AsyncScheduler`` (two batches in flight,
    output placeholders; :mod:`kvlab.sim.async_loop`) instead of the synchronous
    ``Scheduler``. None (the default): as vLLM decides on a GPU, on, except where
    kvlab rules it out (:func:`kvlab.sim.resolve.scheduling_mode`: an offload tier,
    a measured clock). Not with an offload tier.
    """

    model: Any = None
    gpu: Any = None
    block_size: int = 16
    num_blocks: int | None = None
    kv_dtype: str | None = None
    gpu_memory_utilization: float = 0.92
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool = True
    scheduling: str = "fcfs"
    reserve_full_prompt: bool = True
    watermark: float = 0.0
    policy: str = "lru"
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    mfu: float = 0.5
    mbu: float = 0.8
    step_overhead_s: float = 0.0003
    tp: int = 1
    offload_blocks: int = 0
    offload_gb: float | None = None
    offload_bw_bytes_per_s: float | None = None
    offload_latency_s: float | None = None
    offload_mode: str = "evict"
    exact_steps: bool = False
    extents: bool = True
    cost_model: Any = None
    sample_interval_s: float = 0.5
    seed: int = 0
    async_scheduling: bool | None = None

    def __post_init__(self) -> None:
        if self.async_scheduling is not None and not isinstance(self.async_scheduling, bool):
            raise ConfigError(
                f"async_scheduling must be true, false or unset, got {self.async_scheduling!r}"
            )
        pos_int = ("block_size", "max_num_seqs", "max_num_batched_tokens", "tp")
        for name in pos_int:
            v = getattr(self, name)
            if v is None and name.startswith("max_"):
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("num_blocks", "max_model_len", "offload_blocks"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        for name in ("offload_gb", "offload_bw_bytes_per_s", "offload_latency_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.num_blocks is not None and self.num_blocks < 2:
            raise ConfigError(
                f"num_blocks must be >= 2 (one is vLLM's null block), got {self.num_blocks}"
            )
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ConfigError(f"max_model_len must be >= 2, got {self.max_model_len}")
        for name in ("mfu", "mbu", "gpu_memory_utilization"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 < v <= 1):
                raise ConfigError(f"{name} must be in (0, 1], got {v!r}")
        for name in ("watermark",):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1)")
        for name in ("step_overhead_s", "sample_interval_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.scheduling not in SCHEDULING:
            raise ConfigError(f"scheduling must be one of {', '.join(SCHEDULING)}")
        if self.offload_mode not in OFFLOAD_MODES:
            raise ConfigError(f"offload_mode must be one of {', '.join(OFFLOAD_MODES)}")
        if self.offload_blocks < 0 or (self.offload_gb is not None and self.offload_gb < 0):
            raise ConfigError("offload size must be >= 0")
        from kvlab.sim.policies import LEARNED_PREFIX, POLICIES

        if self.policy not in POLICIES and not self.policy.startswith(LEARNED_PREFIX):
            raise ConfigError(
                f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}"
                f" or {LEARNED_PREFIX}FILE"
            )

    def replace(self, **changes: Any) -> SimConfig:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: Mapping[str, str]) -> SimConfig:
        """Apply ``--set key=value`` strings, parsed to the field types (ConfigError if unknown)."""
        names = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in overrides.items():
            if key.startswith("policy."):
                params = dict(self.policy_params)
                params[key.split(".", 1)[1]] = _parse_value(raw)
                changes["policy_params"] = params
                continue
            fixed = ("model", "gpu", "policy_params", "cost_model")
            if key not in names or key in fixed:
                settable = sorted(n for n in names if n not in fixed)
                raise ConfigError(
                    f"unknown setting {key!r}; settable: {', '.join(settable)}, policy.<param>"
                )
            changes[key] = _coerce(key, raw, getattr(self, key))
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("model", "gpu"):
                v = getattr(v, "name", v)
            elif f.name == "cost_model":
                v = None if v is None else getattr(v, "label", type(v).__name__)
            elif isinstance(v, Mapping):
                v = dict(v)
            d[f.name] = v
        return d


def _parse_value(raw: str) -> Any:
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw


def _coerce(key: str, raw: str, current: Any) -> Any:
    v = _parse_value(raw)
    if isinstance(current, bool):
        if not isinstance(v, bool):
            raise ConfigError(f"{key} must be true or false, got {raw!r}")
        return v
    if isinstance(current, int) and not isinstance(v, int):
        raise ConfigError(f"{key} must be an integer, got {raw!r}")
    if isinstance(current, float) and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(current, float) and not isinstance(v, float):
        raise ConfigError(f"{key} must be a number, got {raw!r}")
    return v
