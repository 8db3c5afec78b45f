"""The live backend above its transport, on an in-memory MockTransport (no sockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.backends.stub import StubConfig, stub_transport
from kvlab.backends.transport import MockRequest, MockResponse, MockTransport
from kvlab.errors import BackendUnavailable
from kvlab.results import STATUS_FAILED, STATUS_OK, RunResult
from kvlab.workload.records import Request, Segment, Workload


def wl(n: int, *, out: int = 3) -> Workload:
    reqs = (
        Request(
            f"r{i}",
            (Segment("system", 16, "sys"), Segment("user", 8, f"u{i}")),
            out,
            cls="a" if i % 2 else "b",
        )
        for i in range(n)
    )
    return Workload(tuple(reqs), name="mock")


def run(transport: MockTransport, workload: Workload, **kw: Any) -> RunResult:
    kw.setdefault("metrics_interval_s", 0.0)
    cfg = OpenAIConfig(endpoint="http://mock", model="m", **kw)
    return asyncio.run(OpenAIBackend(cfg, transport=transport).run_async(workload))


def sse(*events: dict[str, Any]) -> list[bytes]:
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def server(completion: Any, **routes: Any) -> MockTransport:
    """/v1/models, the completion handler, and ``routes`` (path -> answer); 404 else."""

    def handle(req: MockRequest) -> MockResponse:
        if req.path == "/v1/models":
            return MockResponse(200, b'{"data":[{"id":"m"}]}')
        if req.path == "/v1/completions":
            return completion(req)
        if req.path in routes:
            got = routes[req.path]
            return got(req) if callable(got) else got
        return MockResponse(404, b"not found")

    return MockTransport(handle)


def test_requests_go_through_the_transport_only() -> None:
    t = stub_transport(StubConfig(cached_tokens=8))
    res = run(t, wl(3, out=4))
    paths = [(r.method, r.path) for r in t.requests]
    assert paths[:4] == [
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("GET", "/slots"),
        ("GET", "/api/version"),
    ]
    posts = [json.loads(r.body) for r in t.requests if r.path == "/v1/completions"]
    assert len(posts) == 3
    assert all(p["stream"] and p["max_tokens"] == 4 and p["ignore_eos"] for p in posts)
    assert all(r.status == STATUS_OK and r.output_tokens == 4 for r in res.records)
    assert [r.cached_tokens for r in res.records] == [8, 8, 8]
    assert res.summary["prefix_cache_source"] == "usage.prompt_tokens_details"
    assert res.config["server"] == {"kind": "openai", "metrics": False}


def test_without_usage_details_the_counts_are_unknown() -> None:
    def completion(_r: MockRequest) -> MockResponse:
        return MockResponse(
            chunks=sse(
                {"choices": [{"index": 0, "text": "x"}]},
                {"choices": [], "usage": {"prompt_tokens": 24, "completion_tokens": 1}},
            )
        )

    res = run(server(completion), wl(2))
    for r in res.records:
        assert r.status == STATUS_OK and r.prompt_tokens == 24
        assert (r.cached_tokens, r.computed_tokens, r.num_preemptions) == (None, None, None)
    s = res.summary
    assert (s["prefix_cache_hits"], s["prefix_cache_hit_rate"], s["prefix_cache_source"]) == (
        None,
        None,
        None,
    )
    assert all(g["prefix_cache_hits"] is None for g in s["by_class"].values())


def test_unreachable_and_unauthorised_servers() -> None:
    def refuse(_r: MockRequest) -> MockResponse:
        raise ConnectionRefusedError("refused")

    with pytest.raises(BackendUnavailable, match="cannot reach http://mock"):
        run(MockTransport(refuse), wl(1))
    locked = MockTransport(lambda r: MockResponse(401, b'{"error":"no key"}'))
    with pytest.raises(BackendUnavailable, match="HTTP 401"):
        run(locked, wl(1))


def test_failures_are_classified_and_counted() -> None:
    calls = [0]

    def completion(_r: MockRequest) -> MockResponse:
        calls[0] += 1
        if calls[0] == 1:
            return MockResponse(500, b'{"error":{"message":"boom"}}')
        if calls[0] == 2:
            raise TimeoutError("nothing received for 1 s")
        return MockResponse(chunks=sse({"choices": [{"index": 0, "text": "x"}]}))

    res = run(server(completion), wl(3), mode="closed", concurrency=1)
    kinds = [r.error for r in res.records]
    assert kinds == ["http_5xx", "timeout", None]
    assert [r.status for r in res.records] == [STATUS_FAILED, STATUS_FAILED, STATUS_OK]
    assert res.summary["errors_by_kind"] == {"http_5xx": 1, "timeout": 1}
    assert res.summary["num_failed"] == 2


def test_server_counters_come_from_metrics_and_classes_from_usage() -> None:
    n = [0]

    def metrics(_r: MockRequest) -> MockResponse:
        text = (
            'vllm:kv_cache_usage_perc{engine="0"} 0.5\n'
            f'vllm:prefix_cache_queries_total{{engine="0"}} {24 * n[0]}\n'
            f'vllm:prefix_cache_hits_total{{engine="0"}} {16 * n[0]}\n'
            f'vllm:num_preemptions_total{{engine="0"}} 0\n'
        )
        return MockResponse(200, text.encode())

    def completion(_r: MockRequest) -> MockResponse:
        n[0] += 1
        return MockResponse(
            chunks=sse(
                {"choices": [{"index": 0, "text": "x"}]},
                {"choices": [], "usage": {"prompt_tokens": 24, "completion_tokens": 1}},
            )
        )

    reset = MockResponse(200, b"{}")
    t = server(completion, **{"/metrics": metrics, "/reset_prefix_cache": reset})
    res = run(t, wl(4), cache_mode="cold")
    s = res.summary
    assert res.config["server"]["kind"] == "vllm"
    assert ("POST", "/reset_prefix_cache") in [(r.method, r.path) for r in t.requests]
    assert (s["prefix_cache_queries"], s["prefix_cache_hits"]) == (4 * 24, 4 * 16)
    assert s["prefix_cache_source"] == "server_metrics" and s["num_preemptions"] == 0
    # the server's counters cannot be split by class, and usage reported no cached tokens
    assert all(g["prefix_cache_source"] is None for g in s["by_class"].values())


def test_mock_transport_hands_each_chunk_to_the_sink() -> None:
    got: list[bytes] = []
    t = MockTransport(lambda r: MockResponse(200, chunks=[b"a", b"bc"]))

    async def main() -> tuple[int, bytes]:
        return await t.stream("/x", b"{}", lambda data, _t: got.append(data))

    assert asyncio.run(main()) == (200, b"")
    assert got == [b"a", b"bc"]
    assert t.requests == [MockRequest("POST", "/x", b"{}")]
