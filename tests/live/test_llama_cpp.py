"""The live tier against a real llama.cpp ``llama-server`` (built from source once by
scripts/llama_cpp.sh) serving the tiny model converted to GGUF.

What is checked: the server's /metrics and /slots as kvlab's llama.cpp profile reads them,
``kvlab replay`` reading cached tokens per request from the server's usage and the hits
from its counters, ``kvlab monitor --once --json`` on its /metrics, a context overflow
classified as one, and the simulator on the same sessions workload: where llama.cpp's
per-slot prompt cache and kvlab's block cache must agree token for token, and by how much
they differ where they do not (see docs/live.md, "llama.cpp").
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kvlab.results import RunResult
from kvlab.workload.generators import generate
from kvlab.workload.io import write_workload
from kvlab.workload.records import Workload

pytestmark = pytest.mark.live

#: Two sessions of four turns for two slots: each session keeps its own slot.
SESSIONS = {"sessions": 2, "turns": 4, "rate_per_s": 50.0, "think_time_s": 0.2,
            "user_tokens": 24, "output_tokens": 8}  # fmt: skip


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def _replay(cli: Any, server: Any, wl: Workload, out: Path, *extra: str) -> RunResult:
    path = write_workload(wl, out.parent / f"{out.name}.jsonl")
    res = cli(["replay", str(path), "--endpoint", server.url, "--model", server.alias,
               "--out", str(out), "--json", "--metrics-interval", "0.1", *extra])  # fmt: skip
    assert res.code == 0, (res.err, server.log_tail())
    return RunResult.load(out)


def _simulate(wl: Workload, model_dir: Path) -> RunResult:
    """The simulator with one-token blocks (llama.cpp reuses any common prefix, not whole
    blocks) and ample memory (two slots of 512 tokens never evict here)."""
    from kvlab.sim import SimConfig, simulate

    return simulate(
        wl,
        SimConfig(
            model=str(model_dir),
            gpu="h100-sxm",
            block_size=1,
            max_model_len=512,
            async_scheduling=False,
        ),
    )


def _per_request(run: RunResult, key: str) -> dict[str, Any]:
    return {r.request_id: getattr(r, key) for r in run.records}


def test_metrics_and_slots_as_the_llamacpp_profile_reads_them(llama_server: Any) -> None:
    from kvlab.backends.metrics import LLAMACPP, detect_profile, parse_prometheus, parse_slots

    samples = parse_prometheus(_get(f"{llama_server.url}/metrics"))
    assert detect_profile(samples) is LLAMACPP
    counters = LLAMACPP.read(samples, "counters")
    for key in ("prompt_tokens", "prompt_tokens_cached", "generation_tokens", "num_decode_calls"):
        assert counters[key] == 0, key  # a fresh server
    gauges = LLAMACPP.read(samples, "gauges")
    assert gauges["num_requests_running"] == 0 and gauges["num_requests_waiting"] == 0
    # this llama.cpp exports no KV usage gauge (kv_cache_usage_ratio was removed upstream)
    assert "kv_cache_usage_perc" not in gauges
    slots = parse_slots(_get(f"{llama_server.url}/slots"))
    assert slots == {"num_slots": 2, "n_ctx_per_slot": 512, "num_busy_slots": 0,
                     "slot_ids": [0, 1]}  # fmt: skip


def test_replay_and_simulator_agree_on_cached_tokens_per_turn(
    llama_server: Any, tiny_model_dir: Path, tmp_path: Path, cli: Any
) -> None:
    """No shared system prompt and answers that the next turn does not reuse (the replay
    resends the workload's answer text, not what the server generated): then each turn
    hits exactly its session's previous prompt, on the server (per slot) and in the
    simulator (one-token blocks)."""
    wl = generate("sessions", seed=3, system_tokens=0, **SESSIONS)
    wl = Workload(tuple(replace(r, output_content_id=None) for r in wl.requests), name="s0")
    real = _replay(cli, llama_server, wl, tmp_path / "real")
    sim = _simulate(wl, tiny_model_dir)
    prompts = {r.request_id: r.prompt_tokens for r in wl.requests}
    previous = {r.request_id: prompts[f"{r.session_id}-t{r.turn - 1}"] if r.turn else 0
                for r in wl.requests}  # fmt: skip
    assert _per_request(real, "prompt_tokens") == prompts  # the GGUF tokenizer agrees
    assert _per_request(real, "cached_tokens") == previous
    assert _per_request(sim, "cached_tokens") == previous
    s = real.summary
    assert s["prefix_cache_source"] == "server_metrics"
    # llama.cpp's prompt_tokens_total leaves out cached tokens: the profile adds them back
    assert s["prefix_cache_queries"] == s["server_prompt_tokens"] == sum(prompts.values())
    assert s["prefix_cache_hits"] == s["prompt_tokens_cached"] == sum(previous.values())
    assert s["prefix_cache_hit_rate"] == pytest.approx(sim.summary["prefix_cache_hit_rate"])
    server = real.config["server"]
    assert server["kind"] == "llamacpp" and server["metrics"] is True
    assert server["slots"] == {"num_slots": 2, "n_ctx_per_slot": 512, "num_busy_slots": 0}


def test_what_the_simulator_models_beyond_one_slot(
    llama_server: Any, tiny_model_dir: Path, tmp_path: Path, cli: Any
) -> None:
    """The generator's own sessions (answers carry an output content id): the simulator
    assumes the client resends the server's answer verbatim, so turn t also hits the
    KV of turn t-1's answer (all of it but the last token, which is never written). The
    server generated other tokens than the replay resends: it hits only the previous
    prompt. The difference is exactly that."""
    wl = generate("sessions", seed=3, system_tokens=0, **SESSIONS)
    real = _replay(cli, llama_server, wl, tmp_path / "real")
    sim = _simulate(wl, tiny_model_dir)
    outputs = {r.request_id: r.output_tokens for r in wl.requests}
    rc, sc = _per_request(real, "cached_tokens"), _per_request(sim, "cached_tokens")
    for r in wl.requests:
        answer_kv = outputs[f"{r.session_id}-t{r.turn - 1}"] - 1 if r.turn else 0
        assert sc[r.request_id] - rc[r.request_id] == answer_kv, r.request_id


def test_with_a_shared_system_prompt_the_slots_hit_at_most_what_the_simulator_does(
    llama_server: Any, tiny_model_dir: Path, tmp_path: Path, cli: Any
) -> None:
    """Two sessions share a 64-token system prompt and interleave. kvlab's block cache
    keeps every prompt it saw (memory is ample here); llama.cpp keeps one sequence per
    slot and sends each request to the idle slot with the longest common prefix, so a
    session whose slot the other session took over hits only the system prompt. Per
    request the server hits at most what the simulator predicts; how much less depends on
    the order requests reached the server (the numbers of one run are in docs/live.md)."""
    wl = generate(
        "sessions",
        seed=3,
        system_tokens=64,
        **{**SESSIONS, "rate_per_s": 1e6, "output_tokens": 64, "turns": 3},
    )
    wl = Workload(tuple(replace(r, output_content_id=None) for r in wl.requests), name="s64")
    real = _replay(cli, llama_server, wl, tmp_path / "real", "--concurrency", "2")
    sim = _simulate(wl, tiny_model_dir)
    rc, sc = _per_request(real, "cached_tokens"), _per_request(sim, "cached_tokens")
    first = min(wl.requests, key=lambda r: (r.arrival_s or 0.0, r.request_id))
    assert rc[first.request_id] == sc[first.request_id] == 0
    for r in wl.requests:
        assert 0 <= rc[r.request_id] <= sc[r.request_id], r.request_id
        if r.turn:  # at least the system prompt: some slot holds a sequence starting with it
            assert rc[r.request_id] >= 64, r.request_id


def test_monitor_once_json_on_the_servers_metrics(
    llama_server: Any, tmp_path: Path, cli: Any
) -> None:
    wl = generate("sessions", seed=3, system_tokens=0, **SESSIONS)
    _replay(cli, llama_server, wl, tmp_path / "real")
    res = cli(["monitor", f"127.0.0.1:{llama_server.port}", "--once", "--json",
               "--interval", "0.2"])  # fmt: skip
    assert res.code == 0, res.err
    (sample,) = json.loads(res.out)["samples"]
    assert sample["up"] is True and sample["server"] == sample["dialect"] == "llamacpp"
    assert sample["num_requests_running"] == 0 and sample["num_requests_waiting"] == 0
    assert sample["kv_cache_usage_perc"] is None  # not exported by this llama.cpp
    assert int(sample["cache_config"]["n_tokens_max"]) > 0


def test_a_prompt_longer_than_a_slot_is_a_context_overflow(
    llama_server: Any, tmp_path: Path, cli: Any
) -> None:
    """600 prompt tokens against 512 per slot: the server refuses with its
    exceed_context_size_error, and the record says context_overflow."""
    from kvlab.workload.records import Request, Segment

    wl = Workload(
        (
            Request("fits", (Segment("user", 100, "a"),), 4, arrival_s=0.0),
            Request("too-long", (Segment("user", 600, "b"),), 4, arrival_s=0.1),
        ),
        name="overflow",
    )
    path = write_workload(wl, tmp_path / "overflow.jsonl")
    res = cli(["replay", str(path), "--endpoint", llama_server.url, "--model", "tiny",
               "--out", str(tmp_path / "run"), "--json"])  # fmt: skip
    assert res.code == 1, res.err  # a request failed: exit 1, the run is still written
    recs = {r.request_id: r for r in RunResult.load(tmp_path / "run").records}
    assert recs["fits"].status == "ok" and recs["fits"].prompt_tokens == 100
    assert recs["too-long"].error == "context_overflow"
    assert "exceeds the available context size" in (recs["too-long"].error_detail or "")


def test_kvlab_serve_llama_cpp_converts_serves_and_stops(
    tiny_gguf: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """``kvlab serve llama.cpp`` on the tiny model directory: converts it with the converter
    beside the binary, serves it under its alias with /metrics and /slots, stops on Ctrl-C."""
    import signal

    from kvlab.backends.vllm_server import free_port
    from serve_helpers import start_until_ready

    binary, _ = tiny_gguf
    port = free_port()
    proc, lines = start_until_ready(
        "serve", "llama.cpp", "--model", str(tiny_model_dir), "--binary", str(binary),
        "--port", str(port), "--gguf-out", str(tmp_path / "t.gguf"),
        "--log", str(tmp_path / "l.log"), "--slots", "3",
        timeout_s=180,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        assert lines[0].startswith(f"converting {tiny_model_dir} to {tmp_path / 't.gguf'}")
        assert lines[-1].startswith("ready in"), (lines, (tmp_path / "l.log").read_text())
        assert (tmp_path / "t.gguf").read_bytes()[:4] == b"GGUF"
        slots = json.loads(_get(f"http://127.0.0.1:{port}/slots"))
        assert len(slots) == 3
        assert "llamacpp:prompt_tokens_total" in _get(f"http://127.0.0.1:{port}/metrics")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps({"model": "tiny", "prompt": "the cache", "max_tokens": 4}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.loads(r.read())
        assert body["model"] == "tiny" and body["usage"]["completion_tokens"] >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait(timeout=30)
    assert code == 130, rest
    assert rest.splitlines()[-1] == "llama-server stopped (Ctrl-C)"
