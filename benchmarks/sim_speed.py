"""Speed and memory of the simulator, optionally side by side with another version.

Prints medians over ``--repeats`` runs, each in a fresh process:

* engine: ``simulate()`` on the shipped Azure 2023 conversation and Mooncake
  conversation traces (Llama-3.1-8B on H100, prefix caching on), the trace
  already loaded; preparation (naming every request's block keys) included;
  every part runs vLLM's synchronous scheduler, so that versions compare like for
  like (kvlab's default on a GPU is now async scheduling; its cost is the
  async / sync ratio of the prepared part);
* prepared: the same workload prepared once, then run twice: the second run
  is what a sweep, a stress search or an RL episode pays; then once more with
  each scheduling mode forced (``async_scheduling`` false and true: vLLM's
  synchronous ``Scheduler`` and its ``AsyncScheduler``), and the ratio async / sync;
* policies: the whole ``kvlab simulate`` command on Mooncake with
  ``--policy lru|s3fifo|lfu``;
* cold start: the whole command on a one-request workload;
* scale: the whole command on the Azure trace tiled to ``--sizes`` requests,
  with the peak RSS of the process; then the new version once more with its
  default scheduling (async, where it has it), as a user runs the command.

With ``--baseline DIR`` (the root of another checkout of kvlab, e.g. a
``git worktree`` of main), every figure is measured for both versions,
interleaved run by run, and printed with the ratio new / baseline.

    python benchmarks/sim_speed.py [--repeats 3] [--sizes 1000000] [--baseline ../main-ref]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "src" / "kvlab" / "data" / "traces"
MODEL, GPU = "meta-llama/Llama-3.1-8B", "h100-sxm"

#: Run in a child process with a version's ``src`` on PYTHONPATH: load a trace, time
#: simulate() (and, where the version has it, a prepared workload run twice); JSON out.
ENGINE_DRIVER = r"""
import dataclasses, json, sys, time
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import simulate
from kvlab.workload.detect import load_workload
wl = load_workload(sys.argv[1], None, seed=0)
cfg = SimConfig(model=sys.argv[2], gpu=sys.argv[3])
if "async_scheduling" in {f.name for f in dataclasses.fields(SimConfig)}:
    # one scheduler for both versions (the default is async where the version has it)
    cfg = cfg.replace(async_scheduling=False)
t0 = time.perf_counter()
r = simulate(wl, cfg)
out = {"simulate_s": time.perf_counter() - t0,
       "loop_s": r.provenance.get("wall_s", r.summary.get("wall_s")),
       "requests": r.summary["num_requests"]}
try:
    from kvlab.sim.prepare import prepare
    from kvlab.sim.resolve import resolve
except ImportError:
    pass
else:
    t0 = time.perf_counter()
    p = prepare(wl, resolve(cfg).block_size)
    simulate(p, cfg)
    t1 = time.perf_counter()
    simulate(p, cfg)
    out["first_s"], out["second_s"] = t1 - t0, time.perf_counter() - t1
if "async_scheduling" in {f.name for f in dataclasses.fields(SimConfig)}:
    for mode in ("sync", "async"):  # on the prepared workload, the mode forced
        t0 = time.perf_counter()
        r = simulate(p, cfg.replace(async_scheduling=mode == "async"))
        out[mode + "_s"] = time.perf_counter() - t0
        out[mode + "_loop_s"] = r.provenance["wall_s"]
print(json.dumps(out))
"""

#: Runs a command and prints the peak RSS (KB) of its children.
RSS_WRAPPER = (
    "import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True,"
    " stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def env_for(root: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(root / "src"))


def simulate_cmd(workload: Path | str, out: Path, *extra: str) -> list[str]:
    return [
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
        "--quiet",
        *extra,
    ]


def has_async(root: Path) -> bool:
    """Whether ``root``'s kvlab runs vLLM's async scheduling by default on a GPU."""
    return (root / "src" / "kvlab" / "sim" / "async_cohort_loop.py").exists()


def whole(root: Path, cmd: list[str], default_mode: bool = False) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command run with ``root``'s kvlab (with
    the synchronous scheduler where that version's default is async, so that every
    version runs the same scheduler; ``default_mode``: as the version runs it)."""
    if has_async(root) and not default_mode:
        cmd = [*cmd, "--no-async-scheduling"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, *cmd],
        capture_output=True,
        text=True,
        env=env_for(root),
        check=True,
    )
    return time.perf_counter() - t0, int(proc.stdout.strip()) / 1024


