"""What-ifs on the safe range: one change at a time, the safe maximum before and after.

For a model on a GPU at one prompt length, the largest concurrency that meets the SLOs
(:func:`kvlab.stress.ranges.search_range`) is searched for the base configuration and
for each variant, under two sets of limits: the matrix SLOs, and the *KV-bound* SLOs
(:func:`kv_bound`: the latency limits lifted, the preemption budget and the usage
ceiling kept), which isolates what the KV cache alone allows. Each what-if reads
"safe max concurrency at 8k: 12 -> 23" with the runs behind both numbers. The searches
stop at ``max_value`` clients (256 by default; ``256+`` means every value up to it passed).

Variants: KV cache in fp8 / int8 / int4, a CPU offload tier of twice the GPU KV pool,
prefix caching off vs on (on a workload whose prompts share half their tokens), TP 2,
and the next larger catalog GPU. A sliding-window variant is not simulated: the
simulator keeps one block table for all layers (sliding layers counted as full
attention), so it would show no change; ``kvlab plan`` prices sliding windows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kvlab.stress.matrix import Scenario, SearchSpec
from kvlab.stress.ranges import RangeRow, search_range
from kvlab.stress.scenario import WorkloadCache
from kvlab.stress.slo import Slo

#: Latency limits of the KV-bound SLOs: a million seconds, i.e. no limit.
UNBOUNDED_S = 1e6


def kv_bound(slo: Slo) -> Slo:
    return slo.with_changes(ttft_p99_s=UNBOUNDED_S, tpot_p99_s=UNBOUNDED_S)


def bigger_gpu(gpu: str) -> str | None:
    """The catalog GPU with the least memory above ``gpu``'s (discrete GPUs only)."""
    from kvlab.hardware import get_gpu, list_gpus

    mem = get_gpu(gpu).memory_bytes
    above = [
        g for g in list_gpus() if g.memory_bytes > mem and not getattr(g, "unified_memory", False)
    ]
    return min(above, key=lambda g: (g.memory_bytes, g.name)).name if above else None


def variants(base: Scenario) -> list[tuple[str, Scenario, Scenario]]:
    """(label, base scenario, changed scenario) for every what-if."""
    from kvlab.stress.evaluate import plan_for

    out = [
        (f"KV cache {dt}", base, base.with_changes(kv_dtype=dt)) for dt in ("fp8", "int8", "int4")
    ]
    kv_gib = plan_for(base.with_changes(batch=1, concurrency=1)).available_kv_bytes / 2**30
    out.append(
        (
            f"CPU offload tier {2 * kv_gib:.0f} GiB",
            base,
            base.with_changes(offload_gb=round(2 * kv_gib, 1)),
        )
    )
    shared = base.with_changes(shared_prefix=0.5)
    out.append(
        (
            "prefix caching off -> on (prompts share 50%)",
            shared.with_changes(enable_prefix_caching=False),
            shared,
        )
    )
    out.append(("TP 2", base, base.with_changes(tp=2)))
    big = bigger_gpu(base.gpu)
    if big is not None:
        out.append((f"GPU {base.gpu} -> {big}", base, base.with_changes(gpu=big)))
    return out


@dataclass(frozen=True)
class WhatIf:
    label: str
    slo_kind: str
    seq_len: int
    before: RangeRow
    after: RangeRow

    def line(self) -> str:
        k = f"{self.seq_len // 1024}k" if self.seq_len % 1024 == 0 else f"{self.seq_len:,}"
        cap = lambda r: f"{r.best}{'+' if r.search.capped else ''}"  # noqa: E731
        return (
            f"{self.label}: safe max concurrency at {k} ({self.slo_kind} SLOs): "
            f"{cap(self.before)} -> {cap(self.after)} "
            f"({self.before.search.num_runs} + {self.after.search.num_runs} runs)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.label,
            "slo": self.slo_kind,
            "seq_len": self.seq_len,
            "before": self.before.best,
            "after": self.after.best,
            "line": self.line(),
            "before_run": self.before.to_dict(),
            "after_run": self.after.to_dict(),
        }


def whatifs(
    base: Scenario,
    spec: SearchSpec,
    slo: Slo,
    cache: WorkloadCache,
    *,
    seq_len: int = 8192,
    max_value: int = 256,
    slo_kinds: tuple[str, ...] = ("matrix", "KV-bound"),
    on_item: Callable[[WhatIf], None] | None = None,
) -> list[WhatIf]:
    spec = replace(spec, max_value=min(spec.max_value, max_value))
    out: list[WhatIf] = []
    memo: dict[tuple[Any, ...], RangeRow] = {}

    def row(s: Scenario, limits: Slo) -> RangeRow:
        key = (json.dumps(s.with_changes(claimed={}, name="").to_dict(), sort_keys=True), limits)
        if key not in memo:
            memo[key] = search_range(s, "concurrency", seq_len, spec, limits, cache)
        return memo[key]

    for slo_kind, limits in (("matrix", slo), ("KV-bound", kv_bound(slo))):
        if slo_kind not in slo_kinds:
            continue
        for label, before, after in variants(base):
            item = WhatIf(label, slo_kind, seq_len, row(before, limits), row(after, limits))
            out.append(item)
            if on_item is not None:
                on_item(item)
    return out
