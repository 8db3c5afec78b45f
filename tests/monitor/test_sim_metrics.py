"""The simulator's vLLM /metrics: the recorded timeline is the engine's own state, the
replay exposes it under vLLM's names at each simulated instant, and the monitor reads it."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kvlab.backends.metrics import parse_prometheus, sample_sum
from kvlab.monitor import histogram as hist
from kvlab.monitor.sampler import Scrape, ServerWatch
from kvlab.monitor.sim_metrics import TTFT_BUCKETS, MetricsReplay, record_run
from kvlab.sim.engine import simulate
from monitor.simload import SIM_ARGS, overload, overload_config, overload_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recorded() -> tuple:
    return record_run(overload(), overload_config())


def test_observer_changes_nothing_and_timeline_matches_result(recorded: tuple) -> None:
    result, tl = recorded
    plain = simulate(overload(), overload_config())
    for k in ("num_preemptions", "prefix_cache_hits", "num_evicted_blocks", "ttft_s", "e2e_s"):
        assert plain.summary[k] == result.summary[k], k
    s = result.summary
    assert s["num_preemptions"] > 0 and s["kv_cache_usage_perc_max"] > 0.9  # an overload
    assert tl.preemptions[-1] == s["num_preemptions"]
    assert tl.queries[-1] == s["prefix_cache_queries"]
    assert tl.hits[-1] == s["prefix_cache_hits"]
    assert max(tl.usage) == s["kv_cache_usage_perc_max"]
    assert tl.t_s == sorted(tl.t_s) and len(set(tl.t_s)) == len(tl.t_s)
    assert all(0 <= u <= 1 for u in tl.usage)
    assert sum(1 for o in tl.obs if o[1] == "success") == s["num_completed"]


def _scrape(replay: MetricsReplay) -> str:
    from prometheus_client import generate_latest

    return generate_latest(replay.registry).decode()


def test_replay_exposes_the_state_at_each_instant(recorded: tuple) -> None:
    _, tl = recorded
    replay = MetricsReplay(tl)
    watch = ServerWatch("sim:1")
    for t in (0.0, 2.0, 5.0, 7.5, tl.duration_s + 1):
        replay.advance_to(t)
        samples = parse_prometheus(_scrape(replay))
        i = tl.state_at(t)
        if i is None:
            assert sample_sum(samples, "vllm:kv_cache_usage_perc") == 0.0
            continue
        assert sample_sum(samples, "vllm:kv_cache_usage_perc") == tl.usage[i]
        assert sample_sum(samples, "vllm:num_requests_running") == tl.running[i]
        assert sample_sum(samples, "vllm:num_requests_waiting") == tl.waiting[i]
        assert sample_sum(samples, "vllm:num_preemptions_total") == tl.preemptions[i]
        assert sample_sum(samples, "vllm:prefix_cache_queries_total") == tl.queries[i]
        assert sample_sum(samples, "vllm:prefix_cache_hits_total") == tl.hits[i]
        ttfts = [v for (ts, k, v) in tl.obs if k == "ttft" and ts <= t]
        b = hist.buckets(samples, "vllm:time_to_first_token_seconds")
        assert b is not None and [le for le, _ in b] == [*TTFT_BUCKETS, math.inf]
        assert b[-1][1] == len(ttfts)
        assert dict(b)[1.0] == sum(1 for v in ttfts if v <= 1.0)
        s = watch.update(Scrape(_scrape(replay)), t)
        assert s.up and s.dialect == "vllm" and s.kv_cache_usage_perc == tl.usage[i]
        assert s.cache_config == {
            "block_size": "16",
            "num_gpu_blocks": "200",
            "cache_dtype": "bfloat16",
        }


def test_replay_on_a_scaled_clock(recorded: tuple) -> None:
    _, tl = recorded
    replay = MetricsReplay(tl)
    clock = [100.0]
    seen: list[float] = []

    def sleep(dt: float) -> None:
        clock[0] += dt

    replay.replay(4.0, tick_s=0.5, on_tick=seen.append, clock=lambda: clock[0], sleep=sleep)
    assert replay.done
    # simulated time runs 4x the wall clock: 0.5 s ticks are 2 simulated seconds apart
    assert seen[:3] == [0.0, 2.0, 4.0]
    assert seen[-1] >= tl.duration_s and seen[-2] < tl.duration_s


def test_simulate_serve_metrics_cli(tmp_path: Path) -> None:
    """``kvlab simulate --serve-metrics 0``: the run directory first, then the endpoint on
    the port it prints, read by ``kvlab monitor --once --json``; Ctrl-C stops it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    wl = overload_file(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvlab", "simulate", str(wl), *SIM_ARGS, "--out",
         str(tmp_path / "run"), "--quiet", "--serve-metrics", "0", "--speed", "0.5"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert m, line
        assert (tmp_path / "run" / "summary.json").is_file()  # written before serving
        r = subprocess.run(
            [sys.executable, "-m", "kvlab", "monitor", f"127.0.0.1:{m.group(1)}", "--once",
             "--json", "--interval", "1"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)["samples"][0]
        assert s["dialect"] == "vllm" and s["cache_config"]["num_gpu_blocks"] == "200"
        assert s["kv_cache_usage_perc"] > 0.5  # simulated 0.5-1 s: the cache fills
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
