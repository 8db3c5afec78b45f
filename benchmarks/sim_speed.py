"""Speed of ``kvlab simulate``, end to end (start-up and trace parsing included).

Prints, as medians over ``--repeats`` runs of the whole command in a fresh process:
simulated requests per wall-second on the shipped Azure 2023 conversation and
Mooncake conversation traces (Llama-3.1-8B on H100, prefix caching on), the
cold start (a one-request workload), and wall time and peak RSS on tiled Azure
traces of growing size (linearity).

    python benchmarks/sim_speed.py [--repeats 3] [--sizes 25000,50000,100000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "src" / "kvlab" / "data" / "traces"
MODEL, GPU = "meta-llama/Llama-3.1-8B", "h100-sxm"


def run(workload: Path | str, out: Path, *extra: str) -> tuple[float, float, dict]:
    """Wall seconds, peak RSS (MB) and summary of one ``kvlab simulate`` process."""
    cmd = [
        sys.executable,
        "-m",
        "kvlab",
        "simulate",
        str(workload),
        "--model",
        MODEL,
        "--gpu",
        GPU,
        "--out",
        str(out),
        "--json",
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, rss, json.loads(proc.stdout)


def tiled_azure(n: int, path: Path) -> Path:
    """The Azure conversation trace repeated back to back until it has n rows."""
    rows = list(csv.reader((TRACES / "azure2023_conv.csv").open()))
    head, body = rows[0], rows[1:]
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    t0 = datetime.strptime(body[0][0][:26], fmt)
    span = datetime.strptime(body[-1][0][:26], fmt) - t0 + timedelta(seconds=1)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for i in range(n):
            ts, ctx, gen = body[i % len(body)]
            t = datetime.strptime(ts[:26], fmt) + span * (i // len(body))
            w.writerow([t.strftime(fmt), ctx, gen])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="25000,50000,100000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvlab-speed-") as d:  # runs and tiled traces
        bench(args.repeats, [int(x) for x in args.sizes.split(",")], Path(d))


def bench(repeats: int, sizes: list[int], tmp: Path) -> None:
    """Print the figures, writing runs and generated traces under ``tmp``."""
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {repeats}")
    # byte-compile kvlab first, as installing a package does: with PYTHONDONTWRITEBYTECODE
    # set (or a read-only tree) every run would otherwise compile the modules it imports
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "kvlab")],
        check=True,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE=""),
    )
    for name in ("azure2023_conv.csv", "mooncake_conversation.jsonl"):
        walls, sims = [], []
        for _ in range(repeats):
            wall, _, s = run(TRACES / name, tmp / "run")
            walls.append(wall)
            sims.append(s["wall_s"])
        n = s["num_requests"]
        w = statistics.median(walls)
        print(
            f"{name}: {n:,} requests, {w:.2f} s end to end -> {n / w:,.0f} req/s "
            f"(engine alone {statistics.median(sims):.2f} s); hit rate "
            f"{s['prefix_cache_hit_rate']:.3f}, {s['num_evicted_blocks']:,} evictions"
        )
    one = tmp / "one.csv"
    one.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n")
    cold = statistics.median(run(one, tmp / "run")[0] for _ in range(repeats))
    print(f"cold start (one-request workload, whole command): {cold:.2f} s")
    for n in sizes:
        path = tiled_azure(n, tmp / f"azure_{n}.csv")
        cmd = [
            sys.executable,
            "-c",
            "import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True,"
            " stdout=subprocess.DEVNULL);"
            " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
            sys.executable,
            "-m",
            "kvlab",
            "simulate",
            str(path),
            "--model",
            MODEL,
            "--gpu",
            GPU,
            "--out",
            str(tmp / "run"),
            "--quiet",
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        wall = time.perf_counter() - t0
        rss_mb = int(out.stdout.strip()) / 1024
        print(
            f"tiled azure {n:,} requests: {wall:.2f} s, {n / wall:,.0f} req/s, "
            f"peak RSS {rss_mb:,.0f} MB"
        )


if __name__ == "__main__":
    main()
