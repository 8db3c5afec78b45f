"""The strategies' graphs offline (no server): context growth, valid pairs, the workload."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langchain.agents.middleware")

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from kvlab.agents.emit import answer, message_tokens, offline_contexts, workload
from kvlab.agents.graph import STRATEGY_NAMES, StrategyConfig, build_graph
from kvlab.agents.live import classify_overflow
from kvlab.agents.workflow import Workflow, WorkflowConfig
from kvlab.errors import ConfigError

WF = WorkflowConfig(num_companies=3, pages=4, page_words=200, mc_runs=100)
ST = StrategyConfig(budget_tokens=2500, clip_chars=300, window=1)


def prompt(msgs: Sequence[BaseMessage]) -> int:
    return sum(message_tokens(m) for m in msgs)


def pairs_valid(msgs: Sequence[BaseMessage]) -> bool:
    calls = [tc["id"] for m in msgs if isinstance(m, AIMessage) for tc in m.tool_calls]
    answers = [m.tool_call_id for m in msgs if isinstance(m, ToolMessage)]
    return sorted(calls) == sorted(answers) and len(set(calls)) == len(calls)


@pytest.fixture(scope="module")
def runs() -> dict[str, list]:
    return {s: offline_contexts(s, WF, ST) for s in STRATEGY_NAMES}


def test_every_strategy_runs_the_whole_workflow(runs: dict[str, list]) -> None:
    for s, calls in runs.items():
        agent = [c for c in calls if c.kind == "agent"]
        assert len(agent) == WF.num_model_calls, s
        assert [c.step for c in agent] == list(range(WF.num_model_calls))


def test_sent_contexts_keep_tool_pairs_valid(runs: dict[str, list]) -> None:
    for s, calls in runs.items():
        for c in calls:
            if c.kind == "agent":
                assert pairs_valid(c.messages), (s, c.step)


def test_naive_grows_by_the_report_and_compacting_stay_under_budget(runs: dict) -> None:
    naive = [prompt(c.messages) for c in runs["naive"]]
    report = message_tokens(runs["naive"][1].messages[-1])
    assert report > 1000
    # After each fetch the prompt has grown by at least the report.
    assert naive[5] - naive[4] >= report * 0.9
    assert naive == sorted(naive)
    for s in ("clip", "extract", "window", "cache_aware"):
        sizes = [prompt(c.messages) for c in runs[s] if c.kind == "agent"]
        assert max(sizes) <= ST.budget_tokens + 50, s
        assert max(sizes) < max(naive) / 2, s


def test_cache_aware_is_append_only_inside_a_block(runs: dict) -> None:
    calls = [c for c in runs["cache_aware"] if c.kind == "agent"]
    # Calls 1..3 work on the first company: each context extends the previous one.
    for a, b in itertools.pairwise(calls[1:4]):
        assert b.messages[: len(a.messages)] == a.messages


def test_summarize_makes_summary_calls(runs: dict) -> None:
    assert any(c.kind == "summary" for c in runs["summarize"])


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown strategy"):
        build_graph("bogus", Workflow(WF), lambda *a: None, ST)  # type: ignore[arg-type,return-value]


def test_workload_shares_prefixes_and_the_simulator_answers(runs: dict) -> None:
    calls = {s: runs[s] for s in ("naive", "cache_aware", "extract")}
    wl = workload(calls)
    assert {r.cls for r in wl.requests} == set(calls)
    naive = [r for r in wl.requests if r.cls == "naive"]
    # Naive: each request's segments start with the previous request's.
    assert naive[3].segments[: len(naive[2].segments)] == naive[2].segments
    rows = answer(calls, models=("llama-3.1-8b",), gpus=("h100",))
    by = {r.strategy: r for r in rows}
    assert by["naive"].overflow_step is None  # 3 small reports fit 128k
    assert by["naive"].prefix_hit_rate > by["extract"].prefix_hit_rate
    assert by["cache_aware"].prefix_hit_rate > by["extract"].prefix_hit_rate
    assert by["cache_aware"].agents_that_fit >= by["naive"].agents_that_fit


def test_offline_overflow_step_on_a_short_context() -> None:
    wf = WorkflowConfig(num_companies=2, pages=30, page_words=400, mc_runs=100)
    calls = {"naive": offline_contexts("naive", wf, StrategyConfig())}
    rows = answer(calls, models=("llama-3.1-8b",), gpus=("h100",))
    # Two reports of ~30 pages fit in 128k; make sure the answer agrees with the sizes.
    sizes = [prompt(c.messages) for c in calls["naive"]]
    expect = next((i for i, n in enumerate(sizes) if n + 64 > 131072), None)
    assert rows[0].overflow_step == expect


@pytest.mark.parametrize(
    ("msg", "kind"),
    [
        ("max_tokens must be at least 1, got -94365.", "negative_max_tokens"),
        (
            "This model's maximum context length is 2048 tokens. However, your prompt "
            "contains at least 2049 input tokens",
            "context_length",
        ),
        (
            "'max_tokens' is too large: 100. This model's maximum context length is 256",
            "context_length",
        ),
        ("unknown field 'foo'", None),
    ],
)
def test_classify_overflow(msg: str, kind: str | None) -> None:
    assert classify_overflow(msg) == kind
