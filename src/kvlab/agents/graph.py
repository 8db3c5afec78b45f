"""The workflow's LangGraph graphs: one per strategy, same nodes, two ways of deciding.

``agent -> tools -> compact -> agent ...`` until the final answer, an overflow or the
step limit:

``agent``
    sends the whole context the strategy keeps to the model (a real request through
    ``send``) and appends an ``AIMessage``. Who decides (``decisions``):

    * ``scripted``: the tool call is the :class:`ScriptedPolicy`'s decision at this
      step; the model's text is kept, the model is not offered tools.
    * ``model``: the model is offered the five tools (OpenAI tool calling) and its own
      ``tool_calls`` are the decision. The run ends when the model answers without a
      tool call (complete when it has written the masterplan, else ``no_tool_call``),
      or at ``max_steps`` model calls (``step_limit``, not complete).

    A :class:`~kvlab.errors.ContextOverflow` from the server ends the run there.
``tools``
    answers every tool call of the last ``AIMessage`` with exactly one ``ToolMessage``
    (same ``tool_call_id``). A model's call that cannot run (unknown tool, arguments
    that are not JSON, a missing or wrongly typed argument: :func:`check_tool_call`) is
    answered with an error ``ToolMessage`` and counted in ``invalid_calls``; a tool that
    fails on valid arguments (a report not fetched yet, a division by zero) is answered
    with an error and counted in ``tool_errors``. After a company's last tool a
    ``HumanMessage`` marks the block boundary the cache-aware strategy compacts at
    (scripted: naming the next company; model: when the company's four tools have run).
``compact``
    the strategy: a :class:`ContextBudget` (``naive`` is ``none`` without a budget),
    our ``summarize`` (a real model call writes the summary) or LangChain's
    ``SummarizationMiddleware`` (``lc_summarize``). LangChain's
    ``ContextEditingMiddleware``'s ``ClearToolUsesEdit`` (``lc_context_edit``) edits
    the request, not the state, as that middleware does.

State: ``messages`` reduced by LangGraph's ``add_messages`` (replacement by id,
``RemoveMessage``, ``REMOVE_ALL_MESSAGES``); ``results`` (tool results by
``tool:company``) merged key by key; ``step`` the number of model calls made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from kvlab.agents.budget import ContextBudget
from kvlab.agents.workflow import (
    COMPANY_TOOLS,
    FINAL_TOOL,
    SYSTEM_PROMPT,
    ScriptedPolicy,
    Workflow,
    check_tool_call,
    workflow_facts,
)
from kvlab.errors import ConfigError, ContextOverflow, KvlabError, ServerError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

#: Strategies of ``kvlab agents run``, in table order.
STRATEGY_NAMES: tuple[str, ...] = (
    "naive",
    "clip",
    "extract",
    "window",
    "summarize",
    "lc_summarize",
    "lc_context_edit",
    "cache_aware",
)
#: Who decides the tool calls (``--decisions``).
DECISION_MODES: tuple[str, ...] = ("scripted", "model")
#: How a run can end: the final answer, the server's 400, the step limit, a model that
#: answered without a tool call before writing the masterplan, a server that refused
#: the tools.
END_REASONS: tuple[str, ...] = ("done", "overflow", "step_limit", "no_tool_call", "tools_refused")


class ToolsRefused(ServerError):
    """The server refused a request that offers tools (HTTP 400), e.g. vLLM served
    without ``--enable-auto-tool-choice --tool-call-parser NAME``."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A model's answer to one call: its text and the server's usage figures."""

    content: str
    prompt_tokens: int | None
    cached_tokens: int | None
    output_tokens: int | None
    #: The model's parsed tool calls (LangChain ``ToolCall`` dicts: name, args, id).
    tool_calls: tuple[dict[str, Any], ...] = ()
    #: Tool calls whose arguments were not JSON (LangChain ``InvalidToolCall`` dicts).
    invalid_tool_calls: tuple[dict[str, Any], ...] = ()


