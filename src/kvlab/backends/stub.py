"""A minimal OpenAI-compatible streaming server, for tests and client benchmarks.

It answers ``POST /v1/completions`` and ``/v1/chat/completions`` with a
server-sent-event stream of ``num_chunks`` content chunks (default: one per
requested token), a usage chunk and ``[DONE]``; ``GET /v1/models``; and
``GET /metrics`` with a fixed text when one is given (:func:`respond`;
:func:`stub_transport` gives the same answers in memory). Every answer is the word
``" tok"`` once per chunk. Its tokenizer is whitespace: a prompt is as many tokens
as it has words, and a request with ``return_token_ids`` (vLLM's extension) gets
the prompt's ids in its first content chunk and each chunk's ids, a word's id being
its CRC-32 (:func:`word_id`). It is a raw asyncio
protocol (HTTP/1.1 keep-alive, chunked transfer encoding), so that one core
can serve thousands of streams per second and a client benchmark measures
the client, not the server.

Run it alone with ``python -m kvlab.backends.stub --port P [--cpu 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import zlib
from dataclasses import dataclass
from typing import cast

from kvlab.backends.transport import MockRequest, MockResponse, MockTransport


@dataclass(frozen=True)
class StubConfig:
    """``ttft_s`` before the first chunk, ``itl_s`` between chunks; ``num_chunks``
    None means one chunk per requested token; ``cached_tokens`` is reported in
    ``usage.prompt_tokens_details`` when not None; with ``error_status`` every
    completion is answered with that status and ``error_body``; ``max_model_len``
    is reported per model in ``/v1/models`` as vLLM does, when not None."""

    ttft_s: float = 0.0
    itl_s: float = 0.0
    num_chunks: int | None = None
    cached_tokens: int | None = None
    metrics_text: str | None = None
    model: str = "stub"
    error_status: int | None = None
    error_body: str = '{"error":{"message":"stub error","code":500}}'
    max_model_len: int | None = None
    #: False: the ids reported for the answer are not its words' ids (as when an
    #: answer's text tokenizes back to other tokens), so a re-sent answer shares no token.
    answer_retokenizes: bool = True


def word_id(word: str) -> int:
    """The stub tokenizer's id of one whitespace-separated word."""
    return zlib.crc32(word.encode("utf-8"))


_HEAD_SSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _plain(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(),
        ctype,
        len(body),
        body,
    )


class _StubProtocol(asyncio.Protocol):
    def __init__(self, cfg: StubConfig, counter: list[int], conns: set[_StubProtocol]) -> None:
        self.cfg = cfg
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.counter = counter
        self.conns = conns

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, path, _ = head.split("\r\n", 1)[0].split(" ", 2)
            self._handle(method, path, body)

    def _handle(self, method: str, path: str, body: bytes) -> None:
        t = self.transport
        if t is None:
            return
        reply = respond(self.cfg, method, path, body)
        if reply.stream is None:
            t.write(_plain(f"{reply.status} {reply.reason}", reply.body, reply.ctype))
            return
        self.counter[0] += 1
        piece, n, tail = reply.stream
        parts = [_chunked(piece)] * n + [_chunked(tail) + b"0\r\n\r\n"]
        if reply.first is not None and n:
            parts[0] = _chunked(reply.first)
        cfg = self.cfg
        if cfg.ttft_s <= 0 and cfg.itl_s <= 0:
            t.write(_HEAD_SSE + b"".join(parts))
            return
        t.write(_HEAD_SSE)
        loop = asyncio.get_running_loop()
        self._schedule(loop, parts, 0, cfg.ttft_s)

    def _schedule(
        self, loop: asyncio.AbstractEventLoop, parts: list[bytes], i: int, delay: float
    ) -> None:
        def fire() -> None:
            if self.transport is None:
                return
            # The usage tail goes out with the last content chunk.
            if i == len(parts) - 2:
                self.transport.write(parts[i] + parts[i + 1])
                return
            self.transport.write(parts[i])
            self._schedule(loop, parts, i + 1, self.cfg.itl_s)

        loop.call_later(delay, fire)


@dataclass(frozen=True)
class StubReply:
    """The stub's answer to one request: a whole body, or a completion stream
    (``stream`` = content event, number of content events, usage event + ``[DONE]``;
    ``first``, when set, replaces the first content event)."""

    status: int
    reason: str
    body: bytes = b""
    ctype: bytes = b"application/json"
    stream: tuple[bytes, int, bytes] | None = None
    first: bytes | None = None


def respond(cfg: StubConfig, method: str, path: str, body: bytes) -> StubReply:
    """What the stub answers to ``method path`` with ``body`` (see the module docstring)."""
    if method == "GET" and path == "/v1/models":
        entry: dict[str, object] = {"id": cfg.model, "object": "model"}
        if cfg.max_model_len is not None:
            entry["max_model_len"] = cfg.max_model_len
        return StubReply(200, "OK", json.dumps({"object": "list", "data": [entry]}).encode())
    if method == "GET" and path == "/metrics" and cfg.metrics_text is not None:
        return StubReply(200, "OK", cfg.metrics_text.encode(), b"text/plain; version=0.0.4")
    if method == "POST" and cfg.error_status is not None:
        return StubReply(cfg.error_status, "Error", cfg.error_body.encode())
    if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
        req = json.loads(body)
        chat = path.endswith("chat/completions")
        stream = _completion(cfg, req, chat=chat)
        if not req.get("return_token_ids"):
            return StubReply(200, "OK", stream=stream)
        first, piece = _with_ids(cfg, req, chat=chat)
        return StubReply(200, "OK", stream=(piece, *stream[1:]), first=first)
    return StubReply(404, "Not Found", b'{"error":{"message":"not found","code":404}}')


