"""The live OpenAI client against in-process stub servers (no real model needed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kvlab.backends.loadgen import rate_arrivals
from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.backends.stub import StubConfig, StubServer
from kvlab.errors import BackendUnavailable, ConfigError
from kvlab.results import STATUS_FAILED, STATUS_OK, STATUS_UNFINISHED, RunResult
from kvlab.workload.records import Request, Segment, Workload

pytest.importorskip("aiohttp")
from aiohttp import web

FIX = Path(__file__).parent / "fixtures"
ERRORS = {
    (c["server"], c["status"]): c["body"]
    for c in json.loads((FIX / "error_bodies.json").read_text())
}


def req(
    i: int,
    out: int = 4,
    *,
    arrival: float | None = 0.0,
    session: str | None = None,
    think: float | None = None,
    turn: int = 0,
) -> Request:
    return Request(
        f"r{i}",
        (Segment("system", 16, "sys"), Segment("user", 8, f"u{i}")),
        out,
        arrival_s=arrival,
        think_time_s=think,
        session_id=session,
        turn=turn,
    )


def wl(*reqs: Request) -> Workload:
    return Workload(tuple(reqs), name="t")


def cfg(url: str, **kw: Any) -> OpenAIConfig:
    kw.setdefault("model", "stub")
    kw.setdefault("metrics_interval_s", 0.05)
    return OpenAIConfig(endpoint=url, **kw)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def app_server(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """An aiohttp app on a free port with /v1/models plus ``routes`` (path -> POST/GET)."""
    app = web.Application()

    async def models(_r: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub"}]})

    app.router.add_get("/v1/models", models)
    for path, h in routes.items():
        app.router.add_route("*", path, h)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# ---- timing and usage -------------------------------------------------------------------


def test_timing_fields_and_usage() -> None:
    async def main() -> RunResult:
        s = await StubServer(StubConfig(ttft_s=0.05, itl_s=0.01, cached_tokens=16)).start()
        try:
            return await OpenAIBackend(cfg(s.url)).run_async(wl(req(0, out=5)))
        finally:
            await s.stop()

    res = run(main())
    r = res.records[0]
    assert r.status == STATUS_OK
    assert r.sent_s is not None and r.first_token_s is not None and r.finish_s is not None
    assert 0 <= r.arrival_s <= r.sent_s < r.first_token_s <= r.finish_s
    assert 0.045 <= r.first_token_s - r.sent_s < 0.2
    assert r.chunk_times_s is not None and len(r.chunk_times_s) == 5
    assert r.chunk_times_s[0] == r.first_token_s and r.chunk_times_s[-1] == r.finish_s
    gaps = np.diff(r.chunk_times_s)
    # The stub sleeps 10 ms between chunks, but a late timer on a loaded machine can
    # bunch two chunks into one read; what cannot shrink is the whole stream: the last
    # chunk leaves the stub >= 50 ms + 4 x 10 ms after the request reached it.
    assert (gaps >= 0).all() and (gaps < 0.1).all()
    assert r.finish_s - r.sent_s >= 0.05 + 4 * 0.01
    assert r.output_tokens == 5 and r.cached_tokens == 16
    assert r.prompt_tokens == 24  # the stub counts the prompt's words
    s = res.summary
    assert s["prefix_cache_source"] == "usage.prompt_tokens_details"
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"]) == (24, 16)
    assert s["num_completed"] == 1 and s["errors_by_kind"] == {}
    assert res.config["server"] == {"kind": "openai", "metrics": False}


def test_chat_api_streams_too() -> None:
    async def main() -> RunResult:
        s = await StubServer(StubConfig()).start()
        try:
            return await OpenAIBackend(cfg(s.url, api="chat")).run_async(wl(req(0, out=3)))
        finally:
            await s.stop()

    r = run(main()).records[0]
    assert r.status == STATUS_OK and r.output_tokens == 3 and len(r.chunk_times_s or []) == 3


def test_request_body_asks_for_usage_and_exact_length() -> None:
    seen: list[dict[str, Any]] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"text":"x"}]}\n\ndata: [DONE]\n\n')
        return resp

    async def main() -> RunResult:
        async with app_server({"/v1/completions": completions}) as url:
            return await OpenAIBackend(cfg(url)).run_async(wl(req(0, out=7)))

    res = run(main())
    body = seen[0]
    assert body["max_tokens"] == 7 and body["ignore_eos"] is True and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "stub" and isinstance(body["prompt"], str)
    # no usage from this server: output tokens fall back to counted chunks
    assert res.records[0].output_tokens == 1


# ---- error taxonomy --------------------------------------------------------------------


def answer(status: int, body: str) -> Handler:
    async def h(_r: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    return h


@pytest.mark.parametrize(
    ("status", "server", "kind"),
    [
        (400, "vllm", "context_overflow"),
        (400, "llama-server", "context_overflow"),
        (400, "llama-cpp-python", "context_overflow"),
        (400, "sglang", "context_overflow"),
        (404, "vllm", "http_4xx"),
        (500, "vllm", "http_5xx"),
    ],
)
def test_http_errors_are_classified(status: int, server: str, kind: str) -> None:
    async def main() -> RunResult:
        h = answer(status, ERRORS[(server, status)])
        async with app_server({"/v1/completions": h}) as url:
            return await OpenAIBackend(cfg(url)).run_async(wl(req(0), req(1)))

    res = run(main())
    assert [r.error for r in res.records] == [kind, kind]
    assert all(r.status == STATUS_FAILED for r in res.records)
    assert res.summary["errors_by_kind"] == {kind: 2}
    assert res.summary["num_failed"] == 2 and res.summary["num_completed"] == 0


def test_200_with_zero_chunks_is_a_failure() -> None:
    async def empty(request: web.Request) -> web.StreamResponse:
        # llama-cpp-python's streaming answer to a context overflow
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        return resp

    async def main() -> RunResult:
        async with app_server({"/v1/completions": empty}) as url:
            return await OpenAIBackend(cfg(url)).run_async(wl(req(0)))

    assert run(main()).records[0].error == "empty_stream"


def test_error_event_inside_the_stream() -> None:
    async def dying(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(
            b'data: {"error": {"message": "EngineCore encountered an issue.", '
            b'"type": "InternalServerError", "param": null, "code": 500}}\n\ndata: [DONE]\n\n'
        )
        return resp

    async def main() -> RunResult:
        async with app_server({"/v1/completions": dying}) as url:
            return await OpenAIBackend(cfg(url)).run_async(wl(req(0)))

    r = run(main()).records[0]
    assert r.error == "stream_error" and "EngineCore" in (r.error_detail or "")


def test_timeout_is_bounded() -> None:
    async def slow(_r: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def main() -> RunResult:
        async with app_server({"/v1/completions": slow}) as url:
            c = cfg(url, timeout_s=0.3)
            return await OpenAIBackend(c).run_async(wl(req(0)))

    res = run(main())
    assert res.records[0].error == "timeout"
    assert res.wall_s is not None and res.wall_s < 2.0


def test_connection_refused() -> None:
    async def main() -> RunResult:
        s = await StubServer().start()
        url = s.url
        await s.stop()
        return await OpenAIBackend(cfg(url, preflight=False)).run_async(wl(req(0)))

    r = run(main()).records[0]
    assert r.status == STATUS_FAILED and r.error == "connect"


def test_unreachable_server_fails_fast_with_a_clear_error() -> None:
    async def main() -> None:
        s = await StubServer().start()
        url = s.url
        await s.stop()
        await OpenAIBackend(cfg(url)).run_async(wl(req(0)))

    with pytest.raises(BackendUnavailable, match="cannot reach"):
        run(main())


def test_disconnect_mid_stream() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"text":"a"}]}\n\n')
        await asyncio.sleep(0.02)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def main() -> RunResult:
        async with app_server({"/v1/completions": cut}) as url:
            return await OpenAIBackend(cfg(url)).run_async(wl(req(0)))

    r = run(main()).records[0]
    assert r.status == STATUS_FAILED and r.error == "disconnected"
    assert r.chunk_times_s is not None and len(r.chunk_times_s) == 1


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        OpenAIConfig(endpoint="localhost:8000", model="m")
    with pytest.raises(ConfigError):
        OpenAIConfig(endpoint="http://x", model="m", mode="closed")
    with pytest.raises(ConfigError):
        OpenAIConfig(endpoint="http://x", model="m", cache_mode="hot")


# ---- load modes ------------------------------------------------------------------------


def test_closed_loop_reaches_the_asked_concurrency() -> None:
    async def main() -> tuple[RunResult, int]:
        s = await StubServer(StubConfig(ttft_s=0.05, itl_s=0.01)).start()
        try:
            c = cfg(s.url, mode="closed", concurrency=16)
            res = await OpenAIBackend(c).run_async(wl(*(req(i, out=8) for i in range(64))))
            return res, s.num_requests
        finally:
            await s.stop()

    res, served = run(main())
    assert served == 64
    assert res.summary["num_completed"] == 64
    assert res.summary["achieved_concurrency_max"] == 16
    assert res.summary["achieved_concurrency_mean"] > 13
    # closed loop: a request is due when a worker is free, so it is never late
    assert res.summary["send_lateness_s"]["p99"] < 0.01


def test_rate_mode_sends_on_a_seeded_gamma_schedule() -> None:
    n = 30

    async def main() -> RunResult:
        s = await StubServer(StubConfig(ttft_s=0.005)).start()
        try:
            c = cfg(s.url, mode="rate", rate_per_s=300.0, burstiness=0.5, seed=7)
            return await OpenAIBackend(c).run_async(wl(*(req(i) for i in range(n))))
        finally:
            await s.stop()

    res = run(main())
    due = rate_arrivals(n, 300.0, 0.5, np.random.default_rng(7))
    assert np.allclose([r.arrival_s for r in res.records], due)
    late = [r.sent_s - r.arrival_s for r in res.records if r.sent_s is not None]
    assert min(late) >= 0 and np.median(late) < 0.01


def test_rate_arrivals_statistics() -> None:
    rng = np.random.default_rng(0)
    t = rate_arrivals(20000, 50.0, 1.0, rng)
    gaps = np.diff(t)
    assert abs(gaps.mean() - 1 / 50) < 0.001
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05  # Poisson: CV 1
    g2 = np.diff(rate_arrivals(20000, 50.0, 4.0, np.random.default_rng(0)))
    assert abs(g2.std() / g2.mean() - 0.5) < 0.03  # gamma shape 4: CV 1/2


def test_rate_mode_concurrency_cap() -> None:
    async def main() -> RunResult:
        s = await StubServer(StubConfig(ttft_s=0.05)).start()
        try:
            c = cfg(s.url, mode="rate", rate_per_s=1000.0, concurrency=4)
            return await OpenAIBackend(c).run_async(wl(*(req(i, out=2) for i in range(20))))
        finally:
            await s.stop()

    res = run(main())
    assert res.summary["num_completed"] == 20
    assert res.summary["achieved_concurrency_max"] == 4


def test_sessions_wait_for_the_previous_answer_plus_think_time() -> None:
    turns = []
    for s in range(3):
        turns.append(req(10 * s, out=3, arrival=0.01 * s, session=f"s{s}", turn=0))
        for k in (1, 2):
            turns.append(req(10 * s + k, out=3, arrival=None, session=f"s{s}", think=0.03, turn=k))

    async def main(mode: str) -> RunResult:
        s = await StubServer(StubConfig(ttft_s=0.02, itl_s=0.005)).start()
        try:
            return await OpenAIBackend(cfg(s.url, mode=mode)).run_async(wl(*turns))
        finally:
            await s.stop()

    for mode in ("sessions", "trace"):
        res = run(main(mode))
        by_id = {r.request_id: r for r in res.records}
        for s in range(3):
            first = by_id[f"r{10 * s}"]
            assert first.sent_s is not None and first.sent_s >= 0.01 * s
            for k in (1, 2):
                prev, cur = by_id[f"r{10 * s + k - 1}"], by_id[f"r{10 * s + k}"]
                assert prev.finish_s is not None and cur.sent_s is not None
                assert cur.sent_s >= prev.finish_s + 0.03
                assert cur.arrival_s == pytest.approx(prev.finish_s + 0.03, abs=0.005)
        # sessions overlap with each other: the run is shorter than their sum
        assert res.summary["achieved_concurrency_max"] >= 2


def test_trace_mode_honours_arrival_times() -> None:
    async def main() -> RunResult:
        s = await StubServer(StubConfig()).start()
        try:
            reqs = [req(i, arrival=0.05 * i) for i in range(4)]
            return await OpenAIBackend(cfg(s.url)).run_async(wl(*reqs))
        finally:
            await s.stop()

    res = run(main())
    sent = [r.sent_s for r in res.records]
    assert all(s is not None for s in sent)
    for i, r in enumerate(res.records):
        assert r.arrival_s == pytest.approx(0.05 * i)
        # causality, not wall time (a loaded machine is late, never early): a request
        # leaves at or after its arrival, and in arrival order
        assert r.sent_s is not None and r.sent_s >= r.arrival_s
    assert sent == sorted(sent)  # type: ignore[type-var]


# ---- keys, faults, stops ---------------------------------------------------------------


def test_api_key_is_sent_but_never_written(tmp_path: Path) -> None:
    key = "sk-kvlab-SECRET-4242"

    async def guarded(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        # a careless server that echoes the header in its error body
        return web.Response(
            status=401,
            text=json.dumps({"error": f"bad header {auth}"}),
            content_type="application/json",
        )

    async def ok(request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == f"Bearer {key}"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"text":"x"}]}\n\ndata: [DONE]\n\n')
        return resp

    async def main() -> tuple[RunResult, RunResult]:
        async with app_server({"/v1/completions": guarded}) as url:
            bad = await OpenAIBackend(cfg(url, api_key=key)).run_async(wl(req(0)))
        async with app_server({"/v1/completions": ok}) as url:
            good = await OpenAIBackend(cfg(url, api_key=key)).run_async(wl(req(0)))
        return bad, good

    bad, good = run(main())
    assert bad.records[0].error == "http_4xx" and "***" in (bad.records[0].error_detail or "")
    assert good.records[0].status == STATUS_OK
    assert "api_key" not in good.config and good.config["api_key_set"] is True
    assert key not in repr(cfg("http://x", api_key=key))
    assert cfg(f"http://u:{key}@h:1/v1").to_dict()["endpoint"] == "http://h:1/v1"
    for i, res in enumerate((bad, good)):
        d = res.save(tmp_path / str(i))
        for f in d.iterdir():
            assert key not in f.read_text(), f


def test_server_dying_mid_run_leaves_failures_with_causes() -> None:
    n = 60

    async def main() -> RunResult:
        s = await StubServer(StubConfig(ttft_s=0.02, itl_s=0.005)).start()

        async def kill_later() -> None:
            # once some requests were served (not after a fixed time: a loaded machine
            # may not have finished one by then), and well before all of them
            for _ in range(2000):
                if s.num_requests >= 8:
                    break
                await asyncio.sleep(0.005)
            await s.stop()

        killer = asyncio.create_task(kill_later())
        c = cfg(s.url, mode="closed", concurrency=4)
        res = await OpenAIBackend(c).run_async(wl(*(req(i, out=6) for i in range(n))))
        await killer
        return res

    res = run(main())
    kinds = res.summary["errors_by_kind"]
    assert len(res.records) == n
    assert 0 < res.summary["num_completed"] < n
    assert res.summary["num_completed"] + res.summary["num_failed"] == n
    assert set(kinds) <= {"disconnected", "connect"} and kinds.get("connect", 0) > 0
    assert all(r.error_detail for r in res.records if r.status == STATUS_FAILED)


def test_max_errors_stops_early() -> None:
    async def main() -> RunResult:
        h = answer(500, ERRORS[("vllm", 500)])
        async with app_server({"/v1/completions": h}) as url:
            c = cfg(url, mode="closed", concurrency=2, max_errors=3)
            return await OpenAIBackend(c).run_async(wl(*(req(i) for i in range(50))))

    res = run(main())
    s = res.summary
    assert 3 <= s["num_failed"] <= 4
    assert s["num_unfinished"] == 50 - s["num_failed"]
    assert "max-errors" in s["stopped"]
    assert all(r.status in (STATUS_FAILED, STATUS_UNFINISHED) for r in res.records)


def test_records_stream_to_the_callback_as_they_finish() -> None:
    seen: list[str] = []

    async def main() -> RunResult:
        s = await StubServer(StubConfig(ttft_s=0.01)).start()
        try:
            c = cfg(s.url, mode="closed", concurrency=2)
            return await OpenAIBackend(c).run_async(
                wl(*(req(i) for i in range(6))), on_record=lambda r: seen.append(r.request_id)
            )
        finally:
            await s.stop()

    res = run(main())
    assert sorted(seen) == sorted(r.request_id for r in res.records)
    assert [r.request_id for r in res.records] == [f"r{i}" for i in range(6)]


# ---- server metrics and cache modes ---------------------------------------------------------


def vllm_server(state: dict[str, Any]) -> dict[str, Handler]:
    """A vLLM-shaped stub: counters grow with each request; reset endpoint counts calls."""

    async def metrics(_r: web.Request) -> web.Response:
        n = state["n"]
        return web.Response(
            text=(
                'vllm:kv_cache_usage_perc{engine="0",model_name="stub"} 0.5\n'
                f'vllm:num_requests_running{{engine="0",model_name="stub"}} {state["running"]}\n'
                'vllm:num_requests_waiting{engine="0",model_name="stub"} 0\n'
                f'vllm:prefix_cache_queries_total{{engine="0",model_name="stub"}} {24 * n}\n'
                f'vllm:prefix_cache_hits_total{{engine="0",model_name="stub"}} {16 * n}\n'
                f'vllm:num_preemptions_total{{engine="0",model_name="stub"}} {n // 2}\n'
                f'vllm:time_to_first_token_seconds_sum{{engine="0",model_name="stub"}} {0.01 * n}\n'
                f'vllm:time_to_first_token_seconds_count{{engine="0",model_name="stub"}} {n}\n'
                'vllm:cache_config_info{block_size="16",num_gpu_blocks="100",engine="0"} 1\n'
            )
        )

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state["prompts"].append(body["prompt"])
        state["running"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(0.03)
        await resp.write(b'data: {"choices":[{"index":0,"text":"x"}]}\n\n')
        state["n"] += 1
        state["running"] -= 1
        await resp.write(
            b'data: {"choices":[],"usage":{"prompt_tokens":24,'
            b'"completion_tokens":1}}\n\ndata: [DONE]\n\n'
        )
        return resp

    async def reset(_r: web.Request) -> web.Response:
        state["resets"] += 1
        return web.json_response({"success": True})

    return {"/metrics": metrics, "/v1/completions": completions, "/reset_prefix_cache": reset}


def test_server_counters_and_time_series() -> None:
    state: dict[str, Any] = {"n": 10, "running": 0, "prompts": [], "resets": 0}

    async def main() -> RunResult:
        async with app_server(vllm_server(state)) as url:
            c = cfg(url, mode="closed", concurrency=2, metrics_interval_s=0.01)
            return await OpenAIBackend(c).run_async(wl(*(req(i) for i in range(8))))

    res = run(main())
    s = res.summary
    assert res.config["server"]["kind"] == "vllm"
    assert res.config["server"]["cache_config"]["block_size"] == "16"
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"]) == (8 * 24, 8 * 16)
    assert s["prefix_cache_hit_rate"] == pytest.approx(16 / 24)
    assert s["num_preemptions"] == 4 and s["prefix_cache_source"] == "server_metrics"
    assert s["server_ttft_mean_s"] == pytest.approx(0.01) and s["server_ttft_count"] == 8
    ts = res.timeseries
    assert len(ts["t_s"]) >= 5 and set(ts) >= {"kv_cache_usage_perc", "num_requests_running"}
    assert max(ts["num_requests_running"]) >= 1
    assert state["resets"] == 0  # warm mode leaves the cache alone


def test_cold_mode_resets_where_possible_else_salts() -> None:
    state: dict[str, Any] = {"n": 0, "running": 0, "prompts": [], "resets": 0}

    async def main() -> tuple[RunResult, list[str]]:
        async with app_server(vllm_server(state)) as url:
            res = await OpenAIBackend(cfg(url, cache_mode="cold")).run_async(wl(req(0)))
        salted: list[str] = []

        async def plain(request: web.Request) -> web.StreamResponse:
            salted.append((await request.json())["prompt"])
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"choices":[{"index":0,"text":"x"}]}\n\n')
            return resp

        async with app_server({"/v1/completions": plain}) as url:
            res2 = await OpenAIBackend(cfg(url, cache_mode="cold")).run_async(wl(req(0), req(1)))
        assert "salted" in res2.config["cache_mode_applied"]
        return res, salted

    res, salted = run(main())
    assert state["resets"] == 1 and "reset" in res.config["cache_mode_applied"]
    assert not state["prompts"][0].startswith("[kvlab-")
    assert all(p.startswith("[kvlab-") for p in salted)
    # one salt per run: the two requests still share their system-prompt prefix
    assert salted[0].split("]")[0] == salted[1].split("]")[0]


def test_primed_mode_sends_each_prompt_once_first() -> None:
    state: dict[str, Any] = {"n": 0, "running": 0, "prompts": [], "resets": 0}

    async def main() -> RunResult:
        async with app_server(vllm_server(state)) as url:
            return await OpenAIBackend(cfg(url, cache_mode="primed")).run_async(
                wl(req(0), req(1), req(0))
            )

    res = run(main())
    assert state["resets"] == 1
    assert len(state["prompts"]) == 2 + 3  # two distinct prompts primed, then the run
    assert res.summary["num_completed"] == 3


@pytest.mark.parametrize("client", ["kvlab", "aiohttp"])
def test_both_http_clients_give_the_same_records(client: str) -> None:
    async def main() -> RunResult:
        s = await StubServer(StubConfig(ttft_s=0.02, itl_s=0.005, cached_tokens=3)).start()
        try:
            c = cfg(s.url, mode="closed", concurrency=3, http_client=client)
            return await OpenAIBackend(c).run_async(wl(*(req(i, out=4) for i in range(6))))
        finally:
            await s.stop()

    res = run(main())
    assert res.summary["num_completed"] == 6
    for r in res.records:
        assert r.output_tokens == 4 and r.cached_tokens == 3
        assert r.chunk_times_s is not None and len(r.chunk_times_s) == 4
        assert r.first_token_s is not None and r.sent_s is not None
        assert 0.018 <= r.first_token_s - r.sent_s < 0.2


def sse_ok() -> Handler:
    async def h(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"text":"x"}]}\n\ndata: [DONE]\n\n')
        return resp

    return h


def test_llama_server_shape_detected_and_slots_erased() -> None:
    calls: list[str] = []
    # /slots and /metrics as a real llama-server answers them (fixtures/llamacpp_real/)
    slots = (FIX / "llamacpp_real" / "slots.json").read_text()
    metrics = (FIX / "llamacpp_real" / "metrics.txt").read_text()

    async def get_slots(_r: web.Request) -> web.Response:
        return web.Response(text=slots, content_type="application/json")

    async def erase(request: web.Request) -> web.Response:
        calls.append(f"{request.match_info['id']}:{request.query.get('action')}")
        return web.json_response({"id_slot": int(request.match_info["id"]), "n_erased": 10})

    async def get_metrics(_r: web.Request) -> web.Response:
        return web.Response(text=metrics)

    async def main() -> RunResult:
        async with app_server(
            {
                "/slots": get_slots,
                "/slots/{id}": erase,
                "/metrics": get_metrics,
                "/v1/completions": sse_ok(),
            }
        ) as url:
            return await OpenAIBackend(cfg(url, cache_mode="cold")).run_async(wl(req(0)))

    res = run(main())
    server = res.config["server"]
    assert server["kind"] == "llamacpp" and server["metrics"] is True
    assert server["slots"] == {"num_slots": 2, "n_ctx_per_slot": 512, "num_busy_slots": 0}
    assert calls == ["0:erase", "1:erase"]
    assert "reset" in res.config["cache_mode_applied"] and res.config["cache_salt"] is None
    # This llama.cpp counts cached prompt tokens (llamacpp:prompt_tokens_cached_total), so
    # the hits come from its counters (the hand-written body of an older version had none).
    assert res.summary["prefix_cache_source"] == "server_metrics"
    # The stub answers the same body before and after the run: no queries, no hits.
    assert res.summary["prefix_cache_queries"] == 0 and res.summary["prefix_cache_hits"] == 0
    assert res.summary["kv_cache_usage_perc_max"] is None  # no KV usage gauge any more


def test_sglang_shape_flushes_the_cache() -> None:
    flushed: list[int] = []
    metrics = (FIX / "sglang_metrics.txt").read_text()

    async def flush(_r: web.Request) -> web.Response:
        flushed.append(1)
        return web.Response(text="Cache flushed.")

    async def get_metrics(_r: web.Request) -> web.Response:
        return web.Response(text=metrics)

    async def main() -> RunResult:
        async with app_server(
            {"/flush_cache": flush, "/metrics": get_metrics, "/v1/completions": sse_ok()}
        ) as url:
            return await OpenAIBackend(cfg(url, cache_mode="cold")).run_async(wl(req(0)))

    res = run(main())
    assert res.config["server"]["kind"] == "sglang" and flushed == [1]
    assert res.summary["num_preemptions"] == 0  # the retraction counter did not move
    assert res.timeseries["kv_cache_usage_perc"][0] == 0.25


def test_ollama_shape_is_detected_and_salted() -> None:
    async def version(_r: web.Request) -> web.Response:
        return web.json_response({"version": "0.5.7"})

    async def main() -> RunResult:
        async with app_server({"/api/version": version, "/v1/completions": sse_ok()}) as url:
            return await OpenAIBackend(cfg(url, cache_mode="cold")).run_async(wl(req(0)))

    res = run(main())
    assert res.config["server"] == {"kind": "ollama", "metrics": False}
    assert res.config["cache_salt"] is not None
    assert res.timeseries == {}
