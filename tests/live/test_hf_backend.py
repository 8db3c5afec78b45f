"""The transformers backend on the tiny model: measured KV bytes, real batching, refill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.hf, pytest.mark.slow]

BPT_BF16 = 2 * 2 * 2 * 32 * 2  # layers x (K+V) x kv_heads x head_dim x bytes = 512


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path):
    from kvlab.backends.hf import HfBackend, HfConfig

    return HfBackend(HfConfig(model_dir=str(tiny_model_dir), max_batch_size=4))


def _reqs(prompts, outputs, seed=0):
    from kvlab.backends.hf import synthetic_requests

    rng = np.random.default_rng(seed)
    return synthetic_requests(len(prompts), list(prompts), list(outputs), 2048, rng)


def test_cache_bytes_equal_the_formula_for_one_sequence(backend, tiny_model_dir) -> None:
    from kvlab.models import get_model, kv_bytes_per_token, sequence_bytes

    spec = get_model(str(tiny_model_dir))
    assert kv_bytes_per_token(spec) == BPT_BF16
    res = backend.run(_reqs([37], [5]))
    ts = res.timeseries
    # Samples: after prefill (37 tokens cached), then after each of 4 decodes.
    assert ts["kv_cache_tokens"] == [37, 38, 39, 40, 41]
    for tokens, measured in zip(ts["kv_cache_tokens"], ts["kv_cache_bytes"], strict=True):
        assert measured == sequence_bytes(spec, int(tokens))
    assert res.summary["kv_cache_bytes_peak"] == sequence_bytes(spec, 37 + 5 - 1) == 41 * 512
    assert res.summary["kv_padding_bytes_peak"] == 0
    assert res.summary["kv_formula_mismatch_steps"] == 0
    rec = res.records[0]
    assert (rec.prompt_tokens, rec.output_tokens) == (37, 5)
    assert rec.first_token_s is not None and rec.finish_s is not None
    assert 0 < rec.first_token_s - rec.arrival_s < rec.finish_s - rec.arrival_s


def test_mixed_batch_pads_to_the_longest_prompt(backend) -> None:
    res = backend.run(_reqs([10, 50], [3, 3]))
    ts = res.timeseries
    # After the joint prefill: 2 rows x 50 columns allocated, 60 real tokens.
    assert ts["batch_columns"][0] == 50
    assert ts["kv_cache_bytes"][0] == 2 * 50 * BPT_BF16
    assert ts["kv_token_bytes"][0] == 60 * BPT_BF16
    assert ts["kv_padding_bytes"][0] == 40 * BPT_BF16
    assert res.summary["kv_padding_bytes_peak"] == 40 * BPT_BF16
    assert res.summary["num_prefill_steps"] == 1
    assert res.summary["num_decode_steps"] == 2
    assert res.summary["kv_formula_mismatch_steps"] == 0


def test_batch_is_refilled_as_requests_finish(backend) -> None:
    res = backend.run(_reqs([8, 8, 8], [2, 10, 4]), max_batch_size=2)
    r0, r1, r2 = res.records
    assert r0.finish_s is not None and r1.finish_s is not None and r2.admitted_s is not None
    # r2 joins when r0 leaves, while r1 is still decoding: one shared batch.
    assert r0.finish_s <= r2.admitted_s < r1.finish_s
    assert max(res.timeseries["num_requests_running"]) == 2
    assert res.summary["num_prefill_steps"] == 2
    assert [r.output_tokens for r in res.records] == [2, 10, 4]


def test_batched_generation_equals_one_at_a_time(tiny_model_dir) -> None:
    from kvlab.backends.hf import HfBackend, HfConfig

    hf = HfBackend(HfConfig(model_dir=str(tiny_model_dir), dtype="float32"))
    reqs = _reqs([5, 40, 17, 3, 29], [6, 2, 9, 4, 7], seed=1)
    solo: dict[str, list[int]] = {}
    batched: dict[str, list[int]] = {}
    hf.run(reqs, max_batch_size=1, on_tokens=solo.__setitem__)
    res = hf.run(reqs, max_batch_size=3, on_tokens=batched.__setitem__)
    assert max(res.timeseries["num_requests_running"]) == 3
    assert batched == solo
    assert [len(solo[r.request_id]) for r in reqs] == [6, 2, 9, 4, 7]


def test_workload_prompts_are_token_exact_and_sessions_wait(backend) -> None:
    from kvlab.backends.hf import requests_from_workload
    from kvlab.workload.records import Request, Segment, Workload

    wl = Workload(
        requests=(
            Request(
                "a", (Segment("system", 20, "sys"), Segment("user", 7, "q1")), 3, 0.0, None, "s"
            ),
            Request(
                "b", (Segment("system", 20, "sys"), Segment("user", 5, "q2")), 2, None, 0.05, "s"
            ),
        )
    )
    reqs = requests_from_workload(wl, backend.vocab_size, backend.tokenizer)
    assert [len(r.prompt_ids) for r in reqs] == [27, 25]
    assert reqs[0].prompt_ids[:20] == reqs[1].prompt_ids[:20]
    assert reqs[1].after == "a"
    res = backend.run(reqs)
    a, b = res.records
    assert a.finish_s is not None and b.first_token_s is not None
    assert b.arrival_s == pytest.approx(a.finish_s + 0.05, abs=1e-3)
    assert b.first_token_s > b.arrival_s


def test_bench_experiments_write_runs_and_figures(tiny_model_dir, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from kvlab.bench import concurrency, mixed, seqlen
    from kvlab.bench.target import HfTarget
    from kvlab.results import RunResult

    target = HfTarget(model_dir=str(tiny_model_dir))
    exp = concurrency.run(
        target,
        tmp_path / "c",
        concurrency.ConcurrencyParams(
            levels=(1, 4), num_requests=4, prompt_tokens=16, output_tokens=4
        ),
    )
    names = {p.name for p in exp.figures}
    assert {"fig1_kv_vs_concurrency.png", "fig1_kv_vs_concurrency.svg"} <= names
    assert {"fig2_throughput_vs_concurrency.png", "kv_timeline.svg"} <= names
    assert (tmp_path / "c" / "experiment.json").exists()
    for point, run_dir in zip(exp.points, exp.run_dirs, strict=True):
        run = RunResult.load(run_dir)
        total = sum(r.prompt_tokens + r.output_tokens for r in run.records)
        assert total == 4 * (16 + 4)
        assert point["total_throughput_tok_per_s"] == pytest.approx(total / point["wall_time_s"])
        # Every request in flight at once: 4 x (16 + 4 - 1) tokens at the peak.
    assert exp.points[1]["kv_bytes_measured_peak"] == 4 * 19 * BPT_BF16

    exp = seqlen.run(
        target,
        tmp_path / "s",
        seqlen.SeqlenParams(prompt_lengths=(8, 40), output_tokens=3, repeats=2),
    )
    for point in exp.points:
        assert point["kv_bytes_measured_peak"] == point["kv_bytes_formula"]
    assert {p.name for p in exp.figures} >= {"fig3_latency_vs_seqlen.png", "fig4_kv_vs_seqlen.svg"}

    exp = mixed.run(
        target,
        tmp_path / "m",
        mixed.MixedParams(
            num_short=3,
            short_output_tokens=2,
            num_long=1,
            long_prompt_tokens=60,
            long_output_tokens=6,
        ),
    )
    assert exp.points[0]["short"]["num"] == exp.points[1]["short"]["num"] == 3
    assert exp.points[1]["kv_padding_bytes_peak"] > 0
    assert "fig5_tail_latency.png" in {p.name for p in exp.figures}


def test_transformers_stores_a_shared_prefix_once_per_sequence(tiny_model_dir, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from kvlab.bench import prefix
    from kvlab.bench.target import HfTarget

    target = HfTarget(model_dir=str(tiny_model_dir))
    params = prefix.PrefixParams(num_requests=3, prefix_tokens=40, suffix_tokens=5, output_tokens=2)
    exp = prefix.run(target, tmp_path, params)
    for point in exp.points:
        # 3 x (40 + 5 + 2 - 1) tokens, shared prefix or not: no prefix cache in transformers.
        assert point["kv_bytes_measured_peak"] == 3 * 46 * BPT_BF16
        assert point["kv_bytes_formula_prefix_per_request"] == 3 * 46 * BPT_BF16
        assert point["kv_bytes_formula_prefix_once"] == (40 + 3 * 6) * BPT_BF16


def test_run_directory_has_the_simulators_keys(backend, tmp_path) -> None:
    """The same workload through transformers and through the simulator: the same
    summary keys, by_class for both, the backend in the provenance."""
    import json

    from kvlab.backends.base import Backend
    from kvlab.backends.sim import SimBackend
    from kvlab.sim.config import SimConfig
    from kvlab.workload.records import Request, Segment, Workload

    wl = Workload(
        tuple(
            Request(
                f"r{i}",
                (Segment("system", 16, "sys"), Segment("user", 8, f"u{i}")),
                3,
                arrival_s=0.0,
                cls="a" if i % 2 else "b",
            )
            for i in range(4)
        ),
        name="seam",
    )
    sim = SimBackend(SimConfig(model="llama-3.1-8b", gpu="h100", num_blocks=64, block_size=4))
    assert isinstance(backend, Backend)
    runs = {b.name: b.run(wl).save(tmp_path / b.name) for b in (backend, sim)}
    hf, simulated = (json.loads((runs[k] / "summary.json").read_text()) for k in ("hf", "sim"))
    assert list(hf) == list(simulated)
    assert {k: list(v) for k, v in hf["by_class"].items()} == {
        k: list(v) for k, v in simulated["by_class"].items()
    }
    assert hf["prefix_cache_source"] == "in_process" and hf["prefix_cache_hits"] == 0
    prov = json.loads((runs["hf"] / "run.json").read_text())["provenance"]
    assert prov["wall_s"] > 0 and hf["kv_cache_bytes_peak"] > 0
    assert (prov["backend"], prov["workload"]) == ("hf", "seam")
