"""``kvlab replay --history server`` on a real vLLM server: the simulator on the
transcript predicts the server's prefix-cache counters exactly, where the scripted
history over-counts.

The workload is built so that every block boundary that matters falls inside an
answer: 3 sessions of 3 turns, a 100-token system prompt, 10-token user messages and
30-token answers (a turn's sequence stays inside the server's 256-token context), one
session at a time (closed loop, one worker), so timing cannot change a hit. With
128-token blocks the first block of a session holds its first 18 answer tokens: the
scripted history says the next turn re-sends them, the server's random-weight model
wrote other ones, so the simulator of the scripted file counts hits the server does
not have; with the server's answers re-sent, it has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.results import RunResult
from kvlab.sim import SimConfig, simulate
from kvlab.workload.generators import generate
from kvlab.workload.io import read_workload, write_workload

pytestmark = pytest.mark.live


def _replay(server: Any, wl: Any, history: str) -> tuple[RunResult, OpenAIBackend]:
    backend = OpenAIBackend(
        OpenAIConfig(
            endpoint=server.url,
            model=server.model,
            cache_mode="cold",
            metrics_interval_s=0.1,
            concurrency=1,
            history=history,
        )
    )
    return backend.run(wl), backend


def _simulate(wl: Any, real: RunResult, model_dir: Path, max_model_len: int) -> RunResult:
    cache = real.config["server"]["cache_config"]
    return simulate(
        wl,
        SimConfig(
            model=str(model_dir),
            gpu="h100-sxm",
            block_size=int(cache["block_size"]),
            num_blocks=int(cache["num_gpu_blocks"]),
            max_model_len=max_model_len,
            async_scheduling=False,  # (vLLM's CPU build schedules synchronously)
        ),
    )


def test_server_history_makes_simulated_hits_exact(
    vllm_server: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    wl = generate(
        "sessions",
        seed=3,
        sessions=3,
        turns=3,
        arrival="closed",
        think_time_s=0.0,
        length_cv=0.0,
        system_tokens=100,
        user_tokens=10,
        output_tokens=30,
    )
    n = len(wl.requests)
    scripted, _ = _replay(vllm_server, wl, "scripted")
    sim_scripted = _simulate(wl, scripted, tiny_model_dir, vllm_server.max_model_len)
    served, backend = _replay(vllm_server, wl, "server")
    assert backend.transcript is not None
    path = write_workload(backend.transcript.workload(), tmp_path / "transcript.jsonl")
    transcript = read_workload(path)
    sim_served = _simulate(transcript, served, tiny_model_dir, vllm_server.max_model_len)

    for name, real, sim in (
        ("scripted", scripted, sim_scripted),
        ("server", served, sim_served),
    ):
        print(
            f"history {name}: prefix queries real {real.summary['prefix_cache_queries']} "
            f"sim {sim.summary['prefix_cache_queries']}, hits real "
            f"{real.summary['prefix_cache_hits']} sim {sim.summary['prefix_cache_hits']}"
        )
    for run in (scripted, served, sim_scripted, sim_served):
        assert run.summary["num_completed"] == n
        assert run.summary["num_preemptions"] == 0
    assert scripted.summary["prefix_cache_source"] == "server_metrics"
    assert served.config["transcript"]["requests"] == n
    assert served.config["transcript"]["with_server_token_ids"] == n
    assert served.config["transcript"]["prompt_count_mismatches"] == 0
    # the scripted file over-counts: its answers are not what the server wrote
    assert sim_scripted.summary["prefix_cache_hits"] > scripted.summary["prefix_cache_hits"]
    # the transcript of the server's answers is exact, queries and hits
    assert served.summary["prefix_cache_queries"] == sim_served.summary["prefix_cache_queries"]
    assert served.summary["prefix_cache_hits"] == sim_served.summary["prefix_cache_hits"] > 0
