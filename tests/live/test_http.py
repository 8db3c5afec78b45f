"""kvlab's streaming HTTP/1.1 client: framing under any split, keep-alive, errors."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.backends.http import Disconnected, Origin, ProtocolError, StreamingClient, Timeouts
from kvlab.backends.http import _Conn as Conn

BODY = b"data: one\n\ndata: two\n\n" * 3


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = [], 0
    for n in itertools.cycle(sizes or [len(body)]):
        if i >= len(body):
            break
        piece = body[i : i + max(1, n)]
        out.append(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
        i += len(piece)
    return b"".join(out) + b"0\r\nX-Trailer: 1\r\n\r\n"


RESPONSES = {
    "chunked": lambda sizes: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY, sizes)
    ),
    "length": lambda _s: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "continue": lambda sizes: (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        + b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n"
        + chunked(BODY, sizes)
    ),
}


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def feed(raw: bytes, cuts: list[int]) -> tuple[int, bytes, bool]:
    async def main() -> tuple[int, bytes, bool]:
        conn = Conn()
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        got: list[bytes] = []
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        conn.start(b"POST / HTTP/1.1\r\n\r\n", lambda d, _t: got.append(d), done)
        points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
        for a, b in itertools.pairwise(points):
            conn.data_received(raw[a:b])
        if not done.done():
            conn.connection_lost(None)
        return await done, b"".join(got), conn.keep_alive

    return asyncio.run(main())


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(sorted(RESPONSES)),
    sizes=st.lists(st.integers(1, 40), max_size=4),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
)
def test_any_split_decodes_the_same_body(kind: str, sizes: list[int], cuts: list[int]) -> None:
    status, body, keep = feed(RESPONSES[kind](sizes), cuts)
    assert (status, body, keep) == (200, BODY, True)


def test_body_until_close_and_connection_close() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + BODY
    assert feed(raw, [30, 60]) == (200, BODY, False)
    raw2 = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    assert feed(raw2, []) == (200, b"ok", False)


def test_no_content_ends_without_a_body() -> None:
    assert feed(b"HTTP/1.1 204 No Content\r\n\r\n", []) == (204, b"", True)


def test_error_status_body_is_kept_aside() -> None:
    async def main() -> tuple[int, bytes, list[bytes]]:
        conn = Conn()
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        got: list[bytes] = []
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        conn.start(b"x", lambda d, _t: got.append(d), done)
        conn.data_received(b'HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\n{"e":1}')
        return await done, bytes(conn.error_body), got

    assert asyncio.run(main()) == (400, b'{"e":1}', [])


def test_cut_response_raises_disconnected_and_garbage_raises_protocol_error() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
    with pytest.raises(Disconnected):
        feed(raw, [])
    with pytest.raises(ProtocolError):
        feed(b"SSH-2.0-OpenSSH\r\n\r\n", [])
    with pytest.raises(ProtocolError):
        feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", [])


def test_origin_parsing() -> None:
    assert Origin.parse("http://127.0.0.1:8000/v1") == Origin(
        "127.0.0.1", 8000, False, "127.0.0.1:8000"
    )
    assert Origin.parse("https://api.example.com") == Origin(
        "api.example.com", 443, True, "api.example.com"
    )


def test_keep_alive_reuse_and_stale_connection_retry() -> None:
    """The pool reuses a connection; when the server drops an idle one, the next
    request is retried on a fresh connection instead of failing."""
    conns: list[asyncio.StreamWriter] = []
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        conns.append(writer)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            served += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def main() -> list[bytes]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = StreamingClient(
            f"http://127.0.0.1:{port}", headers={"X-A": "1"}, timeouts=Timeouts(1, 1, 2)
        )
        out: list[bytes] = []
        await client.post("/p", b"{}", lambda d, _t: out.append(d))
        await client.post("/p", b"{}", lambda d, _t: out.append(d))
        assert len(conns) == 1  # reused
        conns[0].close()  # the server drops the idle keep-alive connection
        await asyncio.sleep(0.05)
        await client.post("/p", b"{}", lambda d, _t: out.append(d))
        assert len(conns) == 2
        client.close()
        server.close()
        for w in conns:
            w.close()
        return out

    assert asyncio.run(main()) == [b"ok", b"ok", b"ok"]
    assert served == 3


def test_read_timeout() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await asyncio.sleep(2)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = StreamingClient(
            f"http://127.0.0.1:{port}", headers={}, timeouts=Timeouts(1, 0.2, 5)
        )
        try:
            await client.post("/p", b"", lambda d, _t: None)
        finally:
            server.close()

    with pytest.raises(TimeoutError, match="nothing received"):
        asyncio.run(main())
