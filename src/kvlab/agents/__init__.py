"""kvlab.agents: context growth of a tool-using LangGraph agent, and compaction measured.

``ContextBudget`` is a drop-in node for a LangGraph graph (:mod:`kvlab.agents.budget`);
the pension workflow (:mod:`kvlab.agents.workflow`), the strategies' graphs
(:mod:`kvlab.agents.graph`), live measurement (:mod:`kvlab.agents.live`) and the
offline workload (:mod:`kvlab.agents.emit`) back ``kvlab agents``. Needs the agents
extra (``pip install 'kvlab[agents]'``) for everything that touches LangGraph; the
names below load on first use.
"""

from __future__ import annotations

from typing import Any

from kvlab._lazy import load_lazy

#: Public names loaded lazily: name -> module.
_LAZY: dict[str, str] = {
    "ContextBudget": "kvlab.agents.budget",
    "STRATEGIES": "kvlab.agents.budget",
    "Workflow": "kvlab.agents.workflow",
    "WorkflowConfig": "kvlab.agents.workflow",
    "ScriptedPolicy": "kvlab.agents.workflow",
    "calc": "kvlab.agents.calc",
    "run_monte_carlo": "kvlab.agents.montecarlo",
}


def __getattr__(name: str) -> Any:
    return load_lazy(__name__, _LAZY, globals(), name)


__all__ = [
    "STRATEGIES",
    "ContextBudget",
    "ScriptedPolicy",
    "Workflow",
    "WorkflowConfig",
    "calc",
    "run_monte_carlo",
]
