"""The simulator against a real vLLM server on the same workload file.

With the server's block size (128 on the CPU build) and block count, the
simulator must predict the server's own prefix-cache counters exactly: the
same prompt tokens queried and the same tokens hit. (Timing is not compared:
the simulator's clock is an uncalibrated roofline of a GPU.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.sim import SimConfig, simulate
from kvlab.workload.generators import generate

pytestmark = pytest.mark.live


@pytest.mark.parametrize("arrival", ["poisson", "closed"])
def test_simulator_predicts_the_servers_prefix_hits(
    vllm_server: Any, tiny_model_dir: Path, arrival: str
) -> None:
    # 16 users share a 128-token system prompt (one CPU block); prompts stay inside
    # the server's 256-token context.
    wl = generate(
        "chat",
        seed=7,
        sessions=16,
        arrival=arrival,
        rate_per_s=8.0,
        system_tokens=128,
        user_tokens=40,
        output_tokens=16,
    )
    real = OpenAIBackend(
        OpenAIConfig(
            endpoint=vllm_server.url,
            model=vllm_server.model,
            cache_mode="cold",
            metrics_interval_s=0.1,
            concurrency=4 if arrival == "closed" else None,
        )
    ).run(wl)
    cache = real.config["server"]["cache_config"]
    sim = simulate(
        wl,
        SimConfig(
            model=str(tiny_model_dir),
            gpu="h100-sxm",
            block_size=int(cache["block_size"]),
            num_blocks=int(cache["num_gpu_blocks"]),
            max_model_len=vllm_server.max_model_len,
            async_scheduling=False,  # (vLLM's CPU build schedules synchronously)
        ),
    )
    rs, ss = real.summary, sim.summary
    assert rs["num_completed"] == ss["num_completed"] == 16
    assert rs["prefix_cache_source"] == "server_metrics"
    assert rs["prefix_cache_queries"] == ss["prefix_cache_queries"]
    assert rs["prefix_cache_hits"] == ss["prefix_cache_hits"] > 0
    assert rs["num_preemptions"] == ss["num_preemptions"] == 0
