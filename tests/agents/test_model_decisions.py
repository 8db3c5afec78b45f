"""``--decisions model``: a model's own tool calls drive the graph.

A stub OpenAI-compatible server plays the model (the served model name picks its
behaviour). ``capable`` decides from the context it is sent, as a model would: it reads
the last tool result and the boundary messages, fetches each company's report, extracts
its figures, runs the Monte Carlo and ``calc`` on the figures it read, then writes a
masterplan from the figures it can still find in its context and answers without a tool
call. ``sloppy`` does the same with an unknown tool and malformed arguments on the way;
``looping`` only ever makes bad calls; ``silent`` never calls a tool. Every request is
checked for valid tool-call / tool-message pairs.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langchain_openai")
pytest.importorskip("langchain.agents.middleware")

from kvlab.agents.graph import STRATEGY_NAMES, StrategyConfig
from kvlab.agents.live import RunConfig, run
from kvlab.agents.report import fmt
from kvlab.agents.workflow import Workflow, WorkflowConfig

WF = WorkflowConfig(num_companies=3, pages=2, page_words=120, mc_runs=200)
ST = StrategyConfig(budget_tokens=4000, clip_chars=1200, window=1, summary_keep_messages=3)
ITEMS = ("Revenue", "EBITDA", "Plan assets", "Obligations")
_IDS = itertools.count()
#: vLLM's answer to a request offering tools when it has no tool-call parser.
REFUSAL = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'

_TASK = re.compile(r"Analyse these companies: ([^.]+)\.")
_FACTS = re.compile(r"(\w+) \d{4} \(EUR m\): ([^\n]+)")


def tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(m)) for m in messages) // 4 + 10


def _text(m: dict[str, Any]) -> str:
    parts = [m["content"] if isinstance(m.get("content"), str) else json.dumps(m.get("content"))]
    parts += [tc["function"]["arguments"] for tc in m.get("tool_calls") or []]
    return "\n".join(parts)


def figures_in(messages: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Company -> last-year figures the context still shows: extract_figures' JSON, the
    key-facts lines compaction writes, the Monte Carlo arguments."""
    found: dict[str, dict[str, float]] = {}
    for m in messages:
        if m["role"] == "tool" and str(m["content"]).startswith("{"):
            try:
                data = json.loads(m["content"])
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("EUR m, last year"), dict):
                found.setdefault(data["company"], {}).update(data["EUR m, last year"])
        for name, body in _FACTS.findall(_text(m)):
            for part in body.split(";"):
                k, _, v = part.strip().rpartition(" ")
                if k in ITEMS:
                    found.setdefault(name, {})[k] = float(v.replace(",", ""))
        for tc in m.get("tool_calls") or []:
            if tc["function"]["name"] == "run_monte_carlo":
                a = json.loads(tc["function"]["arguments"])
                fig = found.setdefault(a["company"], {})
                fig.setdefault("Plan assets", a["assets"])
                fig.setdefault("Obligations", a["liabilities"])
    return found


def pair_problems(messages: list[dict[str, Any]]) -> list[str]:
    """Every assistant tool call answered by exactly one tool message right after it,
    and no tool message without its call."""
    problems = []
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            j = i
            while j > 0 and messages[j - 1]["role"] == "tool":
                j -= 1
            prev = messages[j - 1] if j > 0 else {}
            ids = [tc["id"] for tc in prev.get("tool_calls") or []]
            if m.get("tool_call_id") not in ids:
                problems.append(f"tool message {i} answers no preceding call")
        for tc in m.get("tool_calls") or []:
            answers = [
                x
                for x in messages[i + 1 :]
                if x["role"] == "tool" and x.get("tool_call_id") == tc["id"]
            ]
            if len(answers) != 1:
                problems.append(f"call {tc['id']} answered {len(answers)} times")
    return problems


def _call(cid: str, name: str, args: Any) -> dict[str, Any]:
    raw = args if isinstance(args, str) else json.dumps(args)
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": raw}}


