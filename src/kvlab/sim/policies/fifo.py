"""FIFO: evict the block that was cached first, whatever its hits since."""

from __future__ import annotations

from kvlab.sim.policies.keyed import BlockStats, KeyPolicy


class FIFO(KeyPolicy):
    """Key: the order in which blocks got their content.

    Block pool only: the extent pool keys a request's fresh output (which only its
    owner could hit) when the request releases it, not block by block as the
    blocks fill, so it does not know their caching order.
    """

    name = "fifo"
    supports_extents = False
    no_extents_reason = (
        "FIFO orders blocks by when they were cached, and the extent pool caches a "
        "request's fresh output only when the request releases it"
    )

    def key(self, s: BlockStats) -> int:
        return s.cached
