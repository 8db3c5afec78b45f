"""benchmarks/vllm_vs_hf.py (fig6) end to end on vLLM's CPU build: the KV bytes are exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.live
def test_fig6_kv_bytes_are_exact(tmp_path: Path, vllm_python: str) -> None:
    out = tmp_path / "fig6"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "vllm_vs_hf.py"),
            "--out",
            str(out),
            "--vllm-python",
            vllm_python,
            "--requests",
            "4",
            "--prompt-tokens",
            "150",
            "--output-tokens",
            "8",
            "--concurrency",
            "2",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    points = json.loads((out / "vllm_vs_hf.json").read_text())["points"]
    vllm, hf = points["vLLM (CPU, HTTP)"], points["transformers (in process)"]
    assert vllm["num_completed"] == hf["num_completed"] == 4
    # 2 sequences of 158 tokens: 2 blocks of 128 each on vLLM's CPU build, 512 B per token
    assert vllm["block_size"] == 128 and vllm["kv_blocks_peak"] == 4
    assert vllm["kv_bytes_server_peak"] == 4 * 128 * 512
    # transformers holds 157 tokens per sequence (the last token's KV is never written)
    assert hf["kv_bytes_measured_peak"] == 2 * 157 * 512 and hf["kv_padding_bytes_peak"] == 0
    assert (out / "fig6.png").is_file() and "| KV bytes at the peak |" in r.stdout
