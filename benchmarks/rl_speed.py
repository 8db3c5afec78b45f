"""Decisions per second of kvlab/PrefixEviction-v0 and env steps per second of
kvlab/KVPressure-v0, single process and in vector envs.

Usage: PYTHONPATH=src python benchmarks/rl_speed.py [--env prefix|kvpressure|vector|all]
       [--requests N] [--steps N] [--repeats N] [--vector-tier T] [--start-method M]

PrefixEviction-v0: plays the LRU agent (action 0) and a random agent over the shipped
Mooncake conversation trace (the first N requests, blocks of 64 tokens) at a capacity
of a tenth of its distinct blocks, and prints decisions/s; the target is >= 20,000.

KVPressure-v0: per tier, first one row of the keep agent with the process's scenario
cache empty (a short run's first episodes: each scenario is made when a reset first
draws it), then the tier's scenario set made and prepared (timed, once per process),
then ``--steps`` env steps per row (whole episodes on reset seeds 0, 1, ..., resets
included) with the keep-all, random (masked) and heuristic agents, with the compact
observation in ``info`` (the default) and without; each row is the median of
``--repeats`` runs, in env steps/s of wall time and of this process's CPU time (on a
shared machine the process waits for a core: the CPU-time figure is the one a quiet
core gives), with engine events per step and the load average after the row. The
target is >= 2,000 steps/s.

Vector envs (``--env vector``): one env, 2 envs in gymnasium's SyncVectorEnv and 2 in
its AsyncVectorEnv (a subprocess each, started by ``--start-method``, forkserver or
spawn: never a plain fork of this process), the keep agent on ``--vector-tier``, and
the ratio to one env. On a machine with 2 shared cores, read it with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

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


def masked_random(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Per slot (row of ``mask``), one of its allowed actions, uniformly, in one draw
    for all slots."""
    allowed = mask.cumsum(axis=1)
    pick = (rng.random(len(mask)) * allowed[:, -1]).astype(np.int64)
    return (allowed <= pick[:, None]).sum(axis=1)


def play_rows(env: Any, agent: str, steps: int) -> tuple[int, int, int, float, float]:
    """Play ``steps`` env steps (whole episodes, reset seeds 0, 1, ...) with ``agent``;
    (steps, episodes, engine events after the warm-ups, wall s, process CPU s)."""
    from kvlab.rl.kv_pressure import heuristic_action

    rng = np.random.default_rng(0)
    keep = np.zeros(env.k, dtype=np.int64)
    n = episodes = events = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while n < steps:
        _, info = env.reset(seed=episodes)
        e0 = env.loop.num_events
        episodes += 1
        done = False
        while not done:
            if agent == "keep":
                a = keep
            elif agent == "random":
                a = masked_random(rng, info["action_mask"])
            else:
                a = heuristic_action(env)
            _, _, done, _, info = env.step(a)
            n += 1
        events += env.loop.num_events - e0
    return n, episodes, events, time.perf_counter() - t0, time.process_time() - c0


def kv_pressure(args: argparse.Namespace) -> None:
    from kvlab.rl import pressure_scenario
    from kvlab.rl.kv_pressure import KVPressureEnv

    reps = args.repeats
    print(
        f"KVPressure-v0: {args.steps} steps per row, median of {reps} repeats; steps/s of "
        "wall time and of this process's CPU time"
    )
    for tier in ("easy", "medium", "hard"):
        # a short run's first episodes: each scenario made at the first reset drawing it
        pressure_scenario.clear_cache()
        n, episodes, events, dt, cpu = play_rows(KVPressureEnv(tier), "keep", args.steps)
        print(
            f"KVPressure-v0 {tier:>6}      keep compact_info= True, scenario cache empty at "
            f"the start ({pressure_scenario.cache_info()} scenarios made in the row): "
            f"{n / dt:,.0f} steps/s wall, {n / cpu:,.0f} CPU",
            flush=True,
        )
        pressure_scenario.clear_cache()
        t0 = time.perf_counter()
        made = KVPressureEnv(tier).prepare_scenarios()
        print(
            f"KVPressure-v0 {tier:>6}: the set of {made} scenarios made and prepared in "
            f"{time.perf_counter() - t0:.2f} s (once per process and tier)",
            flush=True,
        )
        for compact in (True, False):
            for agent in ("keep", "random", "heuristic"):
                env = KVPressureEnv(tier, compact_info=compact)
                walls, cpus = [], []
                for _ in range(reps):
                    n, episodes, events, dt, cpu = play_rows(env, agent, args.steps)
                    walls.append(n / dt)
                    cpus.append(n / cpu)
                load = os.getloadavg()[0]
                print(
                    f"KVPressure-v0 {tier:>6} {agent:>9} compact_info={compact!s:>5}: "
                    f"{n} steps, {episodes} episodes: {statistics.median(walls):,.0f} "
                    f"steps/s wall, {statistics.median(cpus):,.0f} steps/s of process CPU "
                    f"time ({events / n:.1f} engine events per step after the warm-up; "
                    f"load {load:.2f})",
                    flush=True,
                )


