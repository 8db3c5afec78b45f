"""PrefixEviction-v0 results on held-out traces: hit rate of kvlab's eviction
policies, Belady's bound and the environment's agents (random, value-aware heuristic),
over seeded episodes, mean and 95% confidence interval (normal approximation).

Usage: PYTHONPATH=src python benchmarks/rl_results.py [--episodes N] [--requests N]

An episode is ``--requests`` consecutive requests of the trace from a seeded offset,
from an empty cache of a tenth of the episode's distinct blocks. Token hit rate =
hit blocks / hittable blocks of the episode. Nothing here is tuned on these traces.
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def main() -> None:
    from kvlab.rl.baselines import reference_hits
    from kvlab.rl.prefix_eviction import PrefixEvictionEnv, heuristic_action
    from kvlab.rl.prefix_trace import PrefixTrace
    from kvlab.workload.detect import load_workload
    from kvlab.workload.generators import generate

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    traces = {
        "agentic (synthetic)": generate("agentic", seed=7, sessions=32),
        "mooncake-conversation": load_workload("mooncake-conversation"),
        "mooncake-synthetic": load_workload("mooncake-synthetic"),
    }
    k = 8
    for name, w in traces.items():
        trace = PrefixTrace(w, 64)
        rows: dict[str, list[float]] = {}
        rng = np.random.default_rng(0)
        for ep in range(args.episodes):
            lo = int(rng.integers(0, max(1, trace.num_requests - args.requests + 1)))
            lo, hi = trace.window(lo, args.requests)
            a, b = trace.start[lo], trace.start[hi]
            distinct = len(set(trace.keys[a:b]))
            cap = max(1, distinct // 10)
            hittable = sum(trace.hittable[lo:hi]) or 1
            for pol, hits in reference_hits(trace, cap, lo, hi).items():
                rows.setdefault(pol, []).append(hits / hittable)
            for agent in ("random", "heuristic"):
                env = PrefixEvictionEnv(trace, cap, k=k, episode_requests=hi - lo)
                obs, info = env.reset(seed=ep, options={"first": lo})
                arng = np.random.default_rng(ep)
                done = info["decisions"] == 0
                while not done:
                    if agent == "random":
                        act = int(arng.choice(np.flatnonzero(info["action_mask"])))
                    else:
                        act = heuristic_action(obs, k)
                    obs, _, done, _, info = env.step(act)
                rows.setdefault(agent, []).append(info["hit_blocks"] / hittable)
        print(
            f"\n{name}: {trace.num_requests} requests, blocks of 64, {args.episodes} "
            f"episodes of {args.requests} requests, capacity = distinct blocks / 10"
        )
        print(f"{'policy':>12}  block hit rate (mean +- 95% CI)")
        for pol, v in rows.items():
            m = float(np.mean(v))
            ci = 1.96 * float(np.std(v, ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else 0.0
            print(f"{pol:>12}  {m:.4f} +- {ci:.4f}")


if __name__ == "__main__":
    main()
