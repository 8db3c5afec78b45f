"""VllmServer lifecycle against a stand-in ``vllm.entrypoints.openai.api_server`` module."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from kvlab.backends.vllm_server import VllmServer, free_port, parse_port_range
from kvlab.errors import BackendUnavailable, ConfigError

FAKE_SERVER = """
import http.server, os, subprocess, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
print("fake vllm starting with KV", os.environ.get("VLLM_CPU_KVCACHE_SPACE"), flush=True)
if os.environ.get("FAKE_MODE") == "crash":
    print("boom: cannot load model", flush=True)
    sys.exit(3)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["FAKE_CHILD_PID"], "w") as f:
    f.write(str(child.pid))

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture
def fake_vllm(tmp_path: Path) -> Path:
    pkg = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_SERVER)
    return tmp_path / "fake"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie awaiting its parent counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _server(fake: Path, tmp_path: Path, mode: str = "ok") -> VllmServer:
    return VllmServer(
        python=sys.executable,
        model_dir=tmp_path / "model",
        port=free_port(),
        log_path=tmp_path / "logs" / "server.log",
        kv_cache_space_gib=3,
        extra_args=("--max-num-seqs", "8"),
        extra_env={
            "PYTHONPATH": str(fake),
            "FAKE_MODE": mode,
            "FAKE_CHILD_PID": str(tmp_path / "child.pid"),
        },
        stop_timeout_s=5,
    )


def test_start_wait_and_stop_the_whole_group(fake_vllm: Path, tmp_path: Path) -> None:
    server = _server(fake_vllm, tmp_path)
    cmd = server.command()
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[-2:] == ["--max-num-seqs", "8"]
    assert "--enforce-eager" in cmd and cmd[cmd.index("--port") + 1] == str(server.port)
    with server.running():
        assert server.is_healthy()
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert "fake vllm starting with KV 3" in server.log_text()
        child = int((tmp_path / "child.pid").read_text())
        assert _alive(child)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "a process of the server's group survived stop()"
    assert not server.is_healthy()
    server.stop()  # idempotent


def test_a_crashing_server_fails_with_its_log_tail(fake_vllm: Path, tmp_path: Path) -> None:
    server = _server(fake_vllm, tmp_path, mode="crash").start()
    try:
        with pytest.raises(BackendUnavailable, match="exited with code 3") as e:
            server.wait_ready(timeout_s=30)
        assert "boom: cannot load model" in str(e.value)
    finally:
        server.stop()


def test_not_ready_in_time(tmp_path: Path) -> None:
    server = VllmServer(
        python=sys.executable,
        model_dir=tmp_path,
        port=free_port(),
        log_path=tmp_path / "log",
        extra_env={"PYTHONPATH": str(tmp_path)},
    )
    # No vllm module at all: python exits at once, reported with the log.
    server.start()
    try:
        with pytest.raises(BackendUnavailable, match="No module named"):
            server.wait_ready(timeout_s=30)
    finally:
        server.stop()


def test_free_port_in_a_range_skips_busy_and_excluded_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        got = free_port((port, port + 2), exclude=[port + 1])
        assert got == port + 2
    assert free_port() > 0


def test_parse_port_range() -> None:
    assert parse_port_range("18200-18299") == (18200, 18299)
    for bad in ("18200", "a-b", "5-1", "0-10"):
        with pytest.raises(ConfigError):
            parse_port_range(bad)