def decide(messages: list[dict[str, Any]], style: str) -> tuple[str, list[dict[str, Any]]]:
    """The stub model's answer: its text and tool calls, read off the context."""
    cid = f"c{next(_IDS)}"
    if style == "silent":
        return "I would rather not.", []
    if style == "broken":  # arguments that are never JSON, alone in the answer
        return "", [_call(cid, "calc", '{"expression": ' + "9" * 400)]
    if style == "looping":
        return "", [_call(cid + "a", "browse_web", {"url": "x"}), _call(cid + "b", "calc", "{1+")]
    last = messages[-1]
    calls: list[dict[str, Any]] = []
    if last["role"] == "user":
        named = task(messages)
        if named is None:
            return "I have lost track of the task.", []
        companies = named.split(", ")
        m = re.match(r"Finished \w+ \((\d+) of (\d+)\)", str(last["content"]))
        k = int(m.group(1)) if m else 0
        if k < len(companies):
            calls = [_call(cid, "fetch_annual_report", {"company": companies[k]})]
        else:
            calls = [_call(cid, "write_masterplan", {"plan": masterplan(messages, companies)})]
    else:
        j = len(messages) - 1
        while messages[j]["role"] == "tool":
            j -= 1
        ai = messages[j]
        done = {tc["id"]: tc for tc in ai.get("tool_calls") or []}
        first = messages[j + 1]
        tc = done[first["tool_call_id"]]
        name, args = tc["function"]["name"], json.loads(tc["function"]["arguments"])
        if name == "fetch_annual_report":
            calls = [_call(cid, "extract_figures", {"company": args["company"]})]
        elif name == "extract_figures":
            last_year = json.loads(first["content"])["EUR m, last year"]
            mc = {
                "company": args["company"],
                "assets": last_year["Plan assets"],
                "liabilities": last_year["Obligations"],
                "contribution": last_year["Contributions"],
            }
            calls = [_call(cid, "run_monte_carlo", mc)]
        elif name == "run_monte_carlo":
            calls = [
                _call(cid, "calc", {"expression": f"{args['assets']} / {args['liabilities']}"})
            ]
        elif name == "write_masterplan":
            return "The masterplan is written.", []
    named = task(messages)
    first_company = named.split(", ")[0] if named else None
    if (
        style == "sloppy"
        and calls
        and json.loads(calls[0]["function"]["arguments"]).get("company") == first_company
    ):  # the first company's first three steps
        extra = {
            "fetch_annual_report": _call(cid + "x", "browse_web", {"url": "https://example.org"}),
            "extract_figures": _call(cid + "y", "calc", '{"expression": 1 +'),
            "run_monte_carlo": _call(cid + "z", "run_monte_carlo", {"company": "X", "assets": "1"}),
        }
        first = calls[0]["function"]["name"] if calls else ""
        if first in extra:
            calls.append(extra[first])
        if first == "fetch_annual_report" and named:  # a report not fetched yet: tool error
            second = named.split(", ")[1]
            calls.append(_call(cid + "w", "extract_figures", {"company": second}))
    return "", calls


def task(messages: list[dict[str, Any]]) -> str | None:
    """The companies to analyse, as the context names them (a summary keeps the task)."""
    for m in messages:
        found = _TASK.search(_text(m))
        if found:
            return found.group(1)
    return None


def masterplan(messages: list[dict[str, Any]], companies: list[str]) -> str:
    figs = figures_in(messages)
    lines = ["Masterplan"]
    for c in companies:
        f = figs.get(c, {})
        cells = [f"{k} {fmt(f[k]) if k in f else 'unknown'}" for k in ITEMS]
        lines.append(f"{c}: " + ", ".join(cells))
    return "\n".join(lines)


