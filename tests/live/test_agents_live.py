"""The agent workflow against vLLM's CPU server with the tiny model (decisions scripted).

Small reports (3 companies x 2 pages), a 2048-token context: the naive agent
overflows with a real HTTP 400; every compacting strategy completes under its
budget; the cache-aware strategy keeps the largest prefix-hit share.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langchain.agents.middleware")
pytest.importorskip("langchain_openai")

from kvlab.agents.graph import STRATEGY_NAMES, StrategyConfig
from kvlab.agents.live import RunConfig, run
from kvlab.agents.workflow import WorkflowConfig
from kvlab.backends.vllm_server import VllmServer

pytestmark = pytest.mark.live

WF = WorkflowConfig(num_companies=3, pages=2, page_words=150, mc_runs=1000)
BUDGET = 1800
ST = StrategyConfig(budget_tokens=BUDGET, clip_chars=400, window=1, summary_keep_messages=3)
COMPACTING = tuple(s for s in STRATEGY_NAMES if s != "naive")


@pytest.fixture(scope="module")
def agent_runs(
    vllm_agents_server: VllmServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("agents-runs")
    out: dict[str, Path] = {}
    for s in STRATEGY_NAMES:
        cfg = RunConfig(
            strategy=s,
            endpoint=vllm_agents_server.url,
            model=vllm_agents_server.model,
            workflow=WF,
            strategies=ST,
            max_output_tokens=8,
            targets=("gpt-oss-120b", "nemotron-3-nano-30b-a3b"),
        )
        run(cfg, base / s, progress=None)
        out[s] = base / s
    return out


def report(d: Path) -> dict:
    return json.loads((d / "agents.json").read_text())


def steps(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "steps.jsonl").read_text().splitlines()]


def test_naive_overflows_with_a_real_400(agent_runs: dict[str, Path]) -> None:
    r = report(agent_runs["naive"])
    assert r["completed"] == 0
    over = r["agents"][0]["overflow"]
    assert over["kind"] in ("context_length", "negative_max_tokens")
    assert "400" in over["error"]
    assert over["company"] is not None and 0 < over["step"] < WF.num_model_calls
    rows = steps(agent_runs["naive"])
    assert rows[-1]["status"] == "overflow" and rows[-1]["step"] == over["step"]
    reqs = (agent_runs["naive"] / "requests.jsonl").read_text().splitlines()
    assert json.loads(reqs[-1])["status"] == "failed"


def test_naive_grows_by_the_report_and_compacting_ones_stay_bounded(
    agent_runs: dict[str, Path],
) -> None:
    naive = [r["prompt_tokens"] for r in steps(agent_runs["naive"]) if r["status"] == "ok"]
    assert naive == sorted(naive)
    # The first fetch adds the whole report (hundreds of tokens) to every later prompt.
    assert naive[1] - naive[0] > 500
    for s in COMPACTING:
        rep = report(agent_runs[s])
        assert rep["completed"] == 1, s
        rows = [r for r in steps(agent_runs[s]) if r["kind"] == "agent"]
        assert len(rows) == WF.num_model_calls, s
        assert max(r["prompt_tokens"] for r in rows) <= BUDGET + 64, s
        assert all(r["cached_tokens"] is not None for r in rows), s


def test_cache_aware_keeps_the_highest_prefix_hit_share(agent_runs: dict[str, Path]) -> None:
    share = {s: report(agent_runs[s])["prefix_hit_share"] for s in COMPACTING}
    best_other = max(v for k, v in share.items() if k != "cache_aware")
    assert share["cache_aware"] > best_other, share
    assert report(agent_runs["cache_aware"])["fact_retention_mean"] == 1.0


def test_rows_carry_kv_bytes_and_server_metrics(agent_runs: dict[str, Path]) -> None:
    row = steps(agent_runs["cache_aware"])[3]
    assert set(row["kv_bytes"]) == {"gpt-oss-120b", "nemotron-3-nano-30b-a3b"}
    assert row["kv_bytes"]["gpt-oss-120b"] > row["kv_bytes"]["nemotron-3-nano-30b-a3b"] > 0
    assert row["server_kv_usage_perc"] is not None
    assert row["context_bytes"] > 0 and row["latency_s"] > 0


def test_kvlab_compare_and_agents_compare_read_the_runs(agent_runs: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from kvlab.cli.app import build_app

    runner = CliRunner()
    dirs = [str(agent_runs[s]) for s in ("naive", "extract", "cache_aware")]
    res = runner.invoke(build_app(("compare",)), ["compare", *dirs])
    assert res.exit_code == 0, res.output
    res = runner.invoke(build_app(("agents",)), ["agents", "compare", *dirs])
    assert res.exit_code == 0, res.output
    assert "| cache_aware | 1/1 |" in res.output and "decisions scripted" in res.output
