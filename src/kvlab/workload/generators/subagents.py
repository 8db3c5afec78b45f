"""``subagents``: sub-agents fanned out from role templates by planner steps.

Each session is a task: ``planner_steps`` planner calls (system prompt + tool
catalog + task + earlier plans and sub-agent reports). After each planner
step, ``fanout`` sub-agents start, each from one of ``roles`` role templates
(a shared role prompt with the role's tools, retention ``system``) plus its
own brief, and run a tool loop of ``subagent_steps`` calls whose last output
is its report.

Timing: workload format 1 has no cross-session dependencies, so the fan-out
is open loop: planner step k is sent at ``start + k * stage_s`` and its
sub-agents ``subagent_delay_s`` later (each sub-agent is its own session;
its loop steps are closed loop with ``think_time_s``).

KV effect: many short-lived requests that share a few role templates (high
reuse of role prefixes across tasks) next to long planner prompts; class
``planner`` vs ``subagent`` separates their TTFTs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvlab.workload.generators._common import CommonParams, in_run_order, nonzero, seg
from kvlab.workload.records import Request, Segment


@dataclass(frozen=True)
class SubagentsParams(CommonParams):
    sessions: int = 16
    planner_steps: int = 2
    fanout: int = 4
    roles: int = 4
    rate_per_s: float = 0.25
    think_time_s: float = 1.0
    stage_s: float = 30.0
    subagent_delay_s: float = 3.0
    system_tokens: int = 800
    tool_catalog_tokens: int = 8000
    task_tokens: int = 300
    plan_tokens: int = 300
    role_tokens: int = 1500
    brief_tokens: int = 200
    subagent_steps: int = 2
    call_tokens: int = 80
    observation_tokens: int = 800
    report_tokens: int = 300

    POSITIVE = ("sessions", "planner_steps", "roles", "subagent_steps", "plan_tokens")
    PER_SESSION = ("planner_steps", "fanout", "subagent_steps")


def _subagent(
    p: SubagentsParams, rng: np.random.Generator, sid: str, role: int, start_s: float
) -> list[Request]:
    history: list[Segment] = [
        seg("system", p.role_tokens, f"subagents/role{role}", "system"),
        seg("user", p.brief_tokens, f"subagents/{sid}/brief"),
    ]
    obs = p.lengths(rng, p.observation_tokens, p.subagent_steps - 1)
    thinks = p.thinks(rng, p.subagent_steps - 1)
    out: list[Request] = []
    for k in range(p.subagent_steps):
        last = k == p.subagent_steps - 1
        base = f"subagents/{sid}/s{k}"
        n_out = p.report_tokens if last else p.call_tokens
        out_id = f"subagents/{sid}/report" if last else f"{base}/call"
        out.append(
            Request(
                request_id=f"{sid}-s{k}",
                segments=nonzero(tuple(history)),
                output_tokens=max(1, n_out),
                arrival_s=start_s if k == 0 else None,
                think_time_s=None if k == 0 else float(thinks[k - 1]),
                session_id=sid,
                turn=k,
                cls="subagent",
                output_content_id=out_id,
            )
        )
        if not last:
            history += [
                seg("assistant", max(1, n_out), out_id, "generation"),
                seg("tool_output", obs[k], f"{base}/observation"),
            ]
    return out


def build(p: SubagentsParams, rng: np.random.Generator) -> tuple[Request, ...]:
    prefix = (
        seg("system", p.system_tokens, "subagents/planner-system", "system"),
        seg("tools", p.tool_catalog_tokens, "subagents/tool-catalog", "system"),
    )
    starts = p.starts(rng)
    reqs: list[Request] = []
    for i in range(p.sessions):
        tid = f"task{i}"
        history: list[Segment] = [seg("user", p.task_tokens, f"subagents/{tid}/task")]
        plans = p.lengths(rng, p.plan_tokens, p.planner_steps)
        for k in range(p.planner_steps):
            t0 = float(starts[i]) + k * p.stage_s
            plan_id = f"subagents/{tid}/s{k}/plan"
            reqs.append(
                Request(
                    request_id=f"{tid}-s{k}",
                    segments=nonzero((*prefix, *history)),
                    output_tokens=plans[k],
                    arrival_s=t0,
                    session_id=tid,
                    turn=k,
                    cls="planner",
                    output_content_id=plan_id,
                )
            )
            if k == p.planner_steps - 1:
                break
            history.append(seg("reasoning", plans[k], plan_id, "reasoning"))
            for j in range(p.fanout):
                sid = f"{tid}.s{k}.sub{j}"
                role = int(rng.integers(p.roles))
                reqs += _subagent(p, rng, sid, role, t0 + p.subagent_delay_s)
                history.append(
                    seg("tool_output", p.report_tokens, f"subagents/{sid}/report", "generation")
                )
    return in_run_order(reqs)
