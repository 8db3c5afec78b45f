"""Decisions per second of kvlab/PrefixEviction-v0 and env steps per second of
kvlab/KVPressure-v0, single process.

Usage: PYTHONPATH=src python benchmarks/rl_speed.py [--env prefix|kvpressure|all]
       [--requests N] [--steps N]

PrefixEviction-v0: plays the LRU agent (action 0) and a random agent over the shipped
Mooncake conversation trace (the first N requests, blocks of 64 tokens) at a capacity
of a tenth of its distinct blocks, and prints decisions/s; the target is >= 20,000.

KVPressure-v0: plays ``--steps`` env steps per tier (fresh seeded scenarios, resets
included) with the keep-all, random (masked) and heuristic agents, with the compact
observation in ``info`` (the default) and without, and prints env steps/s (per second
of wall time, and per second of this process's CPU time: on a shared machine the
process waits for a core, and the CPU-time figure is the one a quiet core gives) and
engine events per step; the target is >= 2,000 steps/s. The load average is printed
first: read the figures with it.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def prefix_eviction(args: argparse.Namespace) -> None:
    from kvlab.rl.prefix_eviction import PrefixEvictionEnv
    from kvlab.rl.prefix_trace import PrefixTrace
    from kvlab.workload.detect import load_workload
    from kvlab.workload.records import Workload

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


def kv_pressure(args: argparse.Namespace) -> None:
    from kvlab.rl.kv_pressure import KVPressureEnv, heuristic_action

    for compact in (True, False):
        for tier in ("easy", "medium", "hard"):
            for agent in ("keep", "random", "heuristic"):
                env = KVPressureEnv(tier, compact_info=compact)
                rng = np.random.default_rng(0)
                keep = np.zeros(env.k, dtype=np.int64)
                n = episodes = events = 0
                t0, c0 = time.perf_counter(), time.process_time()
                while n < args.steps:
                    _, info = env.reset(seed=episodes)
                    assert env.loop is not None
                    e0 = env.loop.num_events
                    episodes += 1
                    done = False
                    while not done:
                        if agent == "keep":
                            a = keep
                        elif agent == "random":
                            m = info["action_mask"]
                            a = np.array([rng.choice(np.flatnonzero(row)) for row in m])
                        else:
                            a = heuristic_action(env)
                        _, _, done, _, info = env.step(a)
                        n += 1
                    events += env.loop.num_events - e0
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                print(
                    f"KVPressure-v0 {tier:>6} {agent:>9} compact_info={compact!s:>5}: "
                    f"{n} steps, {episodes} episodes in {dt:.2f} s = {n / dt:,.0f} steps/s "
                    f"wall, {n / cpu:,.0f} steps/s of process CPU time "
                    f"({events / n:.1f} engine events per step after the warm-up)",
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--env", choices=("prefix", "kvpressure", "all"), default="all")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=3000, help="KVPressure steps per row")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    if args.env in ("prefix", "all"):
        prefix_eviction(args)
    if args.env in ("kvpressure", "all"):
        kv_pressure(args)


if __name__ == "__main__":
    main()
