"""``agentic``: a tool loop whose large tool outputs grow the context step by step.

The shape of a pension-fund analysis agent: for each of ``companies``
companies the agent calls a tool that returns the company's annual report
(``report_tokens`` each), then it runs a Monte Carlo simulation tool
(``montecarlo_tokens`` of results) and finally writes a synthesis over
everything (``synthesis_tokens`` of output).

Each session makes ``companies + 2`` requests. Request k's prompt is the
shared system prompt and tool definitions, the task, then every earlier tool
call (the agent's own output, ``generation``) and tool output (``context``):
each request re-sends the previous prompt plus one call and one tool output,
so the last prompt is about ``companies * report_tokens`` tokens long. Steps
are closed loop: a tool takes ``think_time_s`` (exponential mean).

KV effect: the history is most of every prompt. With prefix caching each step
prefills only the new call and tool output; without it every step re-prefills
the whole growing context (quadratic work). Long sessions hold many blocks,
so a small cache evicts a session's history between steps; offload keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvlab.workload.generators._common import CommonParams, in_run_order, nonzero, seg
from kvlab.workload.records import Request, Segment


@dataclass(frozen=True)
class AgenticParams(CommonParams):
    sessions: int = 4
    companies: int = 8
    rate_per_s: float = 0.1
    think_time_s: float = 1.0
    length_cv: float = 0.2
    system_tokens: int = 1200
    tool_catalog_tokens: int = 2500
    task_tokens: int = 400
    call_tokens: int = 60
    report_tokens: int = 5000
    montecarlo_tokens: int = 1500
    synthesis_tokens: int = 1200

    POSITIVE = ("sessions", "call_tokens", "synthesis_tokens")
    PER_SESSION = ("companies",)


def build(p: AgenticParams, rng: np.random.Generator) -> tuple[Request, ...]:
    prefix = (
        seg("system", p.system_tokens, "agentic/system", "system"),
        seg("tools", p.tool_catalog_tokens, "agentic/tools", "system"),
    )
    starts = p.starts(rng)
    reqs: list[Request] = []
    steps = p.companies + 2
    for i in range(p.sessions):
        sid = f"analysis{i}"
        reports = p.lengths(rng, p.report_tokens, p.companies)
        tool_outputs = [*reports, p.lengths(rng, p.montecarlo_tokens, 1)[0]]
        calls = p.lengths(rng, p.call_tokens, steps - 1)
        thinks = p.thinks(rng, steps - 1)
        history: list[Segment] = [seg("user", p.task_tokens, f"agentic/{sid}/task")]
        for k in range(steps):
            last = k == steps - 1
            base = f"agentic/{sid}/s{k}"
            reqs.append(
                Request(
                    request_id=f"{sid}-s{k}",
                    segments=nonzero((*prefix, *history)),
                    output_tokens=p.synthesis_tokens if last else calls[k],
                    arrival_s=float(starts[i]) if k == 0 else None,
                    think_time_s=None if k == 0 else float(thinks[k - 1]),
                    session_id=sid,
                    turn=k,
                    cls="synthesis" if last else "tool_step",
                    output_content_id=None if last else f"{base}/call",
                )
            )
            if not last:
                what = "report" if k < p.companies else "montecarlo"
                history += [
                    seg("assistant", calls[k], f"{base}/call", "generation"),
                    seg("tool_output", tool_outputs[k], f"{base}/{what}"),
                ]
    return in_run_order(reqs)
