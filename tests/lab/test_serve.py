"""``kvlab serve vllm`` against a stand-in vLLM module, and once against the real CPU build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serve_helpers import REPO, assert_gone, kvlab, start_until_ready

FAKE_SERVER = """
import http.server, os, subprocess, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
with open(os.environ["FAKE_ARGS"], "w") as f:
    f.write(" ".join(args) + "\\n" + os.environ.get("VLLM_CPU_KVCACHE_SPACE", "-"))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["FAKE_CHILD_PID"], "w") as f:
    f.write(str(child.pid))
print("fake vllm up", flush=True)

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_print_shows_every_measurement_setting() -> None:
    r = kvlab(
        "serve",
        "vllm",
        "--model",
        "m",
        "--device",
        "cpu",
        "--python",
        "py",
        "--port",
        "9001",
        "--served-model-name",
        "tiny",
        "--no-prefix-caching",
        "--block-size",
        "128",
        "--num-blocks",
        "4",
        "--max-num-seqs",
        "8",
        "--max-num-batched-tokens",
        "512",
        "--kv-gib",
        "2",
        "--print",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    cmd = out["command"]
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    text = " ".join(cmd)
    for flag in (
        "--served-model-name tiny",
        "--port 9001",
        "--no-enable-prefix-caching",
        "--enable-prompt-tokens-details",
        "--block-size 128",
        "--num-gpu-blocks-override 4",
        "--max-num-seqs 8",
        "--max-num-batched-tokens 512",
    ):
        assert flag in text
    assert out["env"]["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert "--disable-log-stats" not in text  # /metrics stays on


def test_preset_from_a_plan_result(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    r = kvlab(
        "plan",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "h100",
        "--context",
        "8192",
        "--kv-dtype",
        "fp8",
        "--tp",
        "2",
        "--json",
    )
    plan.write_text(r.stdout)
    r = kvlab(
        "serve", "vllm", "--preset", str(plan), "--device", "gpu", "--kv-gib", "20", "--print"
    )
    assert r.returncode == 0, r.stderr
    for flag in (
        "--model meta-llama/Llama-3.1-8B",
        "--max-model-len 8192",
        "--kv-cache-dtype fp8",
        "--tensor-parallel-size 2",
        "--block-size 16",
        f"--kv-cache-memory-bytes {20 * 2**30}",
    ):
        assert flag in r.stdout
    assert "VLLM_CPU_KVCACHE_SPACE" not in r.stdout and "--enforce-eager" not in r.stdout
    plan.write_text('{"model": "x"}')
    r = kvlab("serve", "vllm", "--preset", str(plan), "--print")
    assert r.returncode == 2 and "not a `kvlab plan --json` result" in r.stderr
    assert "Traceback" not in r.stderr


def test_serve_waits_for_ready_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    from kvlab.backends.vllm_server import free_port

    fake = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    fake.mkdir(parents=True)
    for d in (fake, fake.parent, fake.parent.parent):
        (d / "__init__.py").write_text("")
    (fake / "api_server.py").write_text(FAKE_SERVER)
    py = tmp_path / "python"
    py.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "fake"} exec {sys.executable} "$@"\n')
    py.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    port = free_port()
    proc, lines = start_until_ready(
        "serve",
        "vllm",
        "--model",
        str(model),
        "--python",
        str(py),
        "--device",
        "cpu",
        "--port",
        str(port),
        "--log",
        str(tmp_path / "v.log"),
        "--max-num-seqs",
        "8",
        env={"FAKE_ARGS": str(tmp_path / "args"), "FAKE_CHILD_PID": str(tmp_path / "child")},
    )
    assert proc.stderr is not None
    assert lines[0].startswith(f"starting vLLM on http://127.0.0.1:{port}; log: ")
    assert lines[-1].startswith("ready in") and "model tiny" in lines[-1], lines
    assert "--max-num-seqs 8" in (tmp_path / "args").read_text()
    child = int((tmp_path / "child").read_text())
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, rest
    assert rest.splitlines()[-1] == "vLLM stopped"
    assert "fake vllm up" in (tmp_path / "v.log").read_text()
    assert_gone(child)


@pytest.mark.live
def test_serve_starts_the_real_cpu_build(tmp_path: Path, vllm_python: str) -> None:
    """The real vLLM CPU build through ``kvlab serve vllm``: ready, per-request cached
    tokens on (a repeated prompt reports its hit), /metrics on, Ctrl-C stops it."""
    import urllib.request

    from kvlab.backends.tiny_model import write_tiny_model
    from kvlab.backends.vllm_server import free_port

    model = write_tiny_model(tmp_path / "tiny")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvlab",
            "serve",
            "vllm",
            "--model",
            str(model),
            "--python",
            vllm_python,
            "--device",
            "cpu",
            "--port",
            str(port),
            "--log",
            str(tmp_path / "v.log"),
            "--max-num-seqs",
            "4",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert proc.stderr is not None
    try:
        line = ""
        while not line.startswith("ready"):
            line = proc.stderr.readline()
            assert line, (tmp_path / "v.log").read_text()[-3000:]
        words = " ".join(["the of and to in is it you that he was for on are with as"] * 12)
        body = json.dumps({"model": "tiny", "prompt": words, "max_tokens": 2}).encode()
        cached = []
        for _ in range(2):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=120) as resp:
                usage = json.loads(resp.read())["usage"]
            cached.append(usage["prompt_tokens_details"]["cached_tokens"])
        assert cached[0] == 0 and cached[1] == 128  # one full CPU block of 128 tokens
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            assert "vllm:prefix_cache_hits_total" in resp.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, rest
    assert rest.splitlines()[-1] == "vLLM stopped"


def test_the_live_fixtures_pressure_server_keeps_its_flags() -> None:
    """The live tier's pressure server, built from VllmServer fields, has the command
    line it had when the fixtures passed the flags by hand."""
    import importlib.util

    from kvlab.backends.vllm_server import VllmServer

    spec = importlib.util.spec_from_file_location(
        "live_conftest", REPO / "tests" / "live" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    s = VllmServer(python="py", model_dir="m", port=1, log_path="l", **mod.PRESSURE)
    assert s.command()[-6:] == [
        "--dtype",
        "bfloat16",
        "--num-gpu-blocks-override",
        "4",
        "--max-num-seqs",
        "8",
    ]


def test_bad_interpreter_and_busy_port_are_one_line(tmp_path: Path) -> None:
    import socket

    from kvlab.backends.vllm_server import free_port

    model = tmp_path / "model"
    model.mkdir()
    a_file = tmp_path / "weights.bin"
    a_file.touch()
    for bad, why in (
        (model, "not a Hugging Face model directory (no config.json)"),
        (a_file, "a file; give a model directory"),
    ):
        r = kvlab("serve", "vllm", "--model", str(bad), "--print")
        assert r.returncode == 2 and f"--model {bad}: {why}" in r.stderr, r.stderr
    (model / "config.json").write_text("{}")
    r = kvlab(
        "serve",
        "vllm",
        "--model",
        str(model),
        "--python",
        str(tmp_path / "nope"),
        "--device",
        "cpu",
        "--port",
        str(free_port()),
        "--log",
        str(tmp_path / "v.log"),
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cannot run the vLLM interpreter {tmp_path / 'nope'}" in r.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = kvlab(
            "serve",
            "vllm",
            "--model",
            str(model),
            "--python",
            sys.executable,
            "--device",
            "cpu",
            "--port",
            str(busy),
        )
    assert r.returncode == 2 and f"--port {busy}: cannot listen" in r.stderr
    assert "Traceback" not in r.stderr
