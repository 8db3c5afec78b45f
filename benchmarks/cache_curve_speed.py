"""Speed of ``kvlab cache-curve`` on the shipped Mooncake traces.

Prints, per trace and block size, the median over repeats of: the trace parse
time, the time of a one-capacity curve (the cost of one point asked alone),
and the time of a 12-point curve divided by 12 (seconds per point when many
are asked: one pass serves all of them).

    .venv/bin/python benchmarks/cache_curve_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from kvlab.sim.cache_curve import auto_capacities, cache_curve
from kvlab.workload.detect import builtin_trace, load_workload

TRACES = ("mooncake-conversation", "mooncake-synthetic")
BLOCK_SIZES = (16, 512)


def _median_s(repeats: int, fn: Callable[..., object], *args: object) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    head = ("trace", "B", "requests", "parse s", "1 point s", "s/point (12)")
    print(f"{head[0]:24} {head[1]:>4} {head[2]:>9} {head[3]:>8} {head[4]:>10} {head[5]:>13}")
    for name in TRACES:
        path = builtin_trace(name)
        parse_s = _median_s(args.repeats, load_workload, path)
        reqs = load_workload(path).requests
        for bs in BLOCK_SIZES:
            distinct = cache_curve(reqs, bs, [0]).infinite.capacity_blocks
            caps = auto_capacities(distinct, 12)
            one_s = _median_s(args.repeats, cache_curve, reqs, bs, [distinct // 10])
            many_s = _median_s(args.repeats, cache_curve, reqs, bs, caps)
            print(
                f"{name:24} {bs:>4} {len(reqs):>9,} {parse_s:>8.3f} {one_s:>10.3f} "
                f"{many_s / len(caps):>13.3f}"
            )


if __name__ == "__main__":
    main()
