"""The backend seam: every backend's run directory has the same keys in the same places."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kvlab.backends.base import (
    GROUP_KEYS,
    OFFLOAD_KEYS,
    SUMMARY_KEYS,
    Backend,
    build_result,
)
from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.backends.sim import SimBackend
from kvlab.backends.stub import StubConfig, stub_transport
from kvlab.results import RequestRecord, RunResult
from kvlab.sim.config import SimConfig
from kvlab.workload.records import Request, Segment, Workload


def workload() -> Workload:
    """Six requests of two classes; one session has two turns sharing a prefix."""
    reqs = [
        Request(
            f"r{i}",
            (Segment("system", 16, "sys"), Segment("user", 8, f"u{i}")),
            3,
            arrival_s=0.002 * i,
            cls="chat" if i % 2 else "agent",
            session_id=f"s{i}",
        )
        for i in range(5)
    ]
    reqs.append(
        Request(
            "r5",
            (Segment("system", 16, "sys"), Segment("user", 8, "u0"), Segment("user", 8, "u5")),
            3,
            arrival_s=None,
            think_time_s=0.001,
            session_id="s0",
            turn=1,
            cls="agent",
        )
    )
    return Workload(tuple(reqs), name="seam")


def sim_result() -> RunResult:
    cfg = SimConfig(model="llama-3.1-8b", gpu="h100", num_blocks=64, block_size=4)
    return SimBackend(cfg).run(workload())


def live_result(stub: StubConfig | None = None) -> RunResult:
    cfg = OpenAIConfig(endpoint="http://in-memory", model="stub", mode="trace")
    return OpenAIBackend(cfg, transport=stub_transport(stub)).run(workload())


def saved(run: RunResult, d: Path) -> dict[str, Any]:
    run.save(d)
    return {
        "summary": json.loads((d / "summary.json").read_text()),
        "run": json.loads((d / "run.json").read_text()),
        "records": [json.loads(x) for x in (d / "requests.jsonl").read_text().splitlines()],
    }


def keys(summary: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    return list(summary), {k: list(v) for k, v in summary["by_class"].items()}


def test_every_backend_is_a_backend() -> None:
    sim = SimBackend(SimConfig(model="llama-3.1-8b", gpu="h100"))
    live = OpenAIBackend(OpenAIConfig(endpoint="http://x", model="m"), transport=stub_transport())
    assert isinstance(sim, Backend) and sim.name == "sim"
    assert isinstance(live, Backend) and live.name == "openai"


def test_simulated_and_live_runs_have_the_same_key_set(tmp_path: Path) -> None:
    sim = saved(sim_result(), tmp_path / "sim")
    live = saved(live_result(), tmp_path / "live")
    assert keys(sim["summary"]) == keys(live["summary"])
    assert list(sim["summary"]) == [k for k in SUMMARY_KEYS if k not in OFFLOAD_KEYS]
    for g in (*sim["summary"]["by_class"].values(), *live["summary"]["by_class"].values()):
        assert list(g) == list(GROUP_KEYS)
    assert (
        list(sim["summary"]["by_class"]) == list(live["summary"]["by_class"]) == ["agent", "chat"]
    )
    for run in (sim["run"], live["run"]):
        assert list(run) == ["config", "provenance"]
        assert list(run["provenance"])[:4] == ["backend", "kvlab_version", "seed", "workload"]
        assert "backend" not in run["config"]
    assert sim["run"]["provenance"]["backend"] == "sim"
    assert live["run"]["provenance"]["backend"] == "openai"
    assert sim["run"]["provenance"]["workload"] == live["run"]["provenance"]["workload"] == "seam"
    # what each knows, and what it does not
    assert sim["summary"]["prefix_cache_source"] == "simulated"
    assert sim["summary"]["prefix_cache_hits"] > 0
    s = live["summary"]
    assert s["prefix_cache_source"] is None  # the stub reports no cached tokens by default
    assert s["prefix_cache_hits"] is None and s["prefix_cache_hit_rate"] is None
    assert s["num_preemptions"] is None and s["num_evicted_blocks"] is None
    assert sim["summary"]["client_cpu_s"] is None and s["client_cpu_s"] is not None
    assert sim["run"]["provenance"]["wall_s"] > 0 and live["run"]["provenance"]["wall_s"] > 0
    assert "wall_s" not in sim["summary"] and "wall_s" not in s
    assert all("cached_tokens" not in r and "computed_tokens" not in r for r in live["records"])
    assert all(r["cached_tokens"] >= 0 for r in sim["records"])


def test_usage_figures_when_the_server_reports_them(tmp_path: Path) -> None:
    live = saved(live_result(StubConfig(cached_tokens=16)), tmp_path / "live")
    s = live["summary"]
    assert s["prefix_cache_source"] == "usage.prompt_tokens_details"
    assert s["prefix_cache_hits"] == 6 * 16
    assert s["prefix_cache_hit_rate"] == pytest.approx(
        s["prefix_cache_hits"] / s["prefix_cache_queries"]
    )
    assert s["external_prefix_cache_hits"] is None  # usage does not say which tier hit
    agent = s["by_class"]["agent"]
    assert agent["prefix_cache_source"] == "usage.prompt_tokens_details"
    assert agent["prefix_cache_hits"] == 4 * 16  # r0, r2, r4 and r5
    r = live["records"][0]
    assert r["cached_tokens"] == 16 and r["computed_tokens"] == r["prompt_tokens"] - 16
    back = RunResult.load(tmp_path / "live")
    assert back.records[0].num_preemptions is None and back.records[0].offload_hit_tokens is None


def test_a_live_run_over_sockets_has_the_same_key_set(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    from kvlab.backends.stub import StubServer

    async def main() -> RunResult:
        s = await StubServer(StubConfig()).start()
        try:
            cfg = OpenAIConfig(endpoint=s.url, model="stub", metrics_interval_s=0.05)
            return await OpenAIBackend(cfg).run_async(workload())
        finally:
            await s.stop()

    live = saved(asyncio.run(main()), tmp_path / "live")
    sim = saved(sim_result(), tmp_path / "sim")
    assert keys(live["summary"]) == keys(sim["summary"])


def test_old_run_directories_with_the_backend_in_the_config_still_read(tmp_path: Path) -> None:
    run = RunResult(records=[], summary={}, config={"backend": "openai"}, provenance={})
    run.save(tmp_path)
    assert RunResult.load(tmp_path).backend == "openai"
    assert sim_result().backend == "sim"


def test_build_result_refuses_keys_outside_the_summary() -> None:
    recs = [RequestRecord("a", 0.0, 10, 2, admitted_s=0.0, first_token_s=0.1, finish_s=0.2)]
    with pytest.raises(ValueError, match="no_such_figure"):
        build_result("x", recs, wall_s=1.0, record_source=None, counters={"no_such_figure": 1})
    with pytest.raises(ValueError, match="wall_s"):
        build_result("x", recs, wall_s=1.0, record_source=None, counters={"wall_s": 1})
    with pytest.raises(ValueError, match="prefix_cache_source"):
        build_result("x", recs, wall_s=1.0, record_source="guessed")
    res = build_result("x", recs, wall_s=1.0, record_source="simulated", seed=3)
    assert res.summary["prefix_cache_hit_rate"] == 0.0  # known: no hits
    assert res.provenance == {
        "backend": "x",
        "kvlab_version": res.provenance["kvlab_version"],
        "seed": 3,
        "workload": None,
        "wall_s": 1.0,
    }
    assert "wall_s" not in res.summary and res.wall_s == 1.0


def test_offload_keys_only_with_an_offload_tier() -> None:
    cfg = SimConfig(
        model="llama-3.1-8b", gpu="h100", num_blocks=64, block_size=4, offload_blocks=32
    )
    s = SimBackend(cfg).run(workload()).summary
    assert list(s) == list(SUMMARY_KEYS)


def test_every_figure_a_live_run_can_report_is_a_summary_key() -> None:
    from kvlab.backends.live_summary import client_figures
    from kvlab.backends.metrics import PROFILES, server_summary

    names = {n for p in PROFILES.values() for n in p.counters}
    deltas = dict.fromkeys(names, 2.0)
    figures = {**server_summary(deltas), **client_figures([], [0.0], 1.0, 0.1), "stopped": "x"}
    assert len(figures) > 15
    assert set(figures) <= set(SUMMARY_KEYS)
