"""A real Prometheus (Debian's ``prometheus``) scrapes ``kvlab simulate --serve-metrics``
driven into overload and evaluates the rules of ``kvlab monitor --export-rules``: the
KV-usage and preemption alerts fire during the overload and resolve after it.

The thresholds are the shipped defaults (usage above the stress SLO's ceiling of 0.95,
any preemption); the durations are shortened (no ``for``, rate window 3 s) so that the
test takes seconds: the simulated usage dips under 0.95 for a moment whenever a
preemption frees blocks, so even a ``for`` of 0.5 s on a 2x replay is hit or miss on a
loaded machine (it missed once in six runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kvlab.backends.vllm_server import free_port
from kvlab.monitor.alerts import DEFAULT_RULES, Rule, prometheus_rules
from monitor.simload import SIM_ARGS, overload_file

REPO = Path(__file__).resolve().parents[2]
RULES = (
    Rule("KvCacheNearlyFull", "kv_cache_usage_perc", ">", DEFAULT_RULES[0].threshold, for_s=0),
    Rule("Preempting", "preemptions_per_s", ">", 0.0, window_s=3, severity="critical"),
)


def prometheus() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        msg = "prometheus not found: apt-get install prometheus (Debian/Ubuntu) to run this test"
        if os.environ.get("CI") or os.environ.get("KVLAB_REQUIRE_LIVE") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return exe


def _alerts(port: int) -> dict[str, str]:
    """alertname -> state (pending/firing) of Prometheus' active alerts."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=2) as r:
            data = json.load(r)
    except OSError:
        return {}
    return {a["labels"]["alertname"]: a["state"] for a in data["data"]["alerts"]}


def _targets(port: int) -> int:
    """How many active targets Prometheus has (0 while it starts)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2) as r:
            return len(json.load(r)["data"]["activeTargets"])
    except OSError:
        return 0


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.slow
def test_shipped_rules_fire_and_resolve_in_prometheus(tmp_path: Path) -> None:
    exe = prometheus()
    sim_port, prom_port = free_port(), free_port()
    while prom_port == sim_port:
        prom_port = free_port()
    (tmp_path / "rules.yml").write_text(prometheus_rules(RULES))
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n"
        "  evaluation_interval: 250ms\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n  - job_name: kvlab-sim\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{sim_port}']}}]\n"
    )
    prom = subprocess.Popen(
        [exe, "--config.file", str(tmp_path / "prometheus.yml"),
         "--storage.tsdb.path", str(tmp_path / "tsdb"),
         "--web.listen-address", f"127.0.0.1:{prom_port}", "--log.level", "warn"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prom.log").open("wb"),
    )  # fmt: skip
    wl = overload_file(tmp_path)
    # Prometheus applies discovered targets every few seconds: start the overload once
    # the target is active, so that every scrape of it is seen.
    deadline = time.monotonic() + 30
    while not _targets(prom_port):
        assert prom.poll() is None and time.monotonic() < deadline, (
            tmp_path / "prom.log"
        ).read_text()
        time.sleep(0.2)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    sim = subprocess.Popen(
        [sys.executable, "-m", "kvlab", "simulate", str(wl), *SIM_ARGS, "--out",
         str(tmp_path / "run"), "--quiet", "--serve-metrics", str(sim_port), "--speed", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "sim.log").open("wb"),
    )  # fmt: skip
    seen: dict[str, list[str]] = {"KvCacheNearlyFull": [], "Preempting": []}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = _alerts(prom_port)
            for name, hist in seen.items():
                now = states.get(name, "inactive")
                if not hist or hist[-1] != now:
                    hist.append(now)
            if all("firing" in h and h[-1] == "inactive" for h in seen.values()):
                break
            assert prom.poll() is None, (tmp_path / "prom.log").read_text()
            assert sim.poll() is None, (tmp_path / "sim.log").read_text()
            time.sleep(0.25)
    finally:
        _stop(sim)
        _stop(prom)
    log = (tmp_path / "sim.log").read_text()
    assert "replay finished" in log, log
    for name, hist in seen.items():
        # inactive -> (pending ->) firing -> inactive: fired during the overload, resolved after
        assert "firing" in hist and hist[-1] == "inactive", (name, hist)