class ModelStub(BaseHTTPRequestHandler):
    problems: ClassVar[list[str]] = []
    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(404, {"error": "no"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/tokenize":
            self._send(200, {"count": tokens(body["messages"])})
            return
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": "no"})
            return
        msgs = body["messages"]
        if body["model"] == "refusing" and body.get("tools"):
            self._send(400, {"error": {"message": REFUSAL, "type": "BadRequestError"}})
            return
        ModelStub.requests.append(body)
        ModelStub.problems += pair_problems(msgs)
        if body.get("tools"):
            text, calls = decide(msgs, body["model"])
        else:  # a summary: every figure the stub can see
            figs = figures_in(msgs)
            text = "\n".join(
                [f"Task: Analyse these companies: {task(msgs)}." if task(msgs) else ""]
                + [
                    f"{c} 2025 (EUR m): " + "; ".join(f"{k} {fmt(v)}" for k, v in f.items())
                    for c, f in figs.items()
                ]
            )
            calls = []
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        n = tokens(msgs)
        self._send(
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls" if calls else "stop",
                        "message": message,
                    }
                ],
                "usage": {
                    "prompt_tokens": n,
                    "completion_tokens": 5,
                    "total_tokens": n + 5,
                    "prompt_tokens_details": {"cached_tokens": n // 2},
                },
            },
        )


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ModelStub)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def config(strategy: str, endpoint: str, model: str, max_steps: int | None = None) -> RunConfig:
    return RunConfig(
        strategy=strategy,
        endpoint=endpoint,
        model=model,
        workflow=WF,
        strategies=ST,
        targets=("llama-3.1-8b",),
        timeout_s=30,
        decisions="model",
        max_steps=max_steps,
        reset_prefix_cache=False,
    )


