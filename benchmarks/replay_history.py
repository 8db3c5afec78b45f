"""Scripted against server history on vLLM's CPU build: prefix hits, real and simulated.

Starts vLLM's CPU build ($KVLAB_VLLM_PYTHON) on the tiny model (2,048-token context, 1 GiB
of KV), replays a sessions workload (6 sessions x 4 turns, a 512-token system prompt,
64-token user messages, 32-token answers; one session at a time, so timing cannot change a
hit; the cache reset before each replay) twice: with the scripted history and with
``history="server"`` (``kvlab replay --history server``). Simulates the workload file for
the first and the transcript for the second with the server's block size and count, and
prints prefix-cache queries and hits, real and simulated. Writes figures.json,
sessions.jsonl and transcript.jsonl to OUT_DIR. Usage:

    KVLAB_VLLM_PYTHON=... python benchmarks/replay_history.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

MAX_MODEL_LEN = 2048
KEYS = ("num_completed", "prefix_cache_queries", "prefix_cache_hits", "num_preemptions")


def main(out: Path) -> dict[str, Any]:
    from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
    from kvlab.backends.tiny_model import write_tiny_model
    from kvlab.backends.vllm_server import VllmServer, free_port
    from kvlab.sim import SimConfig, simulate
    from kvlab.workload.generators import generate
    from kvlab.workload.io import read_workload, write_workload

    python = os.environ.get("KVLAB_VLLM_PYTHON")
    if not python:
        sys.exit("set KVLAB_VLLM_PYTHON to the interpreter of vLLM's CPU build")
    out.mkdir(parents=True, exist_ok=True)
    model = write_tiny_model(out / "tiny")
    server = VllmServer(
        python=python,
        model_dir=model,
        port=free_port(),
        log_path=out / "vllm.log",
        max_model_len=MAX_MODEL_LEN,
        kv_cache_space_gib=1,
    )
    wl = generate(
        "sessions",
        seed=0,
        sessions=6,
        turns=4,
        arrival="closed",
        think_time_s=0.0,
        system_tokens=512,
        user_tokens=64,
        output_tokens=32,
    )
    write_workload(wl, out / "sessions.jsonl")
    figures: dict[str, Any] = {}
    server.start()
    try:
        server.wait_ready(1500)
        for history in ("scripted", "server"):
            backend = OpenAIBackend(
                OpenAIConfig(
                    endpoint=server.url,
                    model=server.model,
                    cache_mode="cold",
                    metrics_interval_s=0.2,
                    concurrency=1,
                    history=history,
                )
            )
            real = backend.run(wl)
            replayed = wl
            if backend.transcript is not None:
                path = write_workload(backend.transcript.workload(), out / "transcript.jsonl")
                replayed = read_workload(path)
            cache = real.config["server"]["cache_config"]
            sim = simulate(
                replayed,
                SimConfig(
                    model=str(model),
                    gpu="h100-sxm",
                    block_size=int(cache["block_size"]),
                    num_blocks=int(cache["num_gpu_blocks"]),
                    max_model_len=MAX_MODEL_LEN,
                    async_scheduling=False,  # (vLLM's CPU build: synchronous)
                ),
            )
            row = {k: {"real": real.summary[k], "simulated": sim.summary[k]} for k in KEYS}
            row["transcript"] = real.config.get("transcript")
            figures[history] = row
            print(
                f"history {history}: prefix queries real {row['prefix_cache_queries']['real']:,} "
                f"simulated {row['prefix_cache_queries']['simulated']:,}; hits real "
                f"{row['prefix_cache_hits']['real']:,} simulated "
                f"{row['prefix_cache_hits']['simulated']:,}",
                flush=True,
            )
    finally:
        server.stop()
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
