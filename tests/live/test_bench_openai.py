"""Bench experiments against real vLLM servers through the OpenAI backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvlab.backends.vllm_server import VllmServer

pytestmark = pytest.mark.live


def _target(server: VllmServer) -> Any:
    pytest.importorskip("aiohttp")
    pytest.importorskip("matplotlib")
    from kvlab.bench.target import OpenAITarget

    return OpenAITarget(
        endpoint=server.url,
        model=server.model,
        model_config=str(Path(server.model_dir) / "config.json"),
        max_model_len=server.max_model_len,
    )


def test_concurrency_on_vllm(vllm_server: VllmServer, tmp_path: Path) -> None:
    from kvlab.bench import concurrency
    from kvlab.results import RunResult

    params = concurrency.ConcurrencyParams(
        levels=(1, 4), num_requests=4, prompt_tokens=32, output_tokens=32
    )
    exp = concurrency.run(_target(vllm_server), tmp_path, params)
    for point, run_dir in zip(exp.points, exp.run_dirs, strict=True):
        assert point["num_completed"] == 4
        run = RunResult.load(run_dir)
        # Token counts from the server's usage: exactly what the workload asked for.
        assert [(r.prompt_tokens, r.output_tokens) for r in run.records] == [(32, 32)] * 4
        total = 4 * 64
        assert point["total_tokens"] == total
        assert point["total_throughput_tok_per_s"] == pytest.approx(total / point["wall_time_s"])
        # vLLM exposes cache_config_info and kv_cache_usage_perc, and a request of 32
        # decode steps on the CPU build spans several 0.25 s samples: the peak is known.
        assert not point.get("kv_usage_missed"), point
        assert point["kv_blocks_peak"] is not None, point
        # 63 tokens of a request fit one 128-token block.
        assert 1 <= point["kv_blocks_peak"] <= point["concurrency"]
    names = {p.name for p in exp.figures}
    assert {"fig1_kv_vs_concurrency.svg", "fig2_throughput_vs_concurrency.png"} <= names


def test_mixed_on_the_pressure_server(vllm_pressure_server: VllmServer, tmp_path: Path) -> None:
    from kvlab.bench import mixed

    params = mixed.MixedParams(
        num_short=4,
        short_prompt_tokens=16,
        short_output_tokens=8,
        num_long=3,
        long_prompt_tokens=120,
        long_output_tokens=100,
    )
    exp = mixed.run(_target(vllm_pressure_server), tmp_path, params)
    alone, mixed_point = exp.points
    assert alone["short"]["num"] == mixed_point["short"]["num"] == 4
    assert mixed_point["num_completed"] == 7
    # 3 long requests of 219 tokens need 6 blocks; the server has 3 usable.
    assert not mixed_point.get("kv_usage_missed"), mixed_point
    assert mixed_point["kv_blocks_peak"] is not None, mixed_point
    assert 1 <= mixed_point["kv_blocks_peak"] <= 3
    assert "fig5_tail_latency.png" in {p.name for p in exp.figures}
