"""Small models, GPUs and workloads for simulator tests."""

from __future__ import annotations

import bisect
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kvlab.models.spec import LayerSpec, ModelSpec
from kvlab.workload.records import Request, Segment, Workload


def llama8b() -> ModelSpec:
    """Llama-3.1-8B's memory shape (REFERENCE section 1): 32 layers, 8 KV heads x 128."""
    return ModelSpec(
        name="llama-3.1-8b-test",
        architecture="LlamaForCausalLM",
        layers=tuple(LayerSpec("full", num_kv_heads=8, head_dim=128) for _ in range(32)),
        hidden_size=4096,
        num_attention_heads=32,
        vocab_size=128256,
        num_params=8_030_261_248,
        num_active_params=8_030_261_248,
        max_context=131072,
        head_dim=128,
    )


@dataclass(frozen=True)
class Gpu:
    name: str = "h100-test"
    memory_bytes: int = 80 * 2**30
    mem_bw_bytes_per_s: float = 3.35e12
    bf16_flops: float = 989e12
    fp8_flops: float | None = 1979e12
    host_link_h2d_bytes_per_s: float | None = 64e9
    host_link_d2h_bytes_per_s: float | None = 64e9
    host_link_latency_s: float = 10e-6


def req(
    rid: str,
    segs: list[tuple[str, int]],
    out: int,
    t: float | None = 0.0,
    **kw: object,
) -> Request:
    return Request(
        request_id=rid,
        segments=tuple(Segment("user", n, c) for c, n in segs),
        output_tokens=out,
        arrival_s=t,
        **kw,  # type: ignore[arg-type]
    )


def random_workload(seed: int, n: int, rate: float = 20.0, sessions: bool = True) -> Workload:
    """Shared system prompts, multi-turn sessions with think time, random lengths."""
    rng = np.random.default_rng(seed)
    reqs: list[Request] = []
    t = 0.0
    for i in range(n):
        t += float(rng.exponential(1.0 / rate))
        sysp = f"sys{int(rng.integers(0, 4))}"
        segs = [
            Segment(
                "system",
                int(rng.integers(20, 400)) if False else 200 + 37 * int(sysp[-1]),
                sysp,
                "system",
            ),
            Segment("user", int(rng.integers(1, 300)), f"u{i}", "context"),
        ]
        out = int(rng.integers(1, 200))
        sid = f"s{i}" if sessions and rng.random() < 0.3 else None
        reqs.append(
            Request(
                f"r{i}",
                tuple(segs),
                out,
                arrival_s=t,
                session_id=sid,
                output_content_id=f"o{i}" if sid else None,
                cls="chat" if sid else "single",
            )
        )
        if sid:
            hist = (*segs, Segment("assistant", out, f"o{i}", "generation"))
            reqs.append(
                Request(
                    f"r{i}b",
                    (*hist, Segment("user", int(rng.integers(1, 100)), f"v{i}")),
                    int(rng.integers(1, 100)),
                    arrival_s=None,
                    think_time_s=float(rng.exponential(2.0)),
                    session_id=sid,
                    turn=1,
                    cls="chat",
                )
            )
    return Workload(tuple(reqs))


class ExtentSeq:
    """The request state ExtentKV keeps (see kvlab.sim.sequence.Seq), for 4-token blocks:
    full blocks with ``keys`` (runs ending at block indices ``ends``, the last one
    ``1 << 62``) and one more token; ``segments``: ``(end token, retention rank)`` of
    its prompt segments (default: one of rank 1)."""

    block_size = 4

    def __init__(
        self, keys: list[int], ends: list[int], segments: list[tuple[int, int]] | None = None
    ) -> None:
        self.keys, self.ends = keys, ends
        self.table: list[list[object]] = []
        self.pending: list[list[int]] = []
        self.dstamps: list[int] = []
        self.last_ext = None
        self.nblocks = self.num_cached_blocks = self.nkeyed = self.num_computed = 0
        self.num_tokens = self.prompt_len = 4 * len(keys) + 1
        self.lazy_from = 1 << 62
        self.nknown = len(keys)
        self.pkey = [keys[e0] if e0 < len(keys) else None for e0 in [0, *ends[:-1]]]
        segs = segments or [(self.prompt_len, 1)]
        self.seg_ends = [end for end, _ in segs]
        self.seg_ranks = [rank for _, rank in segs]

    def ensure_keys(self, n: int) -> None:
        assert n <= len(self.keys)

    def key_at(self, i: int) -> int:
        return self.keys[i]

    def block_rank(self, i: int) -> int:
        last = (i + 1) * 4 - 1
        if last >= self.prompt_len:
            return 2  # generation
        return self.seg_ranks[bisect.bisect_right(self.seg_ends, last)]


def bins(hist: list[int]) -> dict[int, int]:
    return {i: c for i, c in enumerate(hist) if c}


def chain(run: int, n: int, first: int = 4) -> list[int]:
    """Keys of n blocks of one run (block size 4)."""
    return [(run << 24) + first + 4 * i for i in range(n)]


def admit(kv: Any, seq: ExtentSeq, now: int) -> int:
    """Admit ``seq`` whole (its hit and the rest) at ``now``; the number of hit blocks."""
    hit = kv.lookup_seq(seq)
    assert kv.admit(seq, seq.num_tokens - 4 * len(hit), hit, now) == []
    seq.num_computed = seq.num_tokens - 1
    return len(hit)


def run_in_vllm(py: str, script: str, payload: Any, tmp_path: Path) -> Any:
    """Run ``tests/sim/<script> PAYLOAD.json`` with vLLM's python (CPU build, quiet
    logs) and return the JSON object on its last line of output."""
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload))
    env = dict(os.environ, VLLM_LOGGING_LEVEL="ERROR", VLLM_TARGET_DEVICE="cpu")
    proc = subprocess.run(
        [py, str(Path(__file__).parent / script), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
