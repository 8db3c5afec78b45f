"""kvlab's llama.cpp support on responses recorded from a real llama-server (no server
needed): the one scripts/llama_cpp.sh builds, serving the tiny model as GGUF with 2 slots
of 512 tokens. What was sent is in tests/live/fixtures/README.md."""

from __future__ import annotations

import json
from pathlib import Path

from kvlab.backends.failures import classify_status
from kvlab.backends.metrics import (
    LLAMACPP,
    counter_deltas,
    detect_profile,
    parse_prometheus,
    parse_slots,
    server_summary,
)
from kvlab.backends.stream import StreamReader, usage_tokens

REC = Path(__file__).parent / "fixtures" / "llamacpp_real"


def test_metrics_profile_and_prompt_tokens_with_the_cached_ones() -> None:
    """llama.cpp's prompt_tokens_total counts only the prompt tokens it computed
    ("excluding cached tokens"): 33 + 1 + 1 of three prompts of 33, 34 and 34 tokens,
    66 of which came from the cache. kvlab's prompt_tokens is every prompt token."""
    samples = parse_prometheus((REC / "metrics.txt").read_text())
    assert detect_profile(samples) is LLAMACPP
    assert samples["llamacpp:prompt_tokens_total"][0][1] == 35
    counters = LLAMACPP.read(samples, "counters")
    assert counters["prompt_tokens"] == 33 + 34 + 34 == 101
    assert counters["prompt_tokens_cached"] == 66
    s = server_summary(counter_deltas(dict.fromkeys(counters, 0.0), counters))
    assert s["prefix_cache_queries"] == s["server_prompt_tokens"] == 101
    assert s["prefix_cache_hits"] == s["prompt_tokens_cached"] == 66
    assert s["server_generation_tokens"] == 12
    gauges = LLAMACPP.read(samples, "gauges")
    assert gauges == {"num_requests_running": 0, "num_requests_waiting": 0,
                      "n_tokens_max": 37}  # fmt: skip


def test_slots() -> None:
    slots = parse_slots((REC / "slots.json").read_text())
    assert slots == {"num_slots": 2, "n_ctx_per_slot": 512, "num_busy_slots": 0,
                     "slot_ids": [0, 1]}  # fmt: skip


def test_cached_tokens_from_usage_agree_with_timings() -> None:
    body = json.loads((REC / "completion.json").read_text())
    assert usage_tokens(body["usage"]) == (34, 4, 33)
    assert body["timings"]["cache_n"] == 33 and body["timings"]["prompt_n"] == 1
    reader = StreamReader(chat=False)
    reader.feed((REC / "completion_stream.txt").read_bytes(), 1)
    reader.finish()
    assert usage_tokens(reader.usage) == (34, 4, 33)
    assert len(reader.chunk_times_ns) >= 1


def test_overflow_is_a_context_overflow() -> None:
    body = (REC / "overflow_error.json").read_text()
    f = classify_status(400, body)
    assert f.kind == "context_overflow"
    assert "600 tokens" in f.detail and "512" in f.detail


def test_build_script_without_a_compiler_says_so_in_one_line(tmp_path: Path) -> None:
    """scripts/llama_cpp.sh on a machine without cmake: one line naming what is missing,
    exit 1, nothing built (the llama.cpp tests then say how to build)."""
    import shutil
    import subprocess

    script = Path(__file__).resolve().parents[2] / "scripts" / "llama_cpp.sh"
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("dirname",):  # what the script runs before its checks
        found = shutil.which(name)
        assert found is not None
        (tools / name).symlink_to(found)
    bash = shutil.which("bash")
    assert bash is not None
    cache = str(tmp_path / "c")
    proc = subprocess.run(
        [bash, str(script)],
        env={"PATH": str(tools), "HOME": str(tmp_path), "KVLAB_LLAMA_CPP_CACHE": cache},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'cmake' is not installed" in lines[0], proc.stderr
    assert not (tmp_path / "c").exists()
