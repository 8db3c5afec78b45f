"""``--decisions model`` against vLLM's CPU server with the tiny random model.

The tiny model is random: it cannot write a tool call, and its chat template does not
render the ``tools`` it is offered. Two servers, two recorded ends, never a traceback:

* the agents fixture serves it without a tool-call parser, and vLLM refuses a request
  offering tools with a 400 (``"auto" tool choice requires --enable-auto-tool-choice
  and --tool-call-parser``): the run ends ``tools_refused`` at model call 1;
* served with ``--enable-auto-tool-choice --tool-call-parser hermes``, vLLM answers with
  the model's text and no tool call: the run ends "model made no tool call at step 1".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langchain.agents.middleware")
pytest.importorskip("langchain_openai")

from click.testing import Result
from typer.testing import CliRunner

from kvlab.backends.vllm_server import VllmServer, free_port, parse_port_range
from kvlab.cli.app import build_app

pytestmark = pytest.mark.live


def run_model(server: VllmServer, out: Path) -> Result:
    return CliRunner().invoke(
        build_app(("agents",)),
        ["agents", "run", "--strategy", "cache_aware", "--decisions", "model",
         "--endpoint", server.url, "--model", server.model,
         "--companies", "2", "--pages", "2", "--page-words", "150", "--mc-runs", "200",
         "--budget-tokens", "1800", "--max-output-tokens", "8",
         "--target", "llama-3.1-8b", "--out", str(out)],
    )  # fmt: skip


def outcome(out: Path) -> tuple[dict, list[dict]]:
    rep = json.loads((out / "agents.json").read_text())
    rows = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    return rep, rows


def test_a_server_without_a_tool_parser_refuses_and_the_run_says_so(
    vllm_agents_server: VllmServer, tmp_path: Path
) -> None:
    res = run_model(vllm_agents_server, tmp_path)
    assert res.exit_code == 0, res.output
    rep, rows = outcome(tmp_path)
    a = rep["agents"][0]
    assert a["end"] == "tools_refused" and a["steps"] == 0 and not a["completed"]
    assert "--enable-auto-tool-choice" in a["end_detail"] and "HTTP 400" in a["end_detail"]
    assert [r["status"] for r in rows] == ["tools_refused"]


@pytest.fixture(scope="module")
def vllm_tools_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, vllm_python: str
) -> Iterator[VllmServer]:
    """The tiny model with vLLM's automatic tool choice and the hermes tool-call parser."""
    from kvlab.agents.chat_template import write_chat_template

    ports_env = os.environ.get("KVLAB_LIVE_PORTS")
    d = tmp_path_factory.mktemp("vllm-agents-tools")
    server = VllmServer(
        python=vllm_python,
        model_dir=tiny_model_dir,
        port=free_port(parse_port_range(ports_env) if ports_env else None),
        log_path=d / "vllm-agents-tools.log",
        max_model_len=2048,
        extra_args=(
            "--enable-prompt-tokens-details",
            "--chat-template",
            str(write_chat_template(d / "tool_chat_template.jinja")),
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
        ),
    )
    try:
        server.start()
        server.wait_ready(float(os.environ.get("KVLAB_LIVE_READY_TIMEOUT_S", "300")))
        yield server
    finally:
        server.stop()


def test_tiny_model_makes_no_tool_call_and_the_run_says_so(
    vllm_tools_server: VllmServer, tmp_path: Path
) -> None:
    res = run_model(vllm_tools_server, tmp_path)
    assert res.exit_code == 0, res.output
    assert "model made no tool call at step 1 (no masterplan written)" in res.stdout
    rep, rows = outcome(tmp_path)
    assert rep["decided_by"] == "model" and rep["max_steps"] == 4 * (2 * 4 + 2)
    a = rep["agents"][0]
    assert a["end"] == "no_tool_call" and not a["completed"] and a["steps"] == 1
    assert a["tool_calls"] == 0 and a["masterplan_fact_retention"] is None
    (row,) = rows
    # The call was really sent (the server counted its prompt) and offered the tools.
    assert row["decided_by"] == "model" and row["tool_calls"] == [] and row["status"] == "ok"
    assert row["prompt_tokens"] > 0 and row["output_tokens"] >= 1
