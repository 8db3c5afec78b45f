"""``planner``: planner requests over a large shared tool catalog.

Each session is one task solved in ``steps`` planner calls. Every prompt
starts with the planner's system prompt and the tool catalog (both shared by
all sessions, retention ``system``), then the task, then each earlier step's
plan (the planner's own output, retention ``reasoning``) and the tool result
it produced (``tool_output``). A step is sent ``think_time_s`` (the tool's
run time) after the previous step's response.

KV effect: a very long shared prefix (system + catalog) that every request
hits, and per-task history reuse between steps; a cache too small to keep the
catalog resident pays its full prefill on every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvlab.workload.generators._common import CommonParams, in_run_order, nonzero, seg
from kvlab.workload.records import Request, Segment


@dataclass(frozen=True)
class PlannerParams(CommonParams):
    sessions: int = 32
    steps: int = 4
    rate_per_s: float = 0.5
    think_time_s: float = 1.5
    system_tokens: int = 800
    tool_catalog_tokens: int = 12000
    task_tokens: int = 300
    plan_tokens: int = 250
    observation_tokens: int = 600

    POSITIVE = ("sessions", "steps", "plan_tokens")
    PER_SESSION = ("steps",)


def planner_prefix(name: str, p: PlannerParams) -> tuple[Segment, ...]:
    return (
        seg("system", p.system_tokens, f"{name}/planner-system", "system"),
        seg("tools", p.tool_catalog_tokens, f"{name}/tool-catalog", "system"),
    )


def build(p: PlannerParams, rng: np.random.Generator) -> tuple[Request, ...]:
    prefix = planner_prefix("planner", p)
    starts = p.starts(rng)
    reqs: list[Request] = []
    for i in range(p.sessions):
        sid = f"task{i}"
        plans = p.lengths(rng, p.plan_tokens, p.steps)
        obs = p.lengths(rng, p.observation_tokens, p.steps - 1)
        thinks = p.thinks(rng, p.steps - 1)
        history: list[Segment] = [seg("user", p.task_tokens, f"planner/{sid}/task")]
        for k in range(p.steps):
            base = f"planner/{sid}/s{k}"
            last = k == p.steps - 1
            reqs.append(
                Request(
                    request_id=f"{sid}-s{k}",
                    segments=nonzero((*prefix, *history)),
                    output_tokens=plans[k],
                    arrival_s=float(starts[i]) if k == 0 else None,
                    think_time_s=None if k == 0 else float(thinks[k - 1]),
                    session_id=sid,
                    turn=k,
                    cls="planner",
                    output_content_id=None if last else f"{base}/plan",
                )
            )
            if not last:
                history += [
                    seg("reasoning", plans[k], f"{base}/plan", "reasoning"),
                    seg("tool_output", obs[k], f"{base}/observation"),
                ]
    return in_run_order(reqs)
