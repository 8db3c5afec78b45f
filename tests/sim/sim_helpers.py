"""Small models, GPUs and workloads for simulator tests."""

from __future__ import annotations

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