def _completion(cfg: StubConfig, req: dict[str, object], *, chat: bool) -> tuple[bytes, int, bytes]:
    """(content event, how many, usage event and ``[DONE]``) of one streamed completion."""
    max_tokens = int(req.get("max_tokens") or 16)  # type: ignore[call-overload]
    n = cfg.num_chunks or max_tokens
    prompt = req.get("prompt") if not chat else json.dumps(req.get("messages"))
    prompt_tokens = len(str(prompt).split())
    if chat:
        piece = b'data: {"object":"chat.completion.chunk","model":"stub","choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}\n\n'  # noqa: E501
    else:
        piece = b'data: {"object":"text_completion","model":"stub","choices":[{"index":0,"text":" tok","finish_reason":null}]}\n\n'  # noqa: E501
    usage: dict[str, object] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": max_tokens,
        "total_tokens": prompt_tokens + max_tokens,
    }
    if cfg.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cfg.cached_tokens}
    tail = (
        b'data: {"object":"text_completion","model":"stub","choices":[],"usage":'
        + json.dumps(usage, separators=(",", ":")).encode()
        + b"}\n\ndata: [DONE]\n\n"
    )
    return piece, n, tail


def _with_ids(cfg: StubConfig, req: dict[str, object], *, chat: bool) -> tuple[bytes, bytes]:
    """(first content event, every later one) with token ids (``return_token_ids``): each
    has its token's id, the first also the prompt's ids."""
    prompt = req.get("prompt") if not chat else json.dumps(req.get("messages"))
    answer_id = word_id("tok") + (0 if cfg.answer_retokenizes else 1)
    choice: dict[str, object] = {"index": 0, "finish_reason": None}
    if chat:
        choice["delta"] = {"content": " tok"}
    else:
        choice["text"] = " tok"
    choice["token_ids"] = [answer_id]
    later = json.dumps({"choices": [choice]}, separators=(",", ":")).encode()
    choice["prompt_token_ids"] = [word_id(w) for w in str(prompt).split()]
    first = json.dumps({"choices": [choice]}, separators=(",", ":")).encode()
    return b"data: " + first + b"\n\n", b"data: " + later + b"\n\n"


def stub_transport(cfg: StubConfig | None = None) -> MockTransport:
    """A :class:`~kvlab.backends.transport.MockTransport` that answers as the stub
    server does, in memory (without its delays: ``ttft_s`` and ``itl_s`` are ignored).
    A streamed answer arrives one event per read."""
    c = cfg or StubConfig()

    def handle(req: MockRequest) -> MockResponse:
        reply = respond(c, req.method, req.path, req.body)
        if reply.stream is None:
            return MockResponse(reply.status, reply.body)
        piece, n, tail = reply.stream
        chunks = [piece] * n + [tail]
        if reply.first is not None and n:
            chunks[0] = reply.first
        return MockResponse(reply.status, chunks=chunks)

    return MockTransport(handle)


class StubServer:
    """An in-process stub on ``host:port`` (port 0 picks a free one); ``num_requests``
    counts streamed requests."""

    def __init__(self, cfg: StubConfig | None = None) -> None:
        self.cfg = cfg or StubConfig()
        self._counter = [0]
        self._conns: set[_StubProtocol] = set()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def num_requests(self) -> int:
        return self._counter[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> StubServer:
        def factory() -> asyncio.Protocol:
            return _StubProtocol(self.cfg, self._counter, self._conns)

        self._server = await asyncio.get_running_loop().create_server(
            factory, host, port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open connection (as a crashed server would)."""
        if self._server is not None:
            self._server.close()
            for c in list(self._conns):
                if c.transport is not None:
                    c.transport.abort()
            await self._server.wait_closed()
            self._server = None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU core")
    ap.add_argument("--ttft", type=float, default=0.0, help="seconds to the first chunk")
    ap.add_argument("--itl", type=float, default=0.0, help="seconds between chunks")
    ap.add_argument("--chunks", type=int, default=None, help="content chunks per response")
    ap.add_argument(
        "--max-model-len", type=int, default=None, help="max_model_len to report in /v1/models"
    )
    ap.add_argument(
        "--no-uvloop", action="store_true", help="plain asyncio loop (sub-ms timer precision)"
    )
    a = ap.parse_args(argv)
    if a.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.cpu})
    cfg = StubConfig(ttft_s=a.ttft, itl_s=a.itl, num_chunks=a.chunks, max_model_len=a.max_model_len)

    async def serve() -> None:
        s = await StubServer(cfg).start(a.host, a.port)
        print(f"ready {s.url}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        has_uvloop = True
    except ImportError:
        has_uvloop = False
    if has_uvloop and not a.no_uvloop:
        uvloop.run(serve())
    else:
        asyncio.run(serve())


if __name__ == "__main__":
    main()


__all__ = ["StubConfig", "StubReply", "StubServer", "respond", "stub_transport", "word_id"]
