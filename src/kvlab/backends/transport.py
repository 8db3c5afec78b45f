"""The live backend's HTTP transport: one small interface, a network one and an in-memory one.

:class:`kvlab.backends.openai.OpenAIBackend` and :mod:`kvlab.backends.metrics`
talk to a server only through a :class:`Transport` with two calls:

``stream(path, body, sink)``
    the streaming POST of one completion: the body bytes of a 2xx/3xx answer
    go to ``sink(data, t_ns)`` as they arrive (``t_ns`` from
    ``time.perf_counter_ns``); returns (status, error body), the error body
    empty below 400. A failure to get an answer raises (``OSError``,
    ``TimeoutError``, or the HTTP library's own exceptions), and
    :func:`kvlab.backends.failures.classify_exception` names it.
``request(method, path, body=..., timeout_s=...)``
    a request answered whole (probes, ``/metrics``, cache resets, priming):
    a :class:`Response`; raises ``OSError`` (:class:`TransportError` for the
    library's errors) or ``TimeoutError`` when no answer came.

Paths are relative to the server's base URL (``/v1/completions``).
:class:`HttpTransport` is the network one (the default); :class:`MockTransport`
answers from a function in memory, so that the layers above run in unit
tests without sockets (the idea of HTTPX's ``MockTransport``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kvlab.errors import DependencyMissing

#: Receives the body bytes of a streamed answer and their arrival time (perf_counter_ns).
Sink = Callable[[bytes, int], None]


class TransportError(OSError):
    """A request got no answer (the HTTP library's own error, kept as the cause)."""


@dataclass(frozen=True, slots=True)
class Response:
    """A whole answer: status and body bytes."""

    status: int
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Transport(Protocol):
    """How the live backend reaches a server (see the module docstring)."""

    async def stream(self, path: str, body: bytes, sink: Sink) -> tuple[int, bytes]: ...

    async def request(
        self, method: str, path: str, *, body: bytes = b"", timeout_s: float
    ) -> Response: ...

    async def aclose(self) -> None: ...


# ----------------------------------------------------------------------------- network


class HttpTransport:
    """HTTP over the network to ``base_url``.

    Streaming POSTs go through kvlab's own keep-alive client
    (:class:`kvlab.backends.http.StreamingClient`, ``stream_client="kvlab"``)
    or aiohttp's (``"aiohttp"``); whole requests through aiohttp. ``headers``
    go with every request. Timeouts: ``connect_timeout_s`` to connect,
    ``read_timeout_s`` between two reads and ``timeout_s`` for a whole
    streamed answer. Open it in the event loop that uses it; :meth:`aclose`
    closes every connection.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 300.0,
        timeout_s: float = 600.0,
        stream_client: str = "kvlab",
    ) -> None:
        if stream_client not in ("kvlab", "aiohttp"):
            raise ValueError(f"stream_client must be kvlab or aiohttp, got {stream_client!r}")
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.timeout_s = timeout_s
        self.stream_client = stream_client
        self._session: Any = None
        self._client: Any = None

    @staticmethod
    def _aiohttp() -> Any:
        try:
            import aiohttp
        except ImportError as e:
            raise DependencyMissing("aiohttp", "live") from e
        return aiohttp

    def _http(self) -> Any:
        """The aiohttp session, opened on first use (inside the running loop)."""
        if self._session is None:
            aiohttp = self._aiohttp()
            connector = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
            timeout = aiohttp.ClientTimeout(
                total=self.timeout_s,
                sock_connect=self.connect_timeout_s,
                sock_read=self.read_timeout_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                headers={"Content-Type": "application/json", **self.headers},
                auto_decompress=False,
            )
        return self._session

    async def stream(self, path: str, body: bytes, sink: Sink) -> tuple[int, bytes]:
        if self.stream_client == "aiohttp":
            return await self._aio_stream(path, body, sink)
        if self._client is None:
            from kvlab.backends.http import StreamingClient, Timeouts

            self._client = StreamingClient(
                self.base_url,
                headers=self.headers,
                timeouts=Timeouts(self.connect_timeout_s, self.read_timeout_s, self.timeout_s),
            )
        status, err = await self._client.post(path, body, sink)
        return int(status), err

    async def _aio_stream(self, path: str, body: bytes, sink: Sink) -> tuple[int, bytes]:
        perf = time.perf_counter_ns
        async with self._http().post(self.base_url + path, data=body) as resp:
            if resp.status >= 400:
                return int(resp.status), await resp.read()
            content = resp.content
            while True:
                chunk = await content.readany()
                if not chunk:
                    return int(resp.status), b""
                sink(chunk, perf())

    async def request(
        self, method: str, path: str, *, body: bytes = b"", timeout_s: float
    ) -> Response:
        aiohttp = self._aiohttp()
        try:
            async with self._http().request(
                method,
                self.base_url + path,
                data=body or None,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                return Response(int(resp.status), await resp.read())
        except aiohttp.ClientError as e:
            if isinstance(e, OSError):
                raise
            raise TransportError(f"{type(e).__name__}: {e}") from e

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None


# ----------------------------------------------------------------------------- in memory


@dataclass(frozen=True, slots=True)
class MockRequest:
    """A request as a :class:`MockTransport` handler sees it."""

    method: str
    path: str
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class MockResponse:
    """A handler's answer: ``chunks`` are the body as separate network reads (a
    streamed answer); ``body`` is used when there are none."""

    status: int = 200
    body: bytes = b""
    chunks: Sequence[bytes] = ()

    @property
    def content(self) -> bytes:
        return b"".join(self.chunks) if self.chunks else self.body


#: A MockTransport handler: the answer to a request, or awaitable answer; raising
#: stands for a transport failure (ConnectionRefusedError, TimeoutError...).
Handler = Callable[[MockRequest], "MockResponse | Awaitable[MockResponse]"]


@dataclass
class MockTransport:
    """Answers every request in memory with ``handler`` (no sockets).

    A streamed answer reaches the sink one chunk per read, each read stamped
    with the time it is handed over and followed by a yield to the event loop,
    so that concurrent requests interleave as they would on the network.
    ``requests`` lists every request received, in order.
    """

    handler: Handler
    requests: list[MockRequest] = field(default_factory=list)

    async def _answer(self, method: str, path: str, body: bytes) -> MockResponse:
        req = MockRequest(method, path, body)
        self.requests.append(req)
        got = self.handler(req)
        if inspect.isawaitable(got):
            got = await got
        assert isinstance(got, MockResponse), f"a handler returns MockResponse, not {got!r}"
        return got

    async def stream(self, path: str, body: bytes, sink: Sink) -> tuple[int, bytes]:
        resp = await self._answer("POST", path, body)
        if resp.status >= 400:
            return resp.status, resp.content
        for chunk in resp.chunks or ([resp.body] if resp.body else []):
            sink(chunk, time.perf_counter_ns())
            await asyncio.sleep(0)
        return resp.status, b""

    async def request(
        self, method: str, path: str, *, body: bytes = b"", timeout_s: float
    ) -> Response:
        resp = await self._answer(method, path, body)
        return Response(resp.status, resp.content)

    async def aclose(self) -> None:
        return None


__all__ = [
    "Handler",
    "HttpTransport",
    "MockRequest",
    "MockResponse",
    "MockTransport",
    "Response",
    "Sink",
    "Transport",
    "TransportError",
]
