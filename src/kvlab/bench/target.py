"""What an experiment runs against: the transformers backend or a live OpenAI server.

A :class:`Target` turns a :class:`~kvlab.workload.records.Workload` plus a
concurrency cap into a :class:`~kvlab.results.RunResult`. Experiments only use
this interface, so the same experiment measures either backend.

KV numbers differ by backend, and each target says what it can measure:

* ``hf``: exact bytes of the transformers cache tensors (summary
  ``kv_cache_bytes_peak``), the formula bytes of the tokens they hold
  (``kv_token_bytes_peak``) and process RSS.
* ``openai``: the server's ``kv_cache_usage_perc`` (sampled from
  ``/metrics``), turned into bytes with the server's block count and the
  formula bytes per block when the server reports ``cache_config_info``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kvlab.errors import ConfigError
from kvlab.results import RunResult
from kvlab.workload.records import Workload

BACKENDS: tuple[str, ...] = ("hf", "openai")


class Target(Protocol):
    """Runs a workload at a concurrency cap and returns a RunResult."""

    backend: str
    model_label: str
    max_model_len: int | None

    def run(self, workload: Workload, concurrency: int) -> RunResult: ...

    def kv_bytes_per_token(self) -> float | None: ...


@dataclass
class HfTarget:
    """The in-process transformers backend on a local model directory."""

    model_dir: str
    num_threads: int = 1
    dtype: str = "bfloat16"
    backend: str = "hf"
    _hf: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from kvlab.backends.hf import HfBackend, HfConfig

        self._hf = HfBackend(
            HfConfig(model_dir=self.model_dir, num_threads=self.num_threads, dtype=self.dtype)
        )
        self.max_model_len: int | None = (
            int(getattr(self._hf.model.config, "max_position_embeddings", 0) or 0) or None
        )

    @property
    def model_label(self) -> str:
        return Path(self.model_dir).name

    def kv_bytes_per_token(self) -> float | None:
        return float(self._hf.bytes_per_token)

    def run(self, workload: Workload, concurrency: int) -> RunResult:
        result: RunResult = self._hf.run(workload, max_batch_size=concurrency)
        return result


@dataclass
class OpenAITarget:
    """A live OpenAI-compatible server (vLLM, SGLang, llama.cpp...)."""

    endpoint: str
    model: str
    model_config: str | None = None
    cache_mode: str = "cold"
    metrics_interval_s: float = 0.02
    max_model_len: int | None = None
    backend: str = "openai"

    @property
    def model_label(self) -> str:
        return self.model

    def kv_bytes_per_token(self) -> float | None:
        """Formula bytes per token from ``model_config`` (a config.json or catalog name)."""
        if self.model_config is None:
            return None
        from kvlab.models import get_model, kv_bytes_per_token

        return float(kv_bytes_per_token(get_model(self.model_config)))

    def run(self, workload: Workload, concurrency: int) -> RunResult:
        try:
            openai = importlib.import_module("kvlab.backends.openai")
        except ImportError as e:
            raise ConfigError(f"the openai backend is not available in this build: {e}") from e
        cfg = openai.OpenAIConfig(
            endpoint=self.endpoint,
            model=self.model,
            mode="trace",
            concurrency=concurrency,
            cache_mode=self.cache_mode,
            metrics_interval_s=self.metrics_interval_s,
            max_model_len=self.max_model_len,
            model_config=self.model_config,
        )
        result: RunResult = openai.OpenAIBackend(cfg).run(workload)
        return result


def kv_usage_peak(result: RunResult) -> float | None:
    """Peak of the sampled ``kv_cache_usage_perc`` (0-1), None when not sampled."""
    for key in ("kv_cache_usage_perc", "vllm:kv_cache_usage_perc"):
        values = [v for v in result.timeseries.get(key, []) if math.isfinite(v)]
        if values:
            return max(values)
    return None


def server_cache_config(result: RunResult) -> Mapping[str, Any]:
    """The server's ``cache_config_info`` labels if the run recorded them."""
    for where in (result.summary, result.config, result.provenance):
        for key in ("cache_config_info", "cache_config"):
            v = where.get(key) if isinstance(where, Mapping) else None
            if isinstance(v, Mapping):
                return v
        server = where.get("server") if isinstance(where, Mapping) else None
        if isinstance(server, Mapping):
            for key in ("cache_config_info", "cache_config"):
                v = server.get(key)
                if isinstance(v, Mapping):
                    return v
    return {}


__all__ = [
    "BACKENDS",
    "HfTarget",
    "OpenAITarget",
    "Target",
    "kv_usage_peak",
    "server_cache_config",
]
