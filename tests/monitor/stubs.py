"""Local HTTP stubs serving recorded /metrics text, and edits of that text."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

FIX = Path(__file__).parent.parent / "live" / "fixtures"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def bump(text: str, name: str, by: float) -> str:
    """``text`` with every sample called ``name`` increased by ``by``."""
    out = []
    for line in text.splitlines():
        head = re.split(r"[{ ]", line, maxsplit=1)[0]
        if head == name and not line.startswith("#"):
            body, _, value = line.rpartition(" ")
            line = f"{body} {float(value) + by}"
        out.append(line)
    return "\n".join(out) + "\n"


def set_value(text: str, name: str, value: float) -> str:
    out = []
    for line in text.splitlines():
        head = re.split(r"[{ ]", line, maxsplit=1)[0]
        if head == name and not line.startswith("#"):
            body, _, _ = line.rpartition(" ")
            line = f"{body} {value}"
        out.append(line)
    return "\n".join(out) + "\n"


def observe(text: str, hist: str, value: float, n: int = 1) -> str:
    """``text`` with ``n`` more observations of ``value`` in histogram ``hist``."""
    out = []
    for line in text.splitlines():
        if line.startswith(f"{hist}_bucket"):
            le = re.search(r'le="([^"]+)"', line)
            assert le is not None
            body, _, v = line.rpartition(" ")
            if value <= float(le.group(1)):
                line = f"{body} {float(v) + n}"
        elif line.startswith(f"{hist}_count"):
            body, _, v = line.rpartition(" ")
            line = f"{body} {float(v) + n}"
        out.append(line)
    return "\n".join(out) + "\n"


class MetricsStub:
    """An HTTP server answering GET /metrics with ``self.body`` (status ``self.status``).

    :meth:`stop` takes it down (connections refused); :meth:`start` brings it back
    on the same port."""

    def __init__(self, body: str, port: int = 0, content_type: str = "text/plain") -> None:
        self.body = body
        self.status = 200
        self.content_type = content_type
        self.port = port
        self._srv: http.server.ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        stub = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = stub.body.encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", stub.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        srv.daemon_threads = True
        self.port = srv.server_address[1]
        self._srv = srv
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"
