"""``kvlab serve llama.cpp``: the command line, bad input, and the lifecycle against a
stand-in llama-server (the real one is started by tests/live/test_llama_cpp.py)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from serve_helpers import assert_gone, kvlab, start_until_ready

FAKE_SERVER = """#!{python}
import http.server, os, subprocess, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
with open(os.environ["FAKE_ARGS"], "w") as f:
    f.write(" ".join(args))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["FAKE_CHILD_PID"], "w") as f:
    f.write(str(child.pid))
print("fake llama-server up", flush=True)

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    b = tmp_path / "bin" / "llama-server"
    b.parent.mkdir()
    b.write_text(FAKE_SERVER.format(python=sys.executable))
    b.chmod(0o755)
    return b


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF" + bytes(28))
    return g


def test_print_json_has_every_measurement_setting(fake_binary: Path, gguf: Path) -> None:
    r = kvlab(
        "serve",
        "llama.cpp",
        "--model",
        str(gguf),
        "--binary",
        str(fake_binary),
        "--port",
        "9002",
        "--slots",
        "4",
        "--ctx-per-slot",
        "256",
        "--alias",
        "m",
        "--arg",
        "--seed",
        "--arg",
        "1",
        "--print",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    cmd = out["command"]
    assert cmd[0] == str(fake_binary)
    text = " ".join(cmd)
    for flag in (
        f"--model {gguf}",
        "--alias m",
        "--port 9002",
        "--ctx-size 1024",
        "--parallel 4",
        "--no-kv-unified",
        "--metrics",
        "--slots",
        "--cache-prompt",
        "--cache-ram 0",
        "--seed 1",
    ):
        assert flag in text, flag
    assert out["url"] == "http://127.0.0.1:9002" and out["model"] == "m"
    assert out["env"] == {} and out["log"].endswith("llama-server-9002.log")


def test_print_is_one_shell_line_and_llamacpp_is_an_alias(fake_binary: Path, gguf: Path) -> None:
    r = kvlab(
        "serve",
        "llamacpp",
        "--model",
        str(gguf),
        "--binary",
        str(fake_binary),
        "--no-prompt-cache",
        "--print",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{fake_binary} --model {gguf} ")
    assert "--no-cache-prompt" in r.stdout and len(r.stdout.splitlines()) == 1


def test_binary_from_the_environment(fake_binary: Path, gguf: Path) -> None:
    r = kvlab(
        "serve",
        "llama.cpp",
        "--model",
        str(gguf),
        "--print",
        "--json",
        env={"KVLAB_LLAMA_SERVER": str(fake_binary)},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["command"][0] == str(fake_binary)


def test_missing_binary_is_one_line_naming_the_build_script(tmp_path: Path, gguf: Path) -> None:
    for extra, env in (
        (["--binary", str(tmp_path / "nope")], {}),
        ([], {"KVLAB_LLAMA_SERVER": str(tmp_path / "nope")}),
    ):
        r = kvlab("serve", "llama.cpp", "--model", str(gguf), *extra, env=env)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert f"no llama-server at {tmp_path / 'nope'}" in r.stderr
        assert "scripts/llama_cpp.sh" in r.stderr


def test_bad_model_paths_are_one_line(tmp_path: Path, fake_binary: Path) -> None:
    not_gguf = tmp_path / "m.txt"
    not_gguf.write_text("hello")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    for model, says in (
        (not_gguf, f"{not_gguf}: not a GGUF file"),
        (tmp_path / "none.gguf", f"--model {tmp_path / 'none.gguf'}: no such"),
        (empty_dir, f"{empty_dir}: not a Hugging Face model directory"),
    ):
        r = kvlab("serve", "llama.cpp", "--model", str(model), "--binary", str(fake_binary))
        assert r.returncode == 2, r.stderr
        assert says in r.stderr and "Traceback" not in r.stderr


def test_preset_from_a_plan_sets_slots_and_context(
    tmp_path: Path, fake_binary: Path, gguf: Path
) -> None:
    plan = tmp_path / "plan.json"
    r = kvlab("plan", "-m", "qwen2.5-0.5b", "--context", "4096", "--concurrency", "4", "--json")
    assert r.returncode == 0, r.stderr
    plan.write_text(r.stdout)
    base = (
        "serve",
        "llama.cpp",
        "--model",
        str(gguf),
        "--binary",
        str(fake_binary),
        "--preset",
        str(plan),
        "--print",
        "--json",
    )
    cmd = " ".join(json.loads(kvlab(*base).stdout)["command"])
    assert "--parallel 4" in cmd and f"--ctx-size {4 * 4096}" in cmd
    cmd = " ".join(json.loads(kvlab(*base, "--slots", "3").stdout)["command"])
    assert "--parallel 3" in cmd and f"--ctx-size {3 * 4096}" in cmd  # the option wins
    r = kvlab(*base, "--slots", "0")
    assert r.returncode == 2 and "--slots must be at least 1" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "m", "context_tokens": 100, "concurrency": 1.5}))
    r = kvlab(
        "serve",
        "llama.cpp",
        "--model",
        str(gguf),
        "--binary",
        str(fake_binary),
        "--preset",
        str(bad),
        "--print",
    )
    assert r.returncode == 2 and "field concurrency" in r.stderr, r.stderr


