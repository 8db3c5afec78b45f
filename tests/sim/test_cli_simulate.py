"""``kvlab simulate`` through Typer's CliRunner and the main() error path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sim_helpers import random_workload
from typer.testing import CliRunner

from kvlab.cli.app import app
from kvlab.results import RunResult
from kvlab.workload.io import write_workload

REPO = Path(__file__).resolve().parents[2]


def wl_file(tmp_path: Path) -> Path:
    return write_workload(random_workload(5, 40), tmp_path / "w.jsonl")


def test_simulate_writes_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["simulate", str(wl_file(tmp_path)), "--model", "llama-3.1-8b", "--gpu", "h100"]
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--num-blocks", "400", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    for key in (
        "num_requests",
        "num_completed",
        "num_rejected",
        "prefix_cache_queries",
        "prefix_cache_hits",
        "prefix_cache_hit_rate",
        "num_preemptions",
        "num_evicted_blocks",
        "kv_cache_usage_perc_max",
        "kv_cache_usage_perc_mean",
        "ttft_s",
        "tpot_s",
        "e2e_s",
        "request_throughput_per_s",
        "output_throughput_tok_per_s",
        "simulated_duration_s",
        "by_class",
    ):
        assert key in summary, key
    for name in ("summary.json", "requests.jsonl", "timeseries.csv", "histograms.json"):
        assert (out / name).exists()
    assert "clock: roofline, uncalibrated" in (out / "summary.md").read_text()
    run = RunResult.load(out)
    assert len(run.records) == summary["num_requests"]
    assert run.timeseries["kv_cache_usage_perc"]


def test_plot_draws_the_timeline_and_residency_figures(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["simulate", str(wl_file(tmp_path)), "--num-blocks", "120", "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--plot", "--quiet"])
    assert res.exit_code == 0, res.output
    assert RunResult.load(out).summary["num_evicted_blocks"] > 0  # every panel has data
    for name in ("kv_timeline", "residency"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:2000]


def test_plot_without_matplotlib_keeps_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["simulate", str(wl_file(tmp_path)), "--out", str(out), "--plot"])
    assert res.exit_code == 0, res.output  # a missing plot extra only skips the plots
    warnings = [x for x in res.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "matplotlib" in warnings[0], res.stderr
    assert (out / "summary.json").exists() and (out / "requests.jsonl").exists()
    assert not (out / "kv_timeline.png").exists()


def test_modes_and_set_overrides(tmp_path: Path) -> None:
    f = str(wl_file(tmp_path))
    base = ["simulate", f, "--model", "llama-3.1-8b", "--gpu", "h100", "--json", "--out"]
    r1 = CliRunner().invoke(app, [*base, str(tmp_path / "b"), "--mode", "baseline"])
    r2 = CliRunner().invoke(
        app, [*base, str(tmp_path / "o"), "--mode", "offload", "--set", "max_num_seqs=8"]
    )
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    assert json.loads(r1.output)["prefix_cache_hits"] == 0
    s2 = json.loads(r2.output)
    assert s2["offload_capacity_blocks"] == 2 * s2["num_gpu_blocks"]
    cfg = json.loads((tmp_path / "o" / "run.json").read_text())["config"]
    assert cfg["max_num_seqs"] == 8


def test_unknown_setting_exits_2(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "kvlab",
        "simulate",
        str(wl_file(tmp_path)),
        "--out",
        str(tmp_path / "x"),
        "--set",
        "no_such_knob=1",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO / "src")}
    )
    assert proc.returncode == 2
    assert "unknown setting 'no_such_knob'" in proc.stderr


def test_policy_help_lists_every_policy() -> None:
    import re

    from kvlab.cli.simulate import PARAMS
    from kvlab.sim.policies import POLICIES

    text = next(p for p in PARAMS if p.name == "policy").help
    assert set(re.findall(r"[a-z0-9]+", text.split(":")[1].split("(")[0])) - {"or"} == set(POLICIES)


def test_percentiles_and_goodput_reach_summary_and_vllm_bench_export(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            str(wl_file(tmp_path)),
            "--out",
            str(out),
            "--percentiles",
            "50,99.9",
            "--goodput",
            "ttft:100000,tpot:100000",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert list(s["latency_percentiles_s"]["ttft_s"]) == ["p50", "p99.9"]
    assert s["latency_percentiles_s"]["ttft_s"]["p50"] == s["ttft_s"]["p50"]
    assert s["goodput"]["good_requests"] == s["num_completed"]  # SLOs every request meets
    bench = json.loads((out / "vllm_bench.json").read_text())
    p999 = s["latency_percentiles_s"]["ttft_s"]["p99.9"]
    assert bench["p99.9_ttft_ms"] == pytest.approx(1e3 * p999)
    assert bench["median_ttft_ms"] == pytest.approx(1e3 * s["ttft_s"]["p50"])
    assert bench["completed"] == s["num_completed"] and "request_goodput" in bench
    assert bench["mean_itl_ms"] is None  # the simulator records no chunk times
    assert "Goodput (ttft <= 100000 ms, tpot <= 100000 ms)" in (out / "summary.md").read_text()
    bad = CliRunner().invoke(
        app, ["simulate", str(wl_file(tmp_path)), "--out", str(out), "--goodput", "ttfb:5"]
    )
    from kvlab.errors import ConfigError

    assert isinstance(bad.exception, ConfigError) and "--goodput" in str(bad.exception)


def test_without_out_the_run_goes_to_a_timestamped_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wl = wl_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["simulate", str(wl), "-q"])
    assert res.exit_code == 0, res.output
    (out,) = (tmp_path / "runs").iterdir()
    assert out.name.startswith("simulate-") and (out / "summary.json").is_file()
    assert f"writing to runs/{out.name}" in res.stderr
