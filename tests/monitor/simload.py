"""A small workload that overloads a 200-block KV cache (about 11 simulated seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvlab.cli.simulate import build_config
from kvlab.workload.generators import generate
from kvlab.workload.io import write_workload

SIM_ARGS = ["--model", "llama-3.1-8b", "--gpu", "h100", "--num-blocks", "200"]


def overload() -> Any:
    return generate("chat", seed=0, sessions=120, rate_per_s=20.0)


def overload_file(tmp: Path) -> Path:
    return write_workload(overload(), tmp / "chat.jsonl")


def overload_config() -> Any:
    return build_config(
        model="llama-3.1-8b", gpu="h100", mode="prefix", policy="lru", block_size=16,
        num_blocks=200, kv_dtype=None, offload_gb=None, no_prefix_caching=False,
        exact_steps=False, seed=0, sets=[],
    )  # fmt: skip
