"""The model's tool calls: argument checks (property tests) and ids made unique."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlab.agents.workflow import TOOL_ARGS, TOOL_NAMES, check_tool_call, tool_schemas

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(name=st.one_of(st.sampled_from(TOOL_NAMES), st.text(max_size=12), st.none()), args=JSON)
def test_check_tool_call_never_raises(name: Any, args: Any) -> None:
    why = check_tool_call(name, args)
    assert why is None or (isinstance(why, str) and why)
    if name not in TOOL_NAMES:
        assert why is not None and "unknown tool" in why


def _value(kind: str) -> Any:
    return st.text(max_size=8) if kind == "string" else st.floats(allow_nan=False) | st.integers()


@st.composite
def valid_call(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(TOOL_NAMES))
    return name, {a: draw(_value(t)) for a, t in TOOL_ARGS[name].items()}


@given(call=valid_call())
def test_arguments_of_the_declared_types_are_accepted(call: tuple[str, dict[str, Any]]) -> None:
    name, args = call
    assert check_tool_call(name, args) is None
    arg = next(iter(args))
    wrong = {**args, arg: [1] if isinstance(args[arg], str) else "x"}
    assert f"argument {arg} must be a" in str(check_tool_call(name, wrong))
    assert "missing argument" in str(
        check_tool_call(name, {k: v for k, v in args.items() if k != arg})
    )
    assert "unexpected argument" in str(check_tool_call(name, {**args, "extra": 1}))


def test_booleans_are_not_numbers_and_schemas_match_the_checks() -> None:
    args = {"company": "A", "assets": True, "liabilities": 1.0, "contribution": 1}
    assert "assets must be a number" in str(check_tool_call("run_monte_carlo", args))
    for schema in tool_schemas():
        f = schema["function"]
        assert f["parameters"]["required"] == list(TOOL_ARGS[f["name"]])


def test_model_calls_get_unique_ids_and_non_object_arguments_are_invalid() -> None:
    pytest.importorskip("langgraph")
    from kvlab.agents.graph import Reply, model_calls

    reply = Reply(
        "",
        1,
        0,
        1,
        tool_calls=(
            {"name": "calc", "args": {"expression": "1+1"}, "id": "a"},
            {"name": "calc", "args": {"expression": "2"}, "id": "a"},
            {"name": "calc", "args": [1, 2], "id": None},
        ),
        invalid_tool_calls=({"name": "calc", "args": "{x", "id": "a", "error": None},),
    )
    calls, invalid = model_calls(reply, 7)
    ids = [c["id"] for c in calls] + [c["id"] for c in invalid]
    assert ids == ["a", "call_7_1", "call_7_2", "call_7_3"]
    assert [c["args"] for c in calls] == [{"expression": "1+1"}, {"expression": "2"}]
    assert invalid[0]["args"] == "[1, 2]" and invalid[1]["args"] == "{x"
