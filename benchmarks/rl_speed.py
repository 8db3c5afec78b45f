"""Decisions per second of kvlab/PrefixEviction-v0, single process.

Usage: PYTHONPATH=src python benchmarks/rl_speed.py [--requests N]

Plays the LRU agent (action 0) and a random agent over the shipped Mooncake
conversation trace (the first N requests, blocks of 64 tokens) at a capacity of
a tenth of its distinct blocks, and prints decisions/s; the target is >= 20,000.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from kvlab.rl.prefix_eviction import PrefixEvictionEnv
    from kvlab.rl.prefix_trace import PrefixTrace
    from kvlab.workload.detect import load_workload
    from kvlab.workload.records import Workload

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    w = load_workload("mooncake-conversation")
    w = Workload(w.requests[: args.requests], name=w.name)
    t0 = time.perf_counter()
    trace = PrefixTrace(w, 64)
    print(
        f"trace: {trace.num_requests} requests, {len(trace.keys)} block accesses, "
        f"{trace.num_keys} distinct blocks, made in {time.perf_counter() - t0:.2f} s"
    )
    cap = max(1, trace.num_keys // 10)
    rng = np.random.default_rng(0)
    for agent in ("lru", "random"):
        env = PrefixEvictionEnv(trace, cap, k=8)
        _, info = env.reset(seed=0)
        n, done = 0, info["decisions"] == 0
        t0 = time.perf_counter()
        while not done:
            a = 0 if agent == "lru" else int(rng.integers(8))
            _, _, done, _, info = env.step(a)
            n += 1
        dt = time.perf_counter() - t0
        print(
            f"PrefixEviction-v0 {agent:>6}: {n} decisions in {dt:.2f} s = "
            f"{n / dt:,.0f} decisions/s (capacity {cap} blocks, hit tokens {info['hit_tokens']})"
        )


if __name__ == "__main__":
    main()
