"""kvlab.agents.live against a local stub of an OpenAI-compatible server (no vLLM)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langchain_openai")
pytest.importorskip("langchain.agents.middleware")

from kvlab.agents.graph import StrategyConfig
from kvlab.agents.live import RunConfig, run
from kvlab.agents.workflow import WorkflowConfig
from kvlab.results import RunResult

LIMIT = 3000


def tokens(messages: list[dict]) -> int:
    return sum(len(json.dumps(m)) for m in messages) // 4 + 10


class Stub(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: object, ctype: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            text = "vllm:kv_cache_usage_perc 0.5\nvllm:num_preemptions_total 3\n"
            self._send(200, text, "text/plain")
        else:
            self._send(404, {"error": "no"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/reset_prefix_cache":
            self._send(200, {})
        elif self.path == "/tokenize":
            self._send(200, {"count": tokens(body["messages"])})
        elif self.path == "/v1/chat/completions":
            n = tokens(body["messages"])
            if n > LIMIT:
                msg = (
                    f"This model's maximum context length is {LIMIT} tokens. However, your "
                    f"prompt contains at least {n} input tokens"
                )
                self._send(400, {"error": {"message": msg, "type": "BadRequestError", "code": 400}})
                return
            self._send(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}
                    ],
                    "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1,
                              "prompt_tokens_details": {"cached_tokens": n // 2}},
                },
            )  # fmt: skip
        else:
            self._send(404, {"error": "no"})


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def config(strategy: str, endpoint: str, agents: int = 1) -> RunConfig:
    return RunConfig(
        strategy=strategy,
        endpoint=endpoint,
        model="stub",
        workflow=WorkflowConfig(num_companies=3, pages=3, page_words=150, mc_runs=200),
        strategies=StrategyConfig(budget_tokens=2500, clip_chars=400, window=1),
        num_agents=agents,
        targets=("llama-3.1-8b",),
        timeout_s=30,
    )


def test_naive_overflow_is_recorded(endpoint: str, tmp_path: Path) -> None:
    rep = run(config("naive", endpoint), tmp_path, progress=None)
    assert rep["completed"] == 0 and rep["prefix_cache_reset"] is True
    over = rep["agents"][0]["overflow"]
    assert over["kind"] == "context_length" and over["company"]
    rows = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert rows[-1]["status"] == "overflow" and rows[-1]["step"] == over["step"]
    assert rows[0]["server_kv_usage_perc"] == 0.5 and rows[0]["server_preemptions"] == 0
    assert rows[0]["kv_bytes"]["llama-3.1-8b"] == rows[0]["prompt_tokens"] * 131072
    res = RunResult.load(tmp_path)
    assert res.summary["num_failed"] == 1
    assert res.summary["prefix_cache_source"] == "usage.prompt_tokens_details"


def test_fleet_of_compacting_agents_completes(endpoint: str, tmp_path: Path) -> None:
    rep = run(config("cache_aware", endpoint, agents=3), tmp_path, progress=None)
    assert rep["completed"] == 3
    assert all(a["fact_retention"] == 1.0 and a["exact_token_counts"] for a in rep["agents"])
    assert rep["max_prompt_tokens"] <= 2500
    assert rep["tokens_recomputed"] == rep["tokens_sent"] - rep["tokens_cached"]


def test_unreachable_server_is_one_error(tmp_path: Path) -> None:
    from kvlab.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable):
        run(config("naive", "http://127.0.0.1:9"), tmp_path, progress=None)
