"""Safe ranges respond to the GPU, the model and the SLOs."""

from __future__ import annotations

from kvlab.stress.matrix import Scenario, SearchSpec
from kvlab.stress.ranges import search_range
from kvlab.stress.scenario import WorkloadCache
from kvlab.stress.slo import Slo

SPEC = SearchSpec(seq_lens=(4096,), gen_len=64, max_value=256, concurrency_rounds=2)
BASE = Scenario(name="b", model="qwen2.5-7b", gpu="rtx-4090")


def best(s: Scenario, slo: Slo, kind: str = "concurrency") -> int:
    return search_range(s, kind, 4096, SPEC, slo, WorkloadCache()).best


def test_gpu_model_and_slos_change_the_safe_range() -> None:
    slo = Slo(ttft_p99_s=5.0)
    ref = best(BASE, slo)
    assert ref >= 1
    assert best(BASE.with_changes(gpu="h100-sxm"), slo) > ref
    assert best(BASE.with_changes(model="qwen2.5-0.5b"), slo) > ref
    assert best(BASE, slo.with_changes(ttft_p99_s=20.0)) > ref
    assert best(BASE, slo.with_changes(ttft_p99_s=1.0)) < ref


def test_kv_bound_limits_respond_to_kv_dtype() -> None:
    loose = Slo(ttft_p99_s=1e6, tpot_p99_s=1e6)
    bf16 = best(BASE, loose)
    fp8 = best(BASE.with_changes(kv_dtype="fp8"), loose)
    assert 1 <= bf16 < fp8