def vector_envs(args: argparse.Namespace) -> None:
    """Env steps/s of one env, of 2 envs in a SyncVectorEnv (one process) and of 2 in
    an AsyncVectorEnv (one subprocess each, started by ``--start-method``): the keep
    agent, ``compact_info=False``, each env's scenario set made first (not timed)."""
    import gymnasium as gym

    from kvlab.rl.kv_pressure import KVPressureEnv

    tier, num, steps = args.vector_tier, 2, args.steps

    def make() -> Any:
        return KVPressureEnv(tier, compact_info=False)

    rows: dict[str, list[tuple[float, float]]] = {"single": [], "sync": [], "async": []}
    for _ in range(args.repeats):
        env = make()
        env.prepare_scenarios()
        n, _, _, dt, cpu = play_rows(env, "keep", steps * num)
        rows["single"].append((n / dt, n / cpu))
        for kind in ("sync", "async"):
            venv = (
                gym.vector.SyncVectorEnv([make] * num)
                if kind == "sync"
                else gym.vector.AsyncVectorEnv([make] * num, context=args.start_method)
            )
            try:
                venv.call("prepare_scenarios")
                keep = np.zeros((num, 8), dtype=np.int64)
                venv.reset(seed=0)
                done = np.zeros(num, dtype=bool)
                n = 0
                t0, c0 = time.perf_counter(), time.process_time()
                while n < steps * num:
                    # an env that ended its episode resets at this call (gymnasium's
                    # next-step autoreset): only the others make a transition
                    n += int(num - done.sum())
                    _, _, term, trunc, _ = venv.step(keep)
                    done = term | trunc
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            finally:
                venv.close()
            rows[kind].append((n / dt, n / cpu))
    single = statistics.median(w for w, _ in rows["single"])
    load = os.getloadavg()
    print(
        f"vector envs, tier {tier}, keep agent, compact_info=False, {num} envs, about "
        f"{steps * num} transitions per row, median of {args.repeats} (load {load[0]:.2f}, "
        f"{os.cpu_count()} CPUs):"
    )
    for kind, label in (
        ("single", "1 env, this process"),
        ("sync", f"SyncVectorEnv({num}), this process"),
        ("async", f"AsyncVectorEnv({num}, context={args.start_method!r})"),
    ):
        wall = statistics.median(w for w, _ in rows[kind])
        cpu = statistics.median(c for _, c in rows[kind])
        extra = "" if kind != "async" else " (the parent's CPU time: the envs run elsewhere)"
        print(
            f"  {label:<40} {wall:>7,.0f} steps/s wall ({wall / single:.2f}x one env), "
            f"{cpu:,.0f} steps/s of this process's CPU time{extra}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--env", choices=("prefix", "kvpressure", "vector", "all"), default="all")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=3000, help="KVPressure steps per row")
    ap.add_argument("--repeats", type=int, default=3, help="KVPressure repeats per row")
    ap.add_argument("--vector-tier", choices=("easy", "medium", "hard"), default="medium")
    ap.add_argument("--start-method", choices=("spawn", "forkserver"), default="forkserver")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    if args.env in ("prefix", "all"):
        prefix_eviction(args)
    if args.env in ("kvpressure", "all"):
        kv_pressure(args)
    if args.env in ("vector", "all"):
        vector_envs(args)


if __name__ == "__main__":
    main()
