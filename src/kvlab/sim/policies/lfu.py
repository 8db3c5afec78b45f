"""LFU: evict the cached block hit least often; ties go to the least recently freed."""

from __future__ import annotations

from kvlab.sim.policies.keyed import BlockStats, KeyPolicy


class LFU(KeyPolicy):
    """Key: the block's hits since it was cached (SGLang's LFU, with vLLM's free order
    instead of the last access time as the tie-break)."""

    name = "lfu"

    def key(self, s: BlockStats) -> int:
        return s.hits
