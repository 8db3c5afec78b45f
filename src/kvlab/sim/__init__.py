"""kvlab.sim: a fast, vLLM-v1-exact simulation of the paged KV cache and its scheduler.

``simulate(workload, SimConfig(model=..., gpu=...)) -> RunResult``.
"""

from kvlab.sim.config import SimConfig
from kvlab.sim.engine import simulate
from kvlab.sim.policies import POLICIES

__all__ = ["POLICIES", "SimConfig", "simulate"]
