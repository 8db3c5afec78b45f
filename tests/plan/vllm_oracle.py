"""Run with vLLM's Python: size a KV cache with vLLM's own kv_cache_utils.

Reads a JSON list of cases on stdin, prints a JSON list of results. Each case:
``layers`` (list of {kind: full|sliding|mla|mamba, num_kv_heads, head_size,
window, page_padded, shapes, dtypes}), ``dtype`` (torch dtype name),
``block_size``, ``max_model_len``, ``available_memory``,
``max_num_batched_tokens``, ``async_scheduling``, ``mamba_cache_mode`` and, optionally,
``num_gpu_blocks_override``. Each result carries the lines vLLM logged (``log``).
The vLLM config is a small stand-in object carrying only what these functions read.
"""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace

import torch
from vllm.v1.core import kv_cache_utils as kcu
from vllm.v1.kv_cache_interface import (
    FullAttentionSpec,
    MambaSpec,
    MLAAttentionSpec,
    SlidingWindowSpec,
)


def _config(case: dict) -> SimpleNamespace:
    batches = 2 if case["async_scheduling"] else 1
    cache = SimpleNamespace(
        kv_cache_layout="LBNHC",
        num_gpu_blocks_override=case.get("num_gpu_blocks_override"),
        prefix_cache_retention_interval=None,
        mamba_cache_mode=case["mamba_cache_mode"],
        block_size=case["block_size"],
    )
    from vllm.v1.kv_cache_layout import KVCacheLayout

    cache.get_resolved_kv_cache_layout = lambda: KVCacheLayout.LBNHC
    model = SimpleNamespace(
        max_model_len=case["max_model_len"], original_max_model_len=case["max_model_len"]
    )
    return SimpleNamespace(
        cache_config=cache,
        model_config=model,
        scheduler_config=SimpleNamespace(
            disable_hybrid_kv_cache_manager=False,
            max_num_batched_tokens=case["max_num_batched_tokens"],
            async_scheduling=case["async_scheduling"],
        ),
        parallel_config=SimpleNamespace(
            decode_context_parallel_size=1, tensor_parallel_size=1, pipeline_parallel_size=1
        ),
        attention_config=SimpleNamespace(hisparse_config=None),
        speculative_config=None,
        num_prefill_lookahead_tokens=0,
        max_in_flight_tokens=batches * case["max_num_batched_tokens"],
        device_config=SimpleNamespace(device_type="cuda"),
    )


def _spec(layer: dict, case: dict):
    dtype = getattr(torch, case["dtype"])
    bs = case["block_size"]
    kind = layer["kind"]
    if kind == "full":
        return FullAttentionSpec(
            block_size=bs,
            num_kv_heads=layer["num_kv_heads"],
            head_size=layer["head_size"],
            dtype=dtype,
        )
    if kind == "sliding":
        return SlidingWindowSpec(
            block_size=bs,
            num_kv_heads=layer["num_kv_heads"],
            head_size=layer["head_size"],
            dtype=dtype,
            sliding_window=layer["window"],
        )
    if kind == "mla":
        return MLAAttentionSpec(
            block_size=bs, num_kv_heads=1, head_size=layer["head_size"], dtype=dtype
        )
    if kind == "mamba":
        return MambaSpec(
            block_size=bs,
            shapes=tuple(tuple(s) for s in layer["shapes"]),
            dtypes=tuple(getattr(torch, d) for d in layer["dtypes"]),
            page_size_padded=layer.get("page_padded"),
            mamba_cache_mode=case["mamba_cache_mode"],
        )
    raise ValueError(kind)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run(case: dict) -> dict:
    cfg = _config(case)
    specs = {f"model.layers.{i}.attn": _spec(x, case) for i, x in enumerate(case["layers"])}
    lines = _Lines()
    kcu.logger.addHandler(lines)
    kcu.logger.setLevel(logging.INFO)
    try:
        configs = kcu.get_kv_cache_configs(cfg, [specs], [case["available_memory"]])
        sched = kcu.generate_scheduler_kv_cache_config(configs)
        kcu.update_kv_cache_capacity(cfg, sched)
    finally:
        kcu.logger.removeHandler(lines)
    tokens, conc = kcu.get_kv_cache_capacity(cfg, sched)
    bytes_per_block = kcu._pool_bytes_per_block(cfg, sched.kv_cache_groups)
    return {
        "num_blocks": sched.num_blocks,
        "kv_cache_tokens": tokens,
        "max_concurrency": conc,
        "bytes_per_block": bytes_per_block,
        "num_groups": len(sched.kv_cache_groups),
        "group_sizes": sorted(len(g.layer_names) for g in sched.kv_cache_groups),
        "log": lines.lines,
    }


def main() -> None:
    cases = json.load(sys.stdin)
    out = []
    for case in cases:
        try:
            out.append(run(case))
        except ValueError as e:  # vLLM refuses to start (not enough memory)
            out.append({"error": str(e).splitlines()[0][:300]})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
