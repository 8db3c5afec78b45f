"""ContextBudget on LangChain's message types and LangGraph's add_messages reducer."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

pytest.importorskip("langgraph")

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import add_messages

from kvlab.agents.budget import NOTES_HEADING, ContextBudget, key_lines
from kvlab.errors import ConfigError


def chars(msgs: Sequence[BaseMessage]) -> int:
    """A token counter for tests: one token per character of content."""
    return sum(len(str(m.content)) for m in msgs)


def turn(i: int, output: str) -> list[BaseMessage]:
    call = {"name": "t", "args": {"i": i}, "id": f"c{i}"}
    return [
        AIMessage(content="", tool_calls=[call], id=f"a{i}"),
        ToolMessage(content=output, tool_call_id=f"c{i}", id=f"t{i}"),
    ]


def history(*outputs: str, boundary_after: int | None = None) -> list[BaseMessage]:
    msgs: list[BaseMessage] = [SystemMessage("sys", id="s"), HumanMessage("go", id="h")]
    for i, out in enumerate(outputs):
        msgs += turn(i, out)
        if boundary_after == i:
            msgs.append(HumanMessage("next", id=f"h{i}"))
    return msgs


def pairs_valid(msgs: Sequence[BaseMessage]) -> bool:
    calls = {tc["id"] for m in msgs if isinstance(m, AIMessage) for tc in m.tool_calls}
    answers = {m.tool_call_id for m in msgs if isinstance(m, ToolMessage)}
    return calls == answers


REPORT = "Title\n| Revenue | 1,234.5 | 2,000.1 |\nprose without figures\n| EBITDA | 99.5 | 3.2 |\n"


def test_key_lines_keeps_decimal_lines_only() -> None:
    assert key_lines(REPORT, 1000) == "| Revenue | 1,234.5 | 2,000.1 |\n| EBITDA | 99.5 | 3.2 |"
    assert key_lines("## Page 1.5\nnothing", 5) == "## Pa"


def test_none_keeps_everything_under_budget() -> None:
    msgs = history("x" * 50, "y" * 50)
    assert ContextBudget(10_000, "none", count_tokens=chars).apply(msgs) == msgs


def test_clip_cuts_every_output() -> None:
    out = ContextBudget(10_000, "clip", clip_chars=10, count_tokens=chars).apply(
        history("a" * 50, "b" * 5)
    )
    assert out[3].content == "[clipped] " + "a" * 10
    assert out[5].content == "b" * 5
    assert pairs_valid(out)


def test_extract_stubs_seen_outputs_and_keeps_notes_in_system() -> None:
    msgs = history(REPORT, "fresh 1.5")
    out = ContextBudget(10_000, "extract", count_tokens=chars).apply(msgs)
    assert out[3].content.startswith("[compacted]")
    assert out[5].content == "fresh 1.5"  # not seen by the model yet
    assert NOTES_HEADING in out[0].content and "| EBITDA | 99.5 | 3.2 |" in out[0].content
    again = ContextBudget(10_000, "extract", count_tokens=chars).apply(
        [*out, AIMessage("ok", id="z")]
    )
    assert again[0].content.count("1,234.5") == 1 and "fresh 1.5" in again[0].content


def test_window_clears_all_but_the_last_k() -> None:
    out = ContextBudget(10_000, "window", window=1, count_tokens=chars).apply(
        history("a", "b", "c")
    )
    assert [m.content for m in out if isinstance(m, ToolMessage)] == [
        "[cleared]",
        "[cleared]",
        "c",
    ]


def test_cache_aware_folds_only_at_a_boundary_and_keeps_the_prefix() -> None:
    budget = ContextBudget(10_000, "cache_aware", count_tokens=chars)
    inside = history(REPORT, "2.5 more")
    assert budget.apply(inside) == inside  # no boundary yet: append-only
    crossed = [*inside, HumanMessage("next company", id="hn")]
    out = budget.apply(crossed)
    assert out[:2] == crossed[:2]  # prefix untouched
    assert isinstance(out[2], AIMessage) and not out[2].tool_calls
    assert "| Revenue | 1,234.5 | 2,000.1 |" in out[2].content and "2.5 more" in out[2].content
    assert out[3:] == crossed[-1:]
    assert pairs_valid(out)
    # A second block: the first note stays byte-identical.
    later = [*out, *turn(7, "7.5 new"), HumanMessage("again", id="hx")]
    out2 = budget.apply(later)
    assert out2[:4] == out[:4]
    assert "7.5 new" in out2[4].content


def test_budget_drops_oldest_whole_pairs() -> None:
    msgs = history("a" * 40, "b" * 40, "c" * 40)
    out = ContextBudget(100, "none", count_tokens=chars).apply(msgs)
    assert chars(out) <= 100
    assert pairs_valid(out)
    assert out[-1].content == "c" * 40 and out[0].content == "sys"


def test_budget_cuts_a_single_huge_output() -> None:
    out = ContextBudget(100, "none", count_tokens=chars).apply(history("z" * 1000))
    assert chars(out) <= 100 and pairs_valid(out)


def test_updates_through_add_messages() -> None:
    msgs = add_messages([], history("a" * 40, "b" * 40, "c" * 40))
    budget = ContextBudget(100, "clip", clip_chars=20, count_tokens=chars)
    merged = add_messages(msgs, budget({"messages": msgs})["messages"])
    assert [m.content for m in merged] == [m.content for m in budget.apply(msgs)]
    assert pairs_valid(merged)


def test_updates_with_a_note_replace_the_whole_list() -> None:
    msgs = add_messages([], [*history(REPORT), HumanMessage("next", id="n")])
    budget = ContextBudget(10_000, "cache_aware", count_tokens=chars)
    merged = add_messages(msgs, budget.updates(msgs))
    assert [m.content for m in merged] == [m.content for m in budget.apply(msgs)]


def test_updates_need_ids_and_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        ContextBudget(100, "none").updates([HumanMessage("x")])
    with pytest.raises(ConfigError):
        ContextBudget(100, "bogus")
    with pytest.raises(ConfigError):
        ContextBudget(0, "none")
    assert ContextBudget(100, "extract", cache_aware=True).effective_strategy == "cache_aware"


def test_default_counter_is_langchains_approximation() -> None:
    assert ContextBudget(10, "none").tokens([HumanMessage("x" * 400)]) > 90


def test_drop_in_node_in_a_users_graph() -> None:
    """The docs' example shape: MessagesState, a model node, a tool node, the budget."""

    turns = {"n": 0}

    def model(state: MessagesState) -> dict:
        turns["n"] += 1
        if turns["n"] > 6:
            return {"messages": [AIMessage("done")]}
        call = {"name": "fetch", "args": {"n": turns["n"]}, "id": f"c{turns['n']}"}
        return {"messages": [AIMessage("", tool_calls=[call])]}

    def tools(state: MessagesState) -> dict:
        call = state["messages"][-1].tool_calls[0]
        out = f"report {call['args']['n']}\n| Revenue | {call['args']['n']}.5 |\n" + "words " * 80
        return {"messages": [ToolMessage(out, tool_call_id=call["id"]), HumanMessage("next")]}

    def route(state: MessagesState) -> str:
        return "tools" if state["messages"][-1].tool_calls else END

    budget = ContextBudget(max_tokens=1200, strategy="cache_aware", count_tokens=chars)
    g = StateGraph(MessagesState)
    g.add_node("model", model)
    g.add_node("tools", tools)
    g.add_node("budget", budget)
    g.add_edge(START, "model")
    g.add_conditional_edges("model", route, ["tools", END])
    g.add_edge("tools", "budget")
    g.add_edge("budget", "model")
    final = g.compile().invoke({"messages": [SystemMessage("sys"), HumanMessage("go")]})
    msgs = final["messages"]
    assert chars(msgs) <= 1200 + len("done")
    assert pairs_valid(msgs)
    notes = [m for m in msgs if isinstance(m, AIMessage) and "[compacted]" in str(m.content)]
    assert notes and all("| Revenue |" in str(n.content) for n in notes)
    assert msgs[0].content == "sys" and msgs[1].content == "go"
