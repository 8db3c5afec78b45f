"""Retention classes: system prompts and tool definitions outlive history, which
outlives generations and ephemeral reasoning (the idea of NVIDIA Dynamo's
agentic cache hints). Evict from the shortest-lived class first, LRU within it.
"""

from __future__ import annotations

from kvlab.sim.policies.keyed import DEFAULT_RANK, BlockStats, KeyPolicy

__all__ = ["DEFAULT_RANK", "Retention"]


class Retention(KeyPolicy):
    """Key: minus the retention rank (0 = longest-lived), ranks past ``num_ranks - 1``
    counted as the last (SGLang's priority strategy, with ranks as priorities)."""

    name = "retention"
    uses_retention = True

    def __init__(self, num_ranks: int = 5) -> None:
        super().__init__()
        if num_ranks < 1:
            raise ValueError("num_ranks must be >= 1")
        self.num_ranks = num_ranks

    def key(self, s: BlockStats) -> int:
        return -min(s.rank, self.num_ranks - 1)