#: ``send(messages, step, company, kind) -> Reply``; raises ContextOverflow on a 400.
Sender = Callable[[Sequence["BaseMessage"], int, "str | None", str], Reply]


def merge_results(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    """Reducer of ``results``: right's keys replace left's, others are kept."""
    return {**left, **right}


def state_type() -> type:
    """The graph's state schema, with its reducers (built on first use: langgraph is an
    extra). ``messages``: ``add_messages``; ``results``: :func:`merge_results`."""
    from langchain_core.messages import AnyMessage
    from langgraph.graph.message import add_messages

    return TypedDict(  # type: ignore[operator]
        "AgentState",
        {
            "messages": Annotated[list[AnyMessage], add_messages],
            "results": Annotated[dict[str, Any], merge_results],
            "step": int,
            "stop": str | None,
            "plan_context": str | None,
            "company": str | None,
            "tool_calls": int,
            "invalid_calls": int,
            "tool_errors": int,
            "done_tools": dict[str, list[str]],
        },
    )


@dataclass(frozen=True)
class StrategyConfig:
    """The knobs of the strategies: ``budget_tokens`` (every compacting strategy),
    ``clip_chars``, ``window`` (tool outputs kept raw), ``summary_trigger_tokens``."""

    budget_tokens: int = 100_000
    clip_chars: int = 1200
    window: int = 2
    summary_trigger_tokens: int | None = None
    summary_keep_messages: int = 4

    @property
    def trigger(self) -> int:
        return self.summary_trigger_tokens or int(self.budget_tokens * 0.75)


def context_text(messages: Sequence[BaseMessage]) -> str:
    """The text a context carries: contents and tool-call arguments, one message a line."""
    parts = []
    for m in messages:
        parts.append(m.content if isinstance(m.content, str) else json.dumps(m.content))
        for tc in getattr(m, "tool_calls", None) or []:
            parts.append(json.dumps(tc["args"], sort_keys=True))
        for tc in getattr(m, "invalid_tool_calls", None) or []:
            parts.append(str(tc.get("args") or ""))
    return "\n".join(parts)


def initial_messages(workflow: Workflow) -> list[BaseMessage]:
    from langchain_core.messages import HumanMessage, SystemMessage

    names = ", ".join(c.name for c in workflow.companies)
    return [
        SystemMessage(SYSTEM_PROMPT),
        HumanMessage(f"Analyse these companies: {names}. Start with {workflow.companies[0].name}."),
    ]


def build_graph(
    strategy: str,
    workflow: Workflow,
    send: Sender,
    config: StrategyConfig,
    *,
    count_tokens: Callable[[Sequence[BaseMessage]], int] | None = None,
    summary_model: Any = None,
    decisions: str = "scripted",
    max_steps: int | None = None,
) -> Any:
    """The compiled graph of ``strategy`` (see :data:`STRATEGY_NAMES`); ``decisions``
    one of :data:`DECISION_MODES`; ``max_steps`` model calls at most (default:
    :func:`default_max_steps`)."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.graph import END, START, StateGraph

    if strategy not in STRATEGY_NAMES:
        raise ConfigError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGY_NAMES)}"
        )
    if decisions not in DECISION_MODES:
        raise ConfigError(
            f"unknown decisions {decisions!r}; choose one of {', '.join(DECISION_MODES)}"
        )
    limit = default_max_steps(workflow) if max_steps is None else max_steps
    if limit < 1:
        raise ConfigError(f"max_steps must be >= 1, got {limit}")
    policy = ScriptedPolicy(workflow)
    request_edit = _request_edit(strategy, config, count_tokens)

    def agent(state: dict[str, Any]) -> dict[str, Any]:
        step = state["step"]
        if step >= limit:
            return {"stop": "step_limit", "plan_context": context_text(state["messages"])}
        decision = policy.decide(step, state["results"])
        msgs = list(state["messages"])
        if request_edit is not None:
            msgs = request_edit(msgs)
        update: dict[str, Any] = {}
        if decision.tool == FINAL_TOOL:
            update["plan_context"] = context_text(msgs)
        try:
            reply = send(msgs, step, decision.company, "agent")
        except ContextOverflow:
            return {**update, "stop": "overflow", "plan_context": context_text(msgs)}
        calls = []
        if decision.tool is not None:
            calls = [{"name": decision.tool, "args": decision.args, "id": f"call_{step}"}]
        ai = AIMessage(content=reply.content, tool_calls=calls)
        return {**update, "messages": [ai], "step": step + 1, "stop": None if calls else "done"}

    def agent_model(state: dict[str, Any]) -> dict[str, Any]:
        step = state["step"]
        msgs = list(state["messages"])
        if step >= limit:
            msgs_text = context_text(msgs)
            return {"stop": "step_limit", "plan_context": state.get("plan_context") or msgs_text}
        if request_edit is not None:
            msgs = request_edit(msgs)
        try:
            reply = send(msgs, step, state.get("company"), "agent")
        except ContextOverflow:
            return {"stop": "overflow", "plan_context": context_text(msgs)}
        except ToolsRefused:
            return {"stop": "tools_refused", "plan_context": context_text(msgs)}
        calls, invalid = model_calls(reply, step)
        ai = AIMessage(content=reply.content, tool_calls=calls, invalid_tool_calls=invalid)
        update: dict[str, Any] = {"messages": [ai], "step": step + 1, "stop": None}
        if workflow.masterplan is None or any(c["name"] == FINAL_TOOL for c in calls):
            # Retention: the context the model held when it (last) wrote the masterplan,
            # or its latest context when it has not written one.
            update["plan_context"] = context_text(msgs)
        if not calls and not invalid:
            update["stop"] = "done" if workflow.masterplan is not None else "no_tool_call"
        return update

    def tools(state: dict[str, Any]) -> dict[str, Any]:
        last = state["messages"][-1]
        out: list[Any] = []
        results: dict[str, Any] = {}
        company = state.get("company")
        done = {k: list(v) for k, v in (state.get("done_tools") or {}).items()}
        invalid = errors = 0
        boundaries: list[str] = []
        bad_json = getattr(last, "invalid_tool_calls", None) or []
        for tc in last.tool_calls:
            name, args = tc["name"], tc["args"]
            why = check_tool_call(name, args)
            if why is not None:
                invalid += 1
                out.append(_error_message(tc["id"], name, why))
                continue
            try:
                text = workflow.call(name, args)
            except (KvlabError, ValueError, ArithmeticError) as e:
                errors += 1
                out.append(_error_message(tc["id"], name, str(e)))
                continue
            if isinstance(args.get("company"), str):
                company = args["company"]
            out.append(ToolMessage(content=text, tool_call_id=tc["id"], name=name))
            if name in ("extract_figures", "run_monte_carlo"):
                results[f"{name}:{args['company']}"] = json.loads(text)
            if name in COMPANY_TOOLS and company is not None:
                seen = done.setdefault(company, [])
                if name not in seen:
                    seen.append(name)
                    if len(seen) == len(COMPANY_TOOLS):
                        finished = sum(len(v) == len(COMPANY_TOOLS) for v in done.values())
                        boundaries.append(
                            f"Finished {company} ({finished} of {len(workflow.companies)})."
                        )
        for tc in bad_json:
            invalid += 1
            why = f"arguments are not valid JSON: {str(tc.get('args'))[:80]!r}"
            out.append(_error_message(tc["id"], tc.get("name"), why))
        if decisions == "scripted":
            boundary = _next_company(workflow, state["step"])
            if boundary is not None:
                out.append(HumanMessage(f"Next company: {boundary}."))
        else:
            out.extend(HumanMessage(b) for b in boundaries)
        return {
            "messages": out,
            "results": results,
            "company": company,
            "done_tools": done,
            "tool_calls": state.get("tool_calls", 0) + len(last.tool_calls) + len(bad_json),
            "invalid_calls": state.get("invalid_calls", 0) + invalid,
            "tool_errors": state.get("tool_errors", 0) + errors,
        }

    def route(state: dict[str, Any]) -> str:
        return END if state.get("stop") else "tools"

    g: Any = StateGraph(state_type())
    g.add_node("agent", agent if decisions == "scripted" else agent_model)
    g.add_node("tools", tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["tools", END])
    compact = _compact_node(strategy, config, count_tokens, summary_model, send)
    if compact is None:
        g.add_edge("tools", "agent")
    else:
        g.add_node("compact", compact)
        g.add_edge("tools", "compact")
        g.add_edge("compact", "agent")
    return g.compile()


def default_max_steps(workflow: Workflow) -> int:
    """The step limit of a model-driven run: 4x the scripted run's model calls."""
    return 4 * workflow.config.num_model_calls


def model_calls(reply: Reply, step: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's tool calls as an ``AIMessage`` carries them: valid ones (arguments a
    JSON object) and invalid ones (arguments not JSON, or JSON but not an object). Every
    call gets an id unique in the message (``call_STEP_K`` when the model gave none or
    repeated one), so each is answered by exactly one ``ToolMessage``."""
    seen: set[str] = set()
    calls: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []

    def fresh(raw: Any, k: int) -> str:
        cid = raw if isinstance(raw, str) and raw and raw not in seen else f"call_{step}_{k}"
        seen.add(cid)
        return cid

    for k, tc in enumerate(reply.tool_calls):
        cid = fresh(tc.get("id"), k)
        name = str(tc.get("name") or "")
        if isinstance(tc.get("args"), dict):
            calls.append({"name": name, "args": tc["args"], "id": cid, "type": "tool_call"})
        else:
            invalid.append({"name": name, "args": json.dumps(tc.get("args")), "id": cid,
                            "error": "arguments are not a JSON object",
                            "type": "invalid_tool_call"})  # fmt: skip
    for k, tc in enumerate(reply.invalid_tool_calls, start=len(reply.tool_calls)):
        invalid.append({**tc, "id": fresh(tc.get("id"), k), "type": "invalid_tool_call"})
    return calls, invalid


def _error_message(call_id: str, name: Any, why: str) -> Any:
    """The ToolMessage answering a call that could not run (``status="error"``)."""
    from langchain_core.messages import ToolMessage

    return ToolMessage(
        content=f"error: {why}",
        tool_call_id=call_id,
        name=str(name) if name else None,
        status="error",
    )


def _next_company(workflow: Workflow, step_after: int) -> str | None:
    """The next company's name when the call just answered (``step_after - 1``) was a
    company's last tool and another company follows."""
    n = len(COMPANY_TOOLS)
    done = step_after  # model calls made; tool calls answered == done
    if done % n or done // n >= len(workflow.companies):
        return None
    return workflow.companies[done // n].name


def budget_for(
    strategy: str, config: StrategyConfig, count_tokens: Callable[..., int] | None
) -> ContextBudget | None:
    """The ContextBudget a strategy compacts with (None: naive and the LLM strategies)."""
    kinds = {"clip": "clip", "extract": "extract", "window": "window", "cache_aware": "cache_aware"}
    if strategy not in kinds:
        return None
    return ContextBudget(
        max_tokens=config.budget_tokens,
        strategy=kinds[strategy],
        clip_chars=config.clip_chars,
        window=config.window,
        count_tokens=count_tokens,
        facts=workflow_facts,
    )


def _compact_node(
    strategy: str,
    config: StrategyConfig,
    count_tokens: Callable[..., int] | None,
    summary_model: Any,
    send: Sender,
) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    budget = budget_for(strategy, config, count_tokens)
    if budget is not None:
        return budget
    if strategy == "summarize":
        return _Summarizer(config, budget_for("clip", config, count_tokens), send, count_tokens)
    if strategy == "lc_summarize":
        from langchain.agents.middleware import SummarizationMiddleware
        from langchain_core.messages.utils import count_tokens_approximately

        if summary_model is None:
            raise ConfigError("lc_summarize needs a chat model for its summaries")
        mw = SummarizationMiddleware(
            model=summary_model,
            trigger=("tokens", config.trigger),
            keep=("messages", config.summary_keep_messages),
            token_counter=count_tokens or count_tokens_approximately,
            trim_tokens_to_summarize=config.budget_tokens // 2,
        )

        def lc_summarize(state: dict[str, Any]) -> dict[str, Any]:
            return mw.before_model(state, None) or {}  # type: ignore[arg-type]

        return lc_summarize
    return None


def _request_edit(
    strategy: str, config: StrategyConfig, count_tokens: Callable[..., int] | None
) -> Callable[[list[BaseMessage]], list[BaseMessage]] | None:
    """LangChain's ClearToolUsesEdit applied to a copy of the request's messages."""
    if strategy != "lc_context_edit":
        return None
    from copy import deepcopy

    from langchain.agents.middleware import ClearToolUsesEdit, ContextEditingMiddleware
    from langchain_core.messages.utils import count_tokens_approximately

    mw = ContextEditingMiddleware(
        edits=[ClearToolUsesEdit(trigger=config.trigger, keep=config.window)],
        token_counter=count_tokens,
    )
    counter = count_tokens or count_tokens_approximately

    def edit(msgs: list[BaseMessage]) -> list[BaseMessage]:
        edited = deepcopy(msgs)
        for e in mw.edits:
            e.apply(edited, count_tokens=counter)  # type: ignore[arg-type]
        return edited

    return edit


class _Summarizer:
    """``summarize``: above the trigger, the messages between the leading two and the
    last ``summary_keep_messages`` (moved back to a tool-call boundary) are replaced by
    one HumanMessage holding the model's summary of them (a real model call, ``kind``
    "summary"); the budget is then enforced by clipping."""

    def __init__(
        self,
        config: StrategyConfig,
        budget: ContextBudget | None,
        send: Sender,
        count_tokens: Callable[..., int] | None,
    ) -> None:
        self.config = config
        self.budget = budget
        self.send = send
        self.count_tokens = count_tokens

    def _tokens(self, msgs: Sequence[BaseMessage]) -> int:
        if self.count_tokens is not None:
            return int(self.count_tokens(msgs))
        from langchain_core.messages.utils import count_tokens_approximately

        return int(count_tokens_approximately(msgs))

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        from langchain_core.messages import HumanMessage, RemoveMessage
        from langgraph.graph.message import REMOVE_ALL_MESSAGES

        msgs = list(state["messages"])
        if self._tokens(msgs) <= self.config.trigger:
            return {}
        cut = max(2, len(msgs) - self.config.summary_keep_messages)
        while cut < len(msgs) and msgs[cut].type == "tool":
            cut += 1  # never separate a tool message from its call
        old = msgs[2:cut]
        if not old:
            return {}
        clip = self.budget.apply if self.budget is not None else list
        prompt = [
            *msgs[:1],
            *clip(old),
            HumanMessage("Summarize the work above: keep every figure."),
        ]
        try:
            reply = self.send(prompt, state["step"], None, "summary")
            text = reply.content
        except ContextOverflow:
            text = ""
        summary = HumanMessage(f"Summary of earlier work: {text}")
        kept = [*msgs[:2], summary, *msgs[cut:]]
        if self.budget is not None:
            kept = self.budget.apply(kept)
        return {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *kept]}
