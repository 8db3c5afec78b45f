"""Parsing vLLM's startup KV-capacity log lines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvlab.backends.vllm_log import parse_kv_capacity

CPU_LOG = (
    "(Worker pid=8204) INFO 11-26 00:00:22 [cpu_worker.py:260] "
    "Explicitly set (1.0/9.59) GiB for KV cache on node 0.\n"
    "(EngineCore pid=8129) INFO 11-26 00:00:22 [kv_cache_utils.py:2327] "
    "CPU KV cache size: 2,097,152 tokens, "
    "Maximum concurrency for 256 tokens per request: 8192.00x\n"
)


def test_parses_cpu_capacity_line() -> None:
    cap = parse_kv_capacity(CPU_LOG)
    assert cap is not None
    assert cap.device == "CPU"
    assert cap.kv_cache_tokens == 2_097_152
    assert cap.max_model_len == 256
    assert cap.max_concurrency == 8192.0
    assert cap.max_concurrency_text == "8192.00"
    assert cap.explicit_kv_gib == 1.0
    assert cap.num_blocks_override is None


def test_parses_gpu_line_and_override() -> None:
    text = (
        "INFO [kv_cache_utils.py:2620] Overriding num_gpu_blocks=16384 with "
        "num_gpu_blocks_override=4\n"
        "INFO [kv_cache_utils.py:2327] GPU KV cache size: 512 tokens, Maximum concurrency "
        "for 256 tokens per request: 2.00x\n"
    )
    cap = parse_kv_capacity(text)
    assert cap is not None
    assert (cap.device, cap.kv_cache_tokens, cap.max_concurrency_text) == ("GPU", 512, "2.00")
    assert cap.num_blocks_override == 4
    assert cap.explicit_kv_gib is None


def test_absent_line_is_none() -> None:
    assert parse_kv_capacity("INFO starting\nINFO loading weights\n") is None


@given(
    tokens=st.integers(0, 10**9),
    max_len=st.integers(1, 10**6),
    conc=st.floats(0, 1e6, allow_nan=False),
)
def test_roundtrip_of_the_format_vllm_uses(tokens: int, max_len: int, conc: float) -> None:
    # Same format string as vLLM's update_kv_cache_capacity.
    fmt = "%s KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx"
    line = fmt % ("CPU", f"{tokens:,}", f"{max_len:,}", conc)
    cap = parse_kv_capacity("(EngineCore pid=1) INFO [x.py:1] " + line)
    assert cap is not None
    assert cap.kv_cache_tokens == tokens
    assert cap.max_model_len == max_len
    assert cap.max_concurrency_text == f"{conc:.2f}"
