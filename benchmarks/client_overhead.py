"""How much the kvlab live client costs: throughput, streams in flight, added TTFT, CPU.

A stub streaming server (kvlab.backends.stub) runs in its own process pinned to
core 0; the kvlab client runs in this process pinned to core 1. Every response
has 16 content chunks. Figures printed:

1. requests/s at 256 concurrent streams with no server delay, with kvlab's own HTTP
   client and with aiohttp's (and how busy the stub was: near 100% means the figure is
   the stub's limit, not the client's);
2. streams actually in flight at 256 with 50 ms to first token and 10 ms between chunks;
3. TTFT at concurrency 1 with no server delay (the full round trip), and over the stub's
   50 ms at concurrency 1 and 256 (p50);
4. client CPU per request;
5. client CPU while every stream waits 1 s on the server (busy-spinning check);
6. start-up: wall time of ``kvlab replay`` for one request, process start to exit.

Run: PYTHONPATH=src python benchmarks/client_overhead.py [--quick] [--port 18110]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.workload.records import Request, Segment, Workload

CHUNKS = 16


def workload(n: int, prompt_tokens: int = 32) -> Workload:
    reqs = tuple(
        Request(f"r{i}", (Segment("user", prompt_tokens, f"c{i % 64}"),), CHUNKS, arrival_s=0.0)
        for i in range(n)
    )
    return Workload(reqs, name=f"bench-{n}")


def start_stub(port: int, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    cmd = [sys.executable, "-m", "kvlab.backends.stub", "--port", str(port), "--cpu", "0"]
    p = subprocess.Popen(
        [*cmd, "--chunks", str(CHUNKS), *args], stdout=subprocess.PIPE, text=True, env=env
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("ready"):
        p.kill()
        raise RuntimeError(f"stub did not start: {line!r}")
    return p


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, n: int, concurrency: int, client: str = "kvlab") -> dict[str, float]:
    cfg = OpenAIConfig(
        endpoint=url,
        model="stub",
        mode="closed",
        concurrency=concurrency,
        metrics_interval_s=0,
        http_client=client,
    )
    res = OpenAIBackend(cfg).run(workload(n))
    s = res.summary
    assert s["num_completed"] == n, s["errors_by_kind"]
    return {
        "req_per_s": n / res.wall_s,
        "in_flight": s["achieved_concurrency_mean"],
        "ttft_p50_s": s["ttft_s"]["p50"],
        "cpu_ms_per_req": s["client_cpu_per_request_ms"],
        "cpu_fraction": s["client_cpu_fraction"],
        "saturated": s["client_saturated"],
        "wall_s": res.wall_s,
    }


def startup_s(url: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        wl = Path(d) / "one.jsonl"
        req = {
            "id": "a",
            "arrival_s": 0,
            "segments": [{"kind": "user", "tokens": 8, "content": "x"}],
        }
        wl.write_text(json.dumps({**req, "output_tokens": CHUNKS}) + "\n")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        cmd = [sys.executable, "-m", "kvlab", "replay", str(wl), "--endpoint", url]
        cmd += ["--model", "stub", "--out", str(Path(d) / "out"), "--json"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=18110)
    ap.add_argument("--quick", action="store_true", help="fewer requests")
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    scale = 1 if a.quick else 4
    fast = start_stub(a.port)
    slow = start_stub(a.port + 1, "--ttft", "0.05", "--itl", "0.01", "--no-uvloop")
    idle = start_stub(a.port + 2, "--ttft", "1.0", "--no-uvloop")
    try:
        fast_url, slow_url = f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{a.port + 1}"
        run(fast_url, 2000, 256)  # warm-up
        for client in ("kvlab", "aiohttp"):
            c0 = proc_cpu_s(fast.pid)
            t = run(fast_url, 10000 * scale, 256, client)
            stub_frac = (proc_cpu_s(fast.pid) - c0) / t["wall_s"]
            print(
                f"throughput, 256 streams, no server delay, {client} HTTP client: "
                f"{t['req_per_s']:,.0f} requests/s (client CPU {t['cpu_ms_per_req']:.3f} "
                f"ms/request, client saturated={t['saturated']}, stub busy {100 * stub_frac:.0f}%)"
            )
        s256 = run(slow_url, 256 * 4 * scale, 256)
        print(f"in flight, 256 streams, 50 ms TTFT + 10 ms ITL: {s256['in_flight']:.1f} of 256")
        rt = run(fast_url, 500 * scale, 1)
        s1 = run(slow_url, 40 * scale, 1)
        print("TTFT added, p50 (upper bounds: they include the stub's own time):")
        print(
            f"  concurrency 1, no server delay (full round trip): {1e3 * rt['ttft_p50_s']:.3f} ms"
        )
        print(f"  concurrency 1, over the stub's 50 ms: {1e3 * (s1['ttft_p50_s'] - 0.05):.3f} ms")
        print(
            f"  concurrency 256, over the stub's 50 ms: {1e3 * (s256['ttft_p50_s'] - 0.05):.3f} ms"
        )
        print(f"client CPU per request at 256 streams with delays: {s256['cpu_ms_per_req']:.3f} ms")
        w = run(f"http://127.0.0.1:{a.port + 2}", 8, 4)
        print(
            f"client CPU while waiting 1 s on the server: {100 * w['cpu_fraction']:.2f}% of a core"
        )
        print(
            f"start-up, kvlab replay of one request (process start to exit): "
            f"{startup_s(fast_url):.2f} s"
        )
    finally:
        for p in (fast, slow, idle):
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