def rows(d: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (d / "steps.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_capable_model_drives_every_strategy(endpoint: str, tmp_path: Path, strategy: str) -> None:
    ModelStub.problems = []
    rep = run(config(strategy, endpoint, "capable"), tmp_path, progress=None)
    assert ModelStub.problems == [], ModelStub.problems
    a = rep["agents"][0]
    assert rep["decided_by"] == "model" and "by the model" in rep["decisions"]
    assert a["end"] == "done" and a["completed"], a
    # 4 tools x 3 companies, the masterplan: 13 calls answered, 14 model calls.
    assert a["tool_calls"] == 13 and a["invalid_tool_calls"] == 0 and a["tool_errors"] == 0
    assert a["steps"] == 14
    agent_rows = [r for r in rows(tmp_path) if r["kind"] == "agent"]
    assert all(r["decided_by"] == "model" for r in agent_rows)
    made = [c["name"] for r in agent_rows for c in r["tool_calls"]]
    assert made.count("fetch_annual_report") == 3 and made[-1] == "write_masterplan"
    assert agent_rows[-1]["tool_calls"] == []
    # The model's Monte Carlo arguments are the figures it read.
    wf = Workflow(WF)
    first = next(c for r in agent_rows for c in r["tool_calls"] if c["name"] == "run_monte_carlo")
    assert first["args"]["assets"] == wf.companies[0].assets[-1]
    assert a["masterplan_fact_retention"] is not None
    if strategy in ("naive", "extract", "cache_aware", "summarize"):
        assert a["masterplan_fact_retention"] == 1.0, strategy


def test_window_loses_figures_the_masterplan_needs(endpoint: str, tmp_path: Path) -> None:
    """The masterplan is written from the context: window keeps one raw output, so the
    revenue and EBITDA of earlier companies are gone (the Monte Carlo arguments keep
    assets and obligations)."""
    rep = run(config("window", endpoint, "capable"), tmp_path, progress=None)
    kept = rep["agents"][0]["masterplan_fact_retention"]
    assert 0.5 <= kept < 1.0


def test_bad_tool_calls_are_answered_with_errors_and_counted(endpoint: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvlab.cli.app import build_app

    ModelStub.problems = []
    res = CliRunner().invoke(
        build_app(("agents",)),
        ["agents", "run", "--strategy", "cache_aware", "--decisions", "model",
         "--endpoint", endpoint, "--model", "sloppy", "--companies", "3", "--pages", "2",
         "--page-words", "120", "--mc-runs", "200", "--budget-tokens", "4000",
         "--target", "llama-3.1-8b", "--out", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert ModelStub.problems == []
    rep = json.loads((tmp_path / "agents.json").read_text())
    a = rep["agents"][0]
    assert a["end"] == "done" and a["invalid_tool_calls"] == 3 and a["tool_calls"] == 17
    assert rep["invalid_tool_calls"] == 3 and a["tool_errors"] == 1
    agent_rows = rows(tmp_path)
    assert [r["invalid_tool_calls"] for r in agent_rows[:3]] == [1, 1, 1]
    assert "unknown tool 'browse_web'" in agent_rows[0]["tool_calls"][1]["invalid"]
    assert "not valid JSON" in agent_rows[1]["tool_calls"][1]["invalid"]
    assert "missing argument liabilities" in agent_rows[2]["tool_calls"][1]["invalid"]
    # The errors went back to the model as tool messages with the calls' ids.
    second = ModelStub.requests[-len(agent_rows) + 1]["messages"]
    answers = {m["tool_call_id"]: m["content"] for m in second if m["role"] == "tool"}
    bad_id = agent_rows[0]["tool_calls"][1]["id"]
    assert answers[bad_id].startswith("error: unknown tool 'browse_web'")
    hasty = agent_rows[0]["tool_calls"][2]
    assert hasty["name"] == "extract_figures" and hasty["invalid"] is None
    assert answers[hasty["id"]] == (
        "error: extract_figures: the report of 'Brightwell' was not fetched"
    )
    assert "3 invalid, 1 tool errors" in res.stdout and "masterplan written" in res.stdout
    assert "decisions by the model" in res.stdout


def test_a_model_that_never_stops_hits_the_step_limit(endpoint: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvlab.cli.app import build_app

    res = CliRunner().invoke(
        build_app(("agents",)),
        ["agents", "run", "--strategy", "naive", "--decisions", "model", "--max-steps", "4",
         "--endpoint", endpoint, "--model", "looping", "--companies", "1", "--pages", "1",
         "--target", "llama-3.1-8b", "--out", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "agents.json").read_text())
    a = rep["agents"][0]
    assert a["end"] == "step_limit" and not a["completed"] and a["steps"] == 4
    assert a["invalid_tool_calls"] == 8 and a["tool_calls"] == 8
    assert "step limit: 4 model calls made without a final answer" in res.stdout
    assert "Traceback" not in res.output
    res = CliRunner().invoke(build_app(("agents",)), ["agents", "compare", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "| step_limit | 4 | 8 | 8 |" in res.stdout


def test_a_model_that_calls_no_tool_ends_at_step_1(endpoint: str, tmp_path: Path) -> None:
    rep = run(config("naive", endpoint, "silent"), tmp_path, progress=None)
    a = rep["agents"][0]
    assert a["end"] == "no_tool_call" and not a["completed"]
    assert a["end_detail"] == "model made no tool call at step 1 (no masterplan written)"
    assert rows(tmp_path)[0]["tool_calls"] == [] and a["masterplan_fact_retention"] is None


def test_a_server_that_refuses_tools_ends_the_run_with_its_reason(
    endpoint: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from kvlab.cli.app import build_app

    res = CliRunner().invoke(
        build_app(("agents",)),
        ["agents", "run", "--strategy", "clip", "--decisions", "model", "--endpoint", endpoint,
         "--model", "refusing", "--companies", "1", "--pages", "1", "--target", "llama-3.1-8b",
         "--out", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    a = json.loads((tmp_path / "agents.json").read_text())["agents"][0]
    assert a["end"] == "tools_refused" and a["steps"] == 0 and not a["completed"]
    assert a["end_detail"].startswith("the server refused the tools at model call 1: HTTP 400")
    assert "--enable-auto-tool-choice" in res.stdout and "Traceback" not in res.output
    (row,) = rows(tmp_path)
    assert row["status"] == "tools_refused" and row["decided_by"] == "model"
    reqs = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert reqs[0]["status"] == "failed" and reqs[0]["error"] == "tools_refused"


@pytest.mark.parametrize("strategy", ["clip", "extract", "window", "cache_aware"])
def test_calls_with_broken_json_keep_valid_pairs_under_compaction(
    endpoint: str, tmp_path: Path, strategy: str
) -> None:
    """An answer whose only call has arguments that are not JSON is still a call: it is
    answered, and compaction drops it with its answer (the budget forces drops here)."""
    ModelStub.problems = []
    cfg = config(strategy, endpoint, "broken", max_steps=8)
    cfg = RunConfig(**{**cfg.__dict__, "strategies": StrategyConfig(budget_tokens=400)})
    rep = run(cfg, tmp_path, progress=None)
    a = rep["agents"][0]
    assert a["end"] == "step_limit" and a["invalid_tool_calls"] == 8
    assert ModelStub.problems == []
    # the stub counts /tokenize and chat requests slightly differently: a few tokens
    assert max(r["prompt_tokens"] for r in rows(tmp_path)) <= 400 + 16