def engine(root: Path, trace: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", ENGINE_DRIVER, str(trace), MODEL, GPU],
        capture_output=True,
        text=True,
        env=env_for(root),
        check=True,
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


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


def interleaved(
    versions: dict[str, Path], repeats: int, measure: Callable[[Path], dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Median of each figure per version, the versions taking turns run by run."""
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in versions}
    for _ in range(repeats):
        for v, root in versions.items():
            runs[v].append(measure(root))
    return {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}


def show(label: str, med: dict[str, dict[str, float]], key: str, unit: str = "s") -> None:
    parts = [f"{v} {m[key]:,.3f} {unit}" for v, m in med.items() if key in m]
    ratio = ""
    if "new" in med and "baseline" in med and key in med["baseline"] and key in med["new"]:
        ratio = f"  (new / baseline {med['new'][key] / med['baseline'][key]:.3f})"
    print(f"  {label}: {', '.join(parts)}{ratio}", flush=True)


def _as(med: dict[str, dict[str, float]], new_key: str) -> dict[str, dict[str, float]]:
    """The new version's ``new_key`` beside the baseline's plain ``simulate_s``, as "s"."""
    out = {"new": {"s": med["new"][new_key]}}
    if "baseline" in med:
        out["baseline"] = {"s": med["baseline"]["simulate_s"]}
    return out


PARTS = ("engine", "policies", "cold", "scale")


def bench(
    repeats: int, sizes: list[int], baseline: Path | None, tmp: Path, parts: tuple[str, ...]
) -> None:
    versions = {"new": REPO}
    if baseline is not None:
        versions["baseline"] = baseline.resolve()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {repeats}")
    for root in versions.values():  # byte-compiled first, as an installed package is
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(root / "src" / "kvlab")],
            check=True,
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE=""),
        )
    for name in ("azure2023_conv.csv", "mooncake_conversation.jsonl") if "engine" in parts else ():
        med = interleaved(versions, repeats, lambda root, name=name: engine(root, TRACES / name))
        n = med["new"]["requests"]
        print(f"{name}, {n:,.0f} requests, loaded in the process:", flush=True)
        show("simulate(), preparation included", med, "simulate_s")
        show("of which the run loop (wall_s)", med, "loop_s")
        new = med["new"]
        if "second_s" in new:
            show("engine on a prepared workload (new: second run)", _as(med, "second_s"), "s")
        if "second_s" in new:
            print(
                f"  prepared once: first run {new['first_s']:.3f} s, second "
                f"{new['second_s']:.3f} s ({new['first_s'] / new['second_s']:.2f}x faster)",
                flush=True,
            )
        if "async_s" in new:
            print(
                f"  new, prepared workload, async scheduling vs synchronous: run "
                f"{new['async_s']:.3f} s vs {new['sync_s']:.3f} s "
                f"(async / sync {new['async_s'] / new['sync_s']:.2f}), of which the run loop "
                f"{new['async_loop_s']:.3f} s vs {new['sync_loop_s']:.3f} s "
                f"(async / sync {new['async_loop_s'] / new['sync_loop_s']:.2f})",
                flush=True,
            )
    if "policies" in parts:
        _policies(versions, repeats, tmp)
    if "cold" in parts:
        _cold(versions, repeats, tmp)
    for n in sizes if "scale" in parts else ():
        _scale(versions, repeats, tmp, n)


def _policies(versions: dict[str, Path], repeats: int, tmp: Path) -> None:
    moon = TRACES / "mooncake_conversation.jsonl"
    print("mooncake conversation, whole command, by eviction policy:", flush=True)
    lru = None
    for policy in ("lru", "s3fifo", "lfu"):

        def pol(root: Path, policy: str = policy) -> dict[str, float]:
            return {"wall_s": whole(root, simulate_cmd(moon, tmp / "run", "--policy", policy))[0]}

        med = interleaved(versions, repeats, pol)
        show(policy, med, "wall_s")
        if policy == "lru":
            lru = med["new"]["wall_s"]
        elif lru:
            print(f"    new: {med['new']['wall_s'] / lru:.2f}x the LRU run", flush=True)


def _cold(versions: dict[str, Path], repeats: int, tmp: Path) -> None:
    one = tmp / "one.csv"
    one.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n")
    med = interleaved(
        versions, repeats, lambda root: {"wall_s": whole(root, simulate_cmd(one, tmp / "r"))[0]}
    )
    print("cold start (one-request workload, whole command):", flush=True)
    show("wall", med, "wall_s")


def _scale(versions: dict[str, Path], repeats: int, tmp: Path, n: int) -> None:
    path = tiled_azure(n, tmp / f"azure_{n}.csv")

    def scale(root: Path, path: Path = path) -> dict[str, float]:
        wall, rss = whole(root, simulate_cmd(path, tmp / "run"))
        return {"wall_s": wall, "rss_mb": rss}

    med = interleaved(versions, max(1, repeats // 3) if n >= 500_000 else repeats, scale)
    print(f"tiled azure, {n:,} requests, whole command:", flush=True)
    show("wall", med, "wall_s")
    show("peak RSS", med, "rss_mb", "MB")
    for v, m in med.items():
        print(f"    {v}: {n / m['wall_s']:,.0f} req/s", flush=True)
    if has_async(REPO):  # the command as a user runs it: async scheduling, the default
        runs = [
            whole(REPO, simulate_cmd(path, tmp / "run"), default_mode=True)
            for _ in range(max(1, repeats // 3) if n >= 500_000 else repeats)
        ]
        wall = statistics.median(w for w, _ in runs)
        rss = statistics.median(r for _, r in runs)
        print(
            f"  new, default (async) scheduling: wall {wall:,.3f} s, {n / wall:,.0f} req/s, "
            f"peak RSS {rss:,.0f} MB",
            flush=True,
        )
    path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="1000000", help="tiled Azure sizes, comma-separated")
    ap.add_argument("--baseline", type=Path, help="root of another kvlab checkout to compare")
    ap.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}"
    )
    args = ap.parse_args()
    if args.baseline is not None and not (args.baseline / "src" / "kvlab").is_dir():
        ap.error(f"--baseline {args.baseline}: no src/kvlab there")
    sizes = [int(x) for x in args.sizes.split(",") if x]
    parts = tuple(x for x in args.parts.split(",") if x)
    if not set(parts) <= set(PARTS):
        ap.error(f"--parts: choose from {', '.join(PARTS)}")
    with tempfile.TemporaryDirectory(prefix="kvlab-speed-") as d:  # runs and tiled traces
        bench(args.repeats, sizes, args.baseline, Path(d), parts)


if __name__ == "__main__":
    main()
