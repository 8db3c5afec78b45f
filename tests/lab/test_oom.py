"""OOM risk tiers on an exactly sized cache: Llama-3.1-8B (2 MiB blocks of 16 tokens) with
KV memory for exactly 1,000 blocks (999 usable beside the null block)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvlab.bench.oom import assess, experiment_shape

KV = 1000 * 2 * 2**20


def risk(concurrency: int, context: int, **kw: object):  # type: ignore[no-untyped-def]
    return assess(
        "llama-3.1-8b",
        "h100",
        context_tokens=context,
        concurrency=concurrency,
        kv_cache_memory_bytes=KV,
        **kw,
    )


def test_tiers_follow_the_demand_ratio() -> None:
    low = risk(1, 8192)  # 512 of 999 blocks
    assert (low.tier, low.demand_blocks, low.usable_blocks) == ("low", 512, 999)
    assert low.demand_ratio == pytest.approx(512 / 999) and low.recommendations == []
    medium = risk(2, 6400)  # 2 x 400 = 800 of 999: under 20% headroom
    assert medium.tier == "medium" and medium.demand_ratio == pytest.approx(800 / 999)
    high = risk(2, 8192)  # 1,024 of 999
    assert high.tier == "high"
    assert "1,024 blocks of 16 tokens" in high.reasons[0] and "999 usable" in high.reasons[0]
    assert "at most 1 such sequences" in high.reasons[1]


def test_recommendations_carry_their_numbers() -> None:
    recs = {r.what: r for r in risk(2, 8192).recommendations}
    assert recs["fp8 KV cache"].numbers["num_gpu_blocks"] == 2000 and recs["fp8 KV cache"].fits
    assert recs["shorter context"].numbers == {"context_tokens": 499 * 16}
    assert recs["fewer sequences"].numbers == {"max_num_seqs": 1}
    assert recs["CPU offload"].fits is None  # no room for running sequences
    assert "tensor parallelism" in recs and recs["tensor parallelism"].numbers["tp"] == 2


def test_vllm_not_starting_is_high() -> None:
    r = risk(1, 20000)  # 1,250 blocks for one request: more than the cache
    assert r.tier == "high" and not r.vllm_starts and "would not start" in r.reasons[1]


def test_the_simulator_raises_the_tier_on_preemption() -> None:
    from kvlab.workload.records import Request, Segment, Workload

    # the stated shape (2 x 6,200 tokens) is low; the workload runs 3 of 6,000 at once
    reqs = tuple(
        Request(f"r{i}", (Segment("user", 4000, f"u{i}"),), 2000, arrival_s=0.0) for i in range(3)
    )
    assert risk(2, 6200).tier == "low"
    r = risk(2, 6200, workload=Workload(reqs, name="w"))
    assert r.demand_ratio == pytest.approx(2 * 388 / 999)
    assert r.simulated is not None and r.simulated["num_preemptions"] == 1
    assert r.simulated["kv_cache_usage_perc_max"] == 1.0
    assert r.tier == "medium" and r.reasons[-1].startswith("simulated: ")


def test_experiment_shapes() -> None:
    assert experiment_shape("concurrency", None) == (8, 128)
    assert experiment_shape("seqlen", None) == (1, 224)
    assert experiment_shape("prefix", None) == (8, 152)


def test_bench_check_oom_refuses_a_high_risk(tmp_path: Path) -> None:
    from cli_run import run_cli

    cfg = Path(__file__).resolve().parents[2] / "src/kvlab/data/model_configs"
    name = next(p for p in cfg.iterdir() if "Llama-3.1-8B" in p.name)
    r = run_cli(
        [
            "bench",
            "-e",
            "concurrency",
            "--backend",
            "openai",
            "--endpoint",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--model-config",
            str(name),
            "--gpu",
            "rtx-4090",
            "--levels",
            "1,2",
            "--prompt-tokens",
            "60000",
            "--output-tokens",
            "60000",
            "-o",
            str(tmp_path),
        ]
    )
    assert r.code == 1, r.err
    assert "OOM risk: HIGH" in r.err and "--no-check-oom" in r.err
    saved = json.loads((tmp_path / "concurrency" / "oom_check.json").read_text())
    assert saved["tier"] == "high" and saved["concurrency"] == 2


def test_in_process_backend_is_checked_against_this_hosts_memory(tmp_path: Path) -> None:
    from kvlab.bench.oom import bench_check, host_available_bytes

    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "head_dim": 32,
                "hidden_size": 128,
                "intermediate_size": 512,
                "max_position_embeddings": 2048,
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "num_key_value_heads": 2,
                "vocab_size": 2048,
                "torch_dtype": "bfloat16",
            }
        )
    )
    r, where = bench_check("seqlen", None, model_config=str(cfg), gpu=None, backend="hf")
    if host_available_bytes() is None:
        assert r is None and "unknown" in where
        return
    assert r is not None and r.tier == "low" and "host's available memory" in where
    assert (r.concurrency, r.context_tokens, r.demand_blocks) == (1, 224, 14)
    r, where = bench_check("seqlen", None, model_config=str(cfg), gpu=None, backend="openai")
    assert r is None and "--gpu" in where
