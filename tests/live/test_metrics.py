"""Server metrics profiles on recorded /metrics, /slots; the sampler against a stub."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlab.backends.metrics import (
    LLAMACPP,
    SGLANG,
    VLLM,
    MetricsSampler,
    cache_config_info,
    counter_deltas,
    detect_profile,
    parse_prometheus,
    parse_slots,
    sample_sum,
    server_summary,
)
from kvlab.backends.transport import HttpTransport

FIX = Path(__file__).parent / "fixtures"


def load(name: str) -> dict:
    return parse_prometheus((FIX / name).read_text())


def test_vllm_recorded_metrics() -> None:
    s = load("vllm_metrics.txt")
    assert detect_profile(s) is VLLM
    g = VLLM.read(s, "gauges")
    assert g == {
        "kv_cache_usage_perc": 0.0,
        "num_requests_running": 0.0,
        "num_requests_waiting": 0.0,
    }
    c = VLLM.read(s, "counters")
    assert c["prefix_cache_queries"] == 609.0
    assert c["prefix_cache_hits"] == 256.0  # two 128-token blocks of the repeated prompt
    assert c["num_preemptions"] == 0.0
    assert c["prompt_tokens"] == 609.0
    assert c["ttft_count"] == 3.0
    info = cache_config_info(s, VLLM)
    assert info["block_size"] == "128" and info["num_gpu_blocks"] == "8192"
    assert info["enable_prefix_caching"] == "True"


def test_prometheus_client_agrees_on_the_recorded_vllm_text() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    text = (FIX / "vllm_metrics.txt").read_text()
    ours = parse_prometheus(text)
    for fam in parser.text_string_to_metric_families(text):
        for smp in fam.samples:
            vals = [v for labels, v in ours[smp.name] if labels == smp.labels]
            assert vals == [smp.value] or (smp.value != smp.value and vals[0] != vals[0])


def test_vllm_legacy_names() -> None:
    s = load("vllm_legacy_metrics.txt")
    assert detect_profile(s) is VLLM
    assert VLLM.read(s, "gauges")["kv_cache_usage_perc"] == 0.375
    c = VLLM.read(s, "counters")
    assert (c["prefix_cache_queries"], c["prefix_cache_hits"]) == (4096.0, 1024.0)
    assert cache_config_info(s, VLLM)["num_gpu_blocks"] == "27000"


def test_sglang_profile() -> None:
    s = load("sglang_metrics.txt")
    assert detect_profile(s) is SGLANG
    g = SGLANG.read(s, "gauges")
    assert g["kv_cache_usage_perc"] == 0.25
    assert g["num_requests_running"] == 3.0 and g["num_requests_waiting"] == 2.0
    c = SGLANG.read(s, "counters")
    assert c["num_preemptions"] == 7.0 and c["prompt_tokens_cached"] == 5120.0
    assert server_summary({"ttft_sum_s": 12.5, "ttft_count": 50.0})["server_ttft_mean_s"] == 0.25


def test_llamacpp_profile_and_slots() -> None:
    """On /metrics and /slots recorded from a real llama-server (fixtures/llamacpp_real/:
    prompts of 33, 34 and 34 tokens, the last two with 33 cached, 4 tokens generated each)."""
    s = load("llamacpp_real/metrics.txt")
    assert detect_profile(s) is LLAMACPP
    g = LLAMACPP.read(s, "gauges")
    assert g == {"num_requests_running": 0.0, "num_requests_waiting": 0.0, "n_tokens_max": 37.0}
    # This llama.cpp no longer exports llamacpp:kv_cache_usage_ratio or kv_cache_tokens:
    # no KV usage is read from it (not a zero).
    assert "kv_cache_usage_perc" not in g and "kv_cache_tokens" not in g
    c = LLAMACPP.read(s, "counters")
    # prompt_tokens_total counts only computed tokens (1 + 1 + 33); kvlab adds the cached
    # ones back, so prompt_tokens is every prompt token sent: 33 + 34 + 34.
    assert c["prompt_tokens"] == 33 + 34 + 34 and c["prompt_tokens_cached"] == 33 + 33
    assert c["generation_tokens"] == 3 * 4 and c["num_decode_calls"] == 12
    slots_text = (FIX / "llamacpp_real" / "slots.json").read_text()
    slots = parse_slots(slots_text)
    assert slots == {
        "num_slots": 2,
        "n_ctx_per_slot": 512,
        "num_busy_slots": 0,
        "slot_ids": [0, 1],
    }
    # The same body with slot 1 mid-request (the recorded server was idle).
    busy = json.loads(slots_text)
    busy[1]["is_processing"] = True
    assert parse_slots(json.dumps(busy))["num_busy_slots"] == 1
    assert parse_slots("not json") == {}


def test_labels_are_summed_and_filtered() -> None:
    text = (
        'vllm:num_requests_running{engine="0",model_name="m"} 2\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 3\n'
        'vllm:prompt_tokens_by_source_total{engine="0",source="local_cache_hit"} 7\n'
        'vllm:prompt_tokens_by_source_total{engine="0",source="local_compute"} 9\n'
    )
    s = parse_prometheus(text)
    assert sample_sum(s, "vllm:num_requests_running") == 5
    assert VLLM.read(s, "counters")["prompt_tokens_cached"] == 7
    assert sample_sum(s, "absent") is None


def test_deltas_and_summary() -> None:
    before = {
        "prefix_cache_queries": 100.0,
        "prefix_cache_hits": 10.0,
        "num_preemptions": 1.0,
        "ttft_sum_s": 1.0,
        "ttft_count": 4.0,
    }
    after = {
        "prefix_cache_queries": 612.0,
        "prefix_cache_hits": 266.0,
        "num_preemptions": 4.0,
        "ttft_sum_s": 3.0,
        "ttft_count": 8.0,
        "new": 5.0,
    }
    d = counter_deltas(before, after)
    assert d == {
        "prefix_cache_queries": 512.0,
        "prefix_cache_hits": 256.0,
        "num_preemptions": 3.0,
        "ttft_sum_s": 2.0,
        "ttft_count": 4.0,
    }
    s = server_summary(d)
    assert s["prefix_cache_queries"] == 512 and s["num_preemptions"] == 3
    assert s["server_ttft_mean_s"] == 0.5 and s["server_ttft_count"] == 4
    # a server restart (counter went down) is not reported as a delta
    assert counter_deltas({"num_preemptions": 9.0}, {"num_preemptions": 1.0}) == {}


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_:][a-z0-9_:]{0,12}", fullmatch=True),
        st.tuples(
            st.text(alphabet='ab"\\ ,={}', max_size=6),
            st.floats(allow_nan=False, allow_infinity=False, width=32),
        ),
        max_size=6,
    )
)
def test_parser_roundtrips_escaped_labels(samples: dict) -> None:
    lines = []
    for name, (lv, v) in samples.items():
        esc = lv.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{name}{{k="{esc}",z="1"}} {v!r}')
    parsed = parse_prometheus("\n".join(lines))
    for name, (lv, v) in samples.items():
        assert parsed[name] == [({"k": lv, "z": "1"}, float(v))]


def test_sampler_keeps_a_time_series_against_a_stub() -> None:
    pytest.importorskip("aiohttp")
    from aiohttp import web

    state = {"n": 0}

    async def metrics(_req: web.Request) -> web.Response:
        state["n"] += 1
        n = state["n"]
        return web.Response(
            text=(
                f'vllm:kv_cache_usage_perc{{engine="0"}} {0.1 * n}\n'
                f'vllm:num_requests_running{{engine="0"}} {n}\n'
                f'vllm:prefix_cache_queries_total{{engine="0"}} {100 * n}\n'
            )
        )

    async def main() -> dict:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        transport = HttpTransport(f"http://127.0.0.1:{port}")
        smp = MetricsSampler(transport, VLLM, interval_s=0.02)
        smp.start(0)
        await asyncio.sleep(0.15)
        await smp.stop()
        await transport.aclose()
        await runner.cleanup()
        return smp.timeseries

    ts = asyncio.run(main())
    n = len(ts["t_s"])
    assert n >= 3
    assert ts["t_s"] == sorted(ts["t_s"])
    running = ts["num_requests_running"]
    # polls answered in order (a poll cancelled by stop() is lost, so gaps are allowed),
    # ending with the last sample stop() takes; counters as deltas since the first sample
    assert running[0] == 1.0 and running == sorted(set(running))
    assert ts["prefix_cache_queries"] == [100.0 * (r - running[0]) for r in running]
