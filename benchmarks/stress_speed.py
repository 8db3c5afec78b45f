"""Speed of ``kvlab stress`` on the shipped default matrix, safe-range search included.

Runs the whole analysis (11 scenarios, safe max batch and concurrency for 6 prompt
lengths on both models, degradation curves, what-ifs, presets) ``--repeats`` times in
this process (each repeat with a fresh workload cache; with ``--executor dask`` on a
local 2-worker Dask cluster started for the repeat) and prints, as medians: the wall
time of each part and of the whole, the simulator runs and prepared workloads, and the
simulator runs per second. Also the size of ``kvlab report`` on the result, and on a
10,000-request simulated run.

    python benchmarks/stress_speed.py [--repeats 3] [--gpu rtx-4090] [--executor local,dask]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def one(gpu: str, executor: str) -> dict[str, float]:
    from kvlab.stress.executor import make_executor
    from kvlab.stress.matrix import load_matrix
    from kvlab.stress.run import PARTS, run_stress

    m = load_matrix().with_gpu(gpu)
    t0 = time.perf_counter()
    ex = make_executor(executor)
    started = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory() as d:
            res = run_stress(m, out=d, parts=PARTS, executor=ex)
    finally:
        ex.close()
    wall = time.perf_counter() - t0
    out: dict[str, float] = {"total_s": wall, "executor_start_s": started}
    for part in PARTS:
        out[f"{part}_s"] = res.part_wall_s.get(part, 0.0)
    out["sim_runs"] = res.num_sim_runs
    out["prepared"] = res.num_prepared or 0
    out["runs_per_s"] = res.num_sim_runs / wall
    return out


def report_sizes() -> dict[str, float]:
    import kvlab
    from kvlab.report.html_report import build_report
    from kvlab.stress.matrix import Scenario, load_matrix
    from kvlab.stress.run import run_stress
    from kvlab.stress.scenario import build_workload

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        s = Scenario(
            name="10k",
            model="qwen2.5-0.5b",
            batch=1,
            concurrency=100,
            rounds=100,
            seq_len=2048,
            gen_len=128,
            arrival="uniform",
            ramp_s=10.0,
        )
        kvlab.simulate(build_workload(s), kvlab.SimConfig(model=s.model, gpu=s.gpu)).save(
            root / "run10k"
        )
        t = time.perf_counter()
        f = build_report([root / "run10k"], root / "r10k.html")
        out["report_10k_requests_s"] = time.perf_counter() - t
        out["report_10k_requests_kib"] = f.html.stat().st_size / 1024
        run_stress(load_matrix(), out=root / "stress", progress=None)
        t = time.perf_counter()
        f = build_report([root / "stress"], root / "stress.html")
        out["report_stress_s"] = time.perf_counter() - t
        out["report_stress_kib"] = f.html.stat().st_size / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu", default="rtx-4090")
    ap.add_argument("--executor", default="local", help="local, dask or local,dask.")
    ap.add_argument("--no-report", action="store_true", help="Skip the report sizes.")
    args = ap.parse_args()
    for name in args.executor.split(","):
        runs = [one(args.gpu, name) for _ in range(args.repeats)]
        print(
            f"kvlab stress, default matrix on {args.gpu}, executor {name}, "
            f"median of {args.repeats}:"
        )
        for k in runs[0]:
            v = statistics.median(r[k] for r in runs)
            print(f"  {k:>16}: {v:,.2f}")
    if not args.no_report:
        for k, v in report_sizes().items():
            print(f"  {k:>24}: {v:,.1f}")


if __name__ == "__main__":  # the guard Dask's spawned workers need
    main()
