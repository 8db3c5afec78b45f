"""A stub OpenAI-compatible server on its own event loop in a daemon thread, for tests
that drive kvlab (a CLI run, a subprocess) against it from the main thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from kvlab.backends.stub import StubConfig, StubServer


def serve_stub(cfg: StubConfig | None = None) -> Iterator[StubServer]:
    """Yield a started :class:`StubServer`, then stop it and its loop (use with
    ``yield from`` in a fixture, or iterate once)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, StubServer] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        box["s"] = loop.run_until_complete(StubServer(cfg or StubConfig()).start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    if not ready.wait(5):
        raise RuntimeError("the stub server did not start in 5 s")
    try:
        yield box["s"]
    finally:
        asyncio.run_coroutine_threadsafe(box["s"].stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