def test_bad_numbers_are_refused(fake_binary: Path, gguf: Path) -> None:
    for flag, value in (
        ("--slots", "0"),
        ("--ctx-per-slot", "-1"),
        ("--port", "70000"),
        ("--cache-ram-mib", "-5"),
    ):
        r = kvlab(
            "serve",
            "llama.cpp",
            "--model",
            str(gguf),
            "--binary",
            str(fake_binary),
            flag,
            value,
            "--print",
        )
        assert r.returncode == 2 and flag in r.stderr, (flag, r.stderr)


def test_serve_waits_for_ready_and_ctrl_c_stops_it_with_130(
    tmp_path: Path, fake_binary: Path, gguf: Path
) -> None:
    from kvlab.backends.vllm_server import free_port

    port = free_port()
    proc, lines = start_until_ready(
        "serve",
        "llama.cpp",
        "--model",
        str(gguf),
        "--binary",
        str(fake_binary),
        "--port",
        str(port),
        "--log",
        str(tmp_path / "l.log"),
        "--slots",
        "3",
        env={"FAKE_ARGS": str(tmp_path / "args"), "FAKE_CHILD_PID": str(tmp_path / "child")},
    )
    assert proc.stderr is not None
    assert lines[0].startswith(f"starting llama-server on http://127.0.0.1:{port}; log: ")
    assert str(tmp_path / "l.log") in lines[0]
    assert lines[-1].startswith("ready in") and "model tiny" in lines[-1], lines
    assert "--parallel 3" in (tmp_path / "args").read_text()
    child = int((tmp_path / "child").read_text())
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 130, rest
    assert rest.splitlines() == ["llama-server stopped (Ctrl-C)"]
    assert "fake llama-server up" in (tmp_path / "l.log").read_text()
    assert_gone(child)


def test_a_server_that_dies_before_ready_is_its_log_tail(tmp_path: Path, gguf: Path) -> None:
    from kvlab.backends.vllm_server import free_port

    b = tmp_path / "llama-server"
    b.write_text("#!/bin/sh\necho 'error: cannot load model' >&2\nexit 3\n")
    b.chmod(0o755)
    r = kvlab(
        "serve",
        "llama.cpp",
        "--model",
        str(gguf),
        "--binary",
        str(b),
        "--port",
        str(free_port()),
        "--log",
        str(tmp_path / "l.log"),
    )
    assert r.returncode == 1, r.stderr
    assert "exited with code 3" in r.stderr and "cannot load model" in r.stderr
    assert "Traceback" not in r.stderr
