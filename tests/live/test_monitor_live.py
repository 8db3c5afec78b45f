"""``kvlab monitor`` against the vLLM CPU server under KV pressure (4 blocks of 128
tokens, 8 sequences): ``--once --json`` during a replay that forces preemptions shows
them; and the simulator's /metrics next to the real server's for the same workload."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.backends.vllm_server import free_port
from kvlab.monitor.watch import Monitor
from kvlab.results import RunResult
from kvlab.workload.io import write_workload
from kvlab.workload.records import Request, Segment, Workload

pytestmark = pytest.mark.live
REPO = Path(__file__).resolve().parents[2]


def pressure_workload(server: Any, n: int) -> Workload:
    """``n`` requests at t=0 that together need more KV than the server has."""
    m = server.max_model_len
    seg = m // 2 - 8
    reqs = tuple(
        Request(f"p{i}", (Segment("user", seg, f"d{i}"),), seg, arrival_s=0.0) for i in range(n)
    )
    return Workload(reqs, name="pressure")


def replay(server: Any, wl: Workload, mode: str = "closed") -> RunResult:
    """Closed loop of 6, or ``trace``: every request sent at its arrival time (t=0)."""
    cfg = OpenAIConfig(
        endpoint=server.url, model=server.model, mode=mode,
        concurrency=6 if mode == "closed" else None, metrics_interval_s=0.1,
    )  # fmt: skip
    return OpenAIBackend(cfg).run(wl)


def once(cli: Any, url: str, interval: float = 0.5) -> dict[str, Any]:
    r = cli(["monitor", url, "--once", "--json", "--interval", str(interval)], 60)
    assert r.code == 0, r.err
    sample: dict[str, Any] = json.loads(r.out)["samples"][0]
    return sample


def test_once_json_shows_preemptions_during_a_replay(vllm_pressure_server: Any, cli: Any) -> None:
    url = vllm_pressure_server.url
    before = once(cli, url)
    assert before["up"] and before["dialect"] == "vllm"
    box: dict[str, RunResult] = {}
    t = threading.Thread(
        target=lambda: box.update(
            res=replay(vllm_pressure_server, pressure_workload(vllm_pressure_server, 18))
        )
    )
    t.start()
    seen = []
    while t.is_alive():
        seen.append(once(cli, url))
    t.join()
    after = once(cli, url)
    res = box["res"]
    assert res.summary["num_completed"] == 18, res.summary["errors_by_kind"]
    total = after["totals"]["num_preemptions"] - before["totals"]["num_preemptions"]
    print(
        f"\n{len(seen)} --once samples during the replay; preemptions per sample "
        f"{[s['preemptions'] for s in seen]}; usage {[s['kv_cache_usage_perc'] for s in seen]}; "
        f"total {total:.0f}, replay summary {res.summary['num_preemptions']}"
    )
    assert res.summary["num_preemptions"] > 0
    assert total == res.summary["num_preemptions"]  # the same server counter, read twice
    assert any((s["preemptions"] or 0) > 0 for s in seen)
    assert all((s["preemptions_per_s"] or 0) >= 0 for s in seen)
    assert max(s["kv_cache_usage_perc"] for s in seen) > 0.3
    assert any((s["num_requests_running"] or 0) > 0 for s in seen)


def test_simulator_and_real_server_side_by_side(
    vllm_pressure_server: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The same workload on the real server and on the simulator's endpoint (its replay
    stretched to the real run's length), watched together by ``kvlab monitor``."""
    server = vllm_pressure_server
    wl = pressure_workload(server, 12)
    wl_file = write_workload(wl, tmp_path / "pressure.jsonl")
    warm = replay(server, wl, "trace")  # the real run's length, to pace the simulator's replay
    real_s = warm.summary["simulated_duration_s"]  # (the run's span, for every backend)
    cache = warm.config["server"]["cache_config"]
    sim_port = free_port()
    sim_args = [
        sys.executable, "-m", "kvlab", "simulate", str(wl_file), "--model", str(tiny_model_dir),
        "--gpu", "h100-sxm", "--block-size", cache["block_size"], "--num-blocks",
        cache["num_gpu_blocks"], "--set", f"max_model_len={server.max_model_len}",
        "--set", "max_num_seqs=8", "--out", str(tmp_path / "sim"), "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    dry = subprocess.run(sim_args, env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    sim_s = json.loads(dry.stdout)["simulated_duration_s"]
    speed = sim_s / real_s
    sim = subprocess.Popen(
        [*sim_args[:-1], "--quiet", "--serve-metrics", str(sim_port), "--speed", f"{speed:.9g}"],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "sim.log").open("wb"),
    )  # fmt: skip
    tmux = shutil.which("tmux")
    session = f"kvlab-side-{os.getpid()}"
    sim_url = f"127.0.0.1:{sim_port}"
    real_url = server.url.replace("http://", "")
    frames: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while b"serving vLLM metrics" not in (tmp_path / "sim.log").read_bytes():
            assert sim.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        if tmux:
            cmd = (
                f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES PYTHONPATH=src "
                f"{shlex.quote(sys.executable)} -m kvlab monitor {sim_url} {real_url} "
                "--interval 0.5"
            )
            subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "130", "-y", "30",
                            cmd], check=True, timeout=10)  # fmt: skip
        mon = Monitor([sim_url, real_url], (), record=tmp_path / "side.jsonl")
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                mon.tick()
                if tmux:
                    pane = subprocess.run([tmux, "capture-pane", "-p", "-t", session],
                                          capture_output=True, text=True, timeout=10)  # fmt: skip
                    frames.append(pane.stdout)
                time.sleep(0.5)

        w = threading.Thread(target=watch)
        w.start()
        # the simulator's replay started when its endpoint came up; so does the real run
        real = replay(server, wl, "trace")  # all at t=0, as the simulator has them
        time.sleep(1.5)
        stop.set()
        w.join()
        mon.close()
    finally:
        if tmux:
            subprocess.run([tmux, "kill-session", "-t", session], timeout=10, check=False)
        sim.terminate()
        sim.wait(10)
    rows = [json.loads(x) for x in (tmp_path / "side.jsonl").read_text().splitlines()]
    by = {u: [r for r in rows if r["url"].startswith(f"http://{u}")] for u in (sim_url, real_url)}
    summary = {}
    for name, u in (("simulator", sim_url), ("vLLM CPU", real_url)):
        ss = [r for r in by[u] if r["up"]]
        assert ss and all(r["dialect"] == "vllm" for r in ss)
        summary[name] = {
            "preemptions": sum(r["preemptions"] or 0 for r in ss),
            "max_usage": max(r["kv_cache_usage_perc"] or 0 for r in ss),
            "max_waiting": max(r["num_requests_waiting"] or 0 for r in ss),
            "ttft_p99_s": max((r["ttft_p99_s"] or 0) for r in ss),
            "cache": ss[-1]["cache_config"],
        }
    best = max(frames, key=lambda f: f.count("█"), default="")
    (tmp_path / "frame.txt").write_text(best)
    print(f"\nspeed {speed:.3g} (simulated {sim_s:.4f} s over a real {real_s:.2f} s)")
    print(json.dumps(summary, indent=1))
    print(
        f"real run: {real.summary['num_preemptions']} preemptions; simulated run: "
        f"{json.loads(dry.stdout)['num_preemptions']} preemptions"
    )
    print(best)
    assert summary["simulator"]["cache"]["block_size"] == summary["vLLM CPU"]["cache"]["block_size"]
    assert summary["simulator"]["preemptions"] > 0 and summary["vLLM CPU"]["preemptions"] > 0
