"""Production presets chosen by the safe-range search, each with its evidence.

For a model on a GPU, each preset is a prompt length, a set of limits and engine
choices; the search (:func:`kvlab.stress.ranges.search_range`, concurrency) finds the
most clients that meet the limits, and the preset caps the engine there
(``max_num_seqs`` = that concurrency) and says which run shows it:

=================  ===========  ==========================================  ========
preset             prompt       limits                                      KV dtype
=================  ===========  ==========================================  ========
low-latency        4,096        TTFT p99 <= 0.5 s, TPOT p99 <= 0.03 s       model's
balanced           8,192        the matrix SLOs                             model's
max-throughput     4,096        TTFT p99 <= 10 s, TPOT p99 <= 0.2 s         fp8
long-context       16,384 (*)   TTFT p99 <= 3x the matrix limit             model's
=================  ===========  ==========================================  ========

(*) or the longest prompt below the model's context window. Every preset keeps the
matrix's preemption budget and usage ceiling. Risk levels come from the run at the
chosen concurrency (:func:`kvlab.stress.evaluate.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from kvlab.stress.evaluate import evaluate
from kvlab.stress.matrix import Scenario, SearchSpec
from kvlab.stress.ranges import probe_scenario, search_range
from kvlab.stress.scenario import WorkloadCache
from kvlab.stress.slo import Slo

PRESETS = ("low-latency", "balanced", "max-throughput", "long-context")


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    gpu: str
    seq_len: int
    gen_len: int
    kv_dtype: str | None
    slo: Slo
    concurrency: int
    max_num_batched_tokens: int
    num_runs: int
    evidence: str
    risk: str
    risk_reasons: tuple[str, ...]

    def vllm_serve(self) -> str | None:
        """A ``vllm serve`` command line for the preset (None when nothing met the limits)."""
        if self.concurrency < 1:
            return None
        ctx = self.seq_len + self.gen_len
        parts = [
            f"vllm serve {self.model}",
            f"--max-model-len {ctx}",
            f"--max-num-seqs {self.concurrency}",
            f"--max-num-batched-tokens {self.max_num_batched_tokens}",
            "--gpu-memory-utilization 0.92",
            "--enable-prefix-caching",
        ]
        if self.kv_dtype:
            parts.append(f"--kv-cache-dtype {self.kv_dtype}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "gpu": self.gpu,
            "seq_len": self.seq_len,
            "gen_len": self.gen_len,
            "kv_dtype": self.kv_dtype,
            "slo": self.slo.to_dict(),
            "concurrency_limit": self.concurrency,
            "max_num_seqs": self.concurrency,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "gpu_memory_utilization": 0.92,
            "num_runs": self.num_runs,
            "evidence": self.evidence,
            "risk": self.risk,
            "risk_reasons": list(self.risk_reasons),
            "vllm_serve": self.vllm_serve(),
        }


def _long_seq(base: Scenario, spec: SearchSpec) -> int:
    from kvlab.models.catalog import get_model

    ctx = base.max_model_len or get_model(base.model).max_context
    fits = [s for s in (*spec.seq_lens, 16384) if s + spec.gen_len <= ctx]
    return 16384 if 16384 in fits else max(fits, default=min(spec.seq_lens))


def presets(base: Scenario, spec: SearchSpec, slo: Slo, cache: WorkloadCache) -> list[Preset]:
    spec = replace(spec, max_value=min(spec.max_value, 256))
    table = (
        ("low-latency", 4096, slo.with_changes(ttft_p99_s=0.5, tpot_p99_s=0.03), None, 2048),
        ("balanced", 8192, slo, None, None),
        ("max-throughput", 4096, slo.with_changes(ttft_p99_s=10.0, tpot_p99_s=0.2), "fp8", 8192),
        (
            "long-context",
            _long_seq(base, spec),
            slo.with_changes(ttft_p99_s=3 * slo.ttft_p99_s),
            None,
            None,
        ),
    )
    out = []
    for name, seq, limits, dtype, batched in table:
        s = base.with_changes(
            kv_dtype=dtype or base.kv_dtype, max_num_batched_tokens=batched, claimed={}
        )
        row = search_range(s, "concurrency", seq, spec, limits, cache)
        n = row.best
        risk_reasons: tuple[str, ...]
        from kvlab.stress.evaluate import plan_for

        chosen_batched = plan_for(s).max_num_batched_tokens
        if n < 1:
            evidence = f"nothing met the limits at {seq:,} tokens: {row.limit_reason}"
            risk, risk_reasons = "high", (evidence,)
        else:
            final = probe_scenario(
                s.with_changes(max_num_seqs=n),
                "concurrency",
                n,
                seq,
                spec.gen_len,
                spec.concurrency_rounds,
            )
            r = evaluate(final, limits, cache)
            m = r.metrics
            evidence = (
                f"{n} clients x {spec.concurrency_rounds} requests of {seq:,}+{spec.gen_len} "
                f"tokens: TTFT p99 {m.get('ttft_p99_s', 0):.3f} s, TPOT p99 "
                f"{m.get('tpot_p99_s', 0):.4f} s, peak KV {m.get('kv_peak_usage', 0):.1%}, "
                f"{m.get('num_preemptions', 0)} preemptions, "
                f"{m.get('output_throughput_tok_per_s', 0):,.0f} output tok/s; "
                f"{n + 1} fails: {row.limit_reason or 'not reached (search cap)'}"
            )
            risk, risk_reasons = r.risk, r.risk_reasons
        out.append(
            Preset(
                name,
                base.model,
                base.gpu,
                seq,
                spec.gen_len,
                dtype,
                limits,
                n,
                chosen_batched,
                row.search.num_runs + (1 if n else 0),
                evidence,
                risk,
                risk_reasons,
            )
        )
    return out
