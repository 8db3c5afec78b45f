"""Speed of ``kvlab cache-curve`` on the shipped Mooncake traces.

Two parts:

1. In process, per trace and block size, the median over repeats of: the
   trace parse time, the time of a one-capacity curve (the cost of one point
   asked alone), and the time of a 12-point curve divided by 12 (seconds per
   point when many are asked: one pass serves all of them).
2. Whole processes: ``kvlab cache-curve`` on the Mooncake conversation trace
   at block size 512 for nine capacities, against a plain script that replays
   the same nine capacities block by block with an ``OrderedDict`` LRU (Python
   start-up, imports and parsing included in both). The two commands run
   interleaved; the script prints their median wall and CPU seconds and the
   ratio kvlab / plain, after checking that both find the same hits.

    python benchmarks/cache_curve_speed.py [--repeats 3] [--process-repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kvlab.sim.cache_curve import auto_capacities, cache_curve
from kvlab.workload.detect import builtin_trace, load_workload

REPO = Path(__file__).resolve().parents[1]
TRACES = ("mooncake-conversation", "mooncake-synthetic")
BLOCK_SIZES = (16, 512)

#: The baseline: one pass per capacity, one OrderedDict entry per block (a Mooncake
#: hash id is one 512-token block), the semantics of kvlab.sim.cache_curve (arrival
#: order, the last prompt token never hits, blocks touched tail first).
PLAIN_LRU = """
import json, sys
from collections import OrderedDict
path, bs, caps = sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3].split(",")]
reqs = []
with open(path) as f:
    for line in f:
        if line.strip():
            d = json.loads(line)
            reqs.append((d["timestamp"], d["input_length"], d["hash_ids"]))
reqs.sort(key=lambda r: r[0])
for cap in caps:
    cache = OrderedDict()
    hits = 0
    for _, n, ids in reqs:
        full = ids[: n // bs]
        nh = (n - 1) // bs
        h = 0
        while h < nh and full[h] in cache:
            h += 1
        hits += h
        for k in reversed(full):
            if k in cache:
                cache.move_to_end(k)
            else:
                cache[k] = None
                if len(cache) > cap:
                    cache.popitem(last=False)
    print(cap, hits)
"""


def _median_s(repeats: int, fn: Callable[..., object], *args: object) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def in_process(repeats: int) -> None:
    head = ("trace", "B", "requests", "parse s", "1 point s", "s/point (12)")
    print(f"{head[0]:24} {head[1]:>4} {head[2]:>9} {head[3]:>8} {head[4]:>10} {head[5]:>13}")
    for name in TRACES:
        path = builtin_trace(name)
        parse_s = _median_s(repeats, load_workload, path)
        reqs = load_workload(path).requests
        for bs in BLOCK_SIZES:
            distinct = cache_curve(reqs, bs, [0]).infinite.capacity_blocks
            caps = auto_capacities(distinct, 12)
            one_s = _median_s(repeats, cache_curve, reqs, bs, [distinct // 10])
            many_s = _median_s(repeats, cache_curve, reqs, bs, caps)
            print(
                f"{name:24} {bs:>4} {len(reqs):>9,} {parse_s:>8.3f} {one_s:>10.3f} "
                f"{many_s / len(caps):>13.3f}"
            )


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system) of one process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, proc.stdout


def whole_process(repeats: int) -> None:
    trace, bs = builtin_trace("mooncake-conversation"), 512
    distinct = cache_curve(load_workload(trace).requests, bs, [0]).infinite.capacity_blocks
    caps = ",".join(map(str, auto_capacities(distinct, 9)))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    kvlab = [sys.executable, "-m", "kvlab", "cache-curve", str(trace), "-b", str(bs), "-c", caps]
    plain = [sys.executable, "-c", PLAIN_LRU, str(trace), str(bs), caps]
    # the same hits, or the comparison means nothing
    curve = json.loads(_timed([*kvlab, "--json"], env)[2])
    ours = [f"{p['capacity_blocks']} {p['hit_blocks']}" for p in curve["points"]]
    assert _timed(plain, env)[2].split("\n")[:-1] == ours, "kvlab and the plain LRU differ"
    runs: dict[str, list[tuple[float, float]]] = {"kvlab": [], "plain": []}
    for _ in range(repeats):
        for name, cmd in (("kvlab", kvlab), ("plain", plain)):
            wall, cpu, _out = _timed(cmd, env)
            runs[name].append((wall, cpu))
    med = {
        name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
        for name, r in runs.items()
    }
    print(f"\nwhole process, mooncake-conversation, B = {bs}, capacities {caps}")
    print(f"{'command':28} {'wall s':>8} {'cpu s':>8}")
    print(f"{'kvlab cache-curve':28} {med['kvlab'][0]:>8.3f} {med['kvlab'][1]:>8.3f}")
    print(f"{'plain OrderedDict LRU':28} {med['plain'][0]:>8.3f} {med['plain'][1]:>8.3f}")
    print(
        f"kvlab / plain: {med['kvlab'][0] / med['plain'][0]:.2f} (wall), "
        f"{med['kvlab'][1] / med['plain'][1]:.2f} (cpu); medians of {repeats}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="in-process repeats")
    ap.add_argument("--process-repeats", type=int, default=7, help="whole-process repeats")
    args = ap.parse_args()
    # byte-compile kvlab first, as installing a package does: with PYTHONDONTWRITEBYTECODE
    # set (or a read-only tree) every process would otherwise compile the modules it imports
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "kvlab")], check=True
    )
    in_process(args.repeats)
    whole_process(args.process_repeats)


if __name__ == "__main__":
    main()
