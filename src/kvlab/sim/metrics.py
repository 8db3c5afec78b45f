"""Block residency histograms and the sampled time series of a simulation.

Histograms are unsampled: every event counts, binned on fixed log-spaced
edges (10 per decade, 1 ms .. 10^5 s; first and last bins catch the rest),
like vLLM's opt-in ``vllm:kv_block_{lifetime,idle_before_evict,reuse_gap}_seconds``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from kvlab.sim.cost_model import TICKS_PER_S

_DECADES = (-3, 5)
_PER_DECADE = 10
NUM_BINS = (_DECADES[1] - _DECADES[0]) * _PER_DECADE
EDGES_S = [10 ** (_DECADES[0] + i / _PER_DECADE) for i in range(NUM_BINS + 1)]
HISTOGRAMS = ("block_lifetime_s", "block_idle_before_evict_s", "block_reuse_gap_s")


def _bin(ticks: int) -> int:
    if ticks <= 0:
        return 0
    x = (math.log10(ticks / TICKS_PER_S) - _DECADES[0]) * _PER_DECADE
    return min(max(int(x), 0), NUM_BINS - 1)


class BlockMetrics:
    """Pool observer: per-block birth and last-use ticks, and the three histograms.

    Invariants: ``born[b]`` is the tick block b was last handed out; ``used[b]``
    the tick of its last allocation or hit; ``counts[name][i]`` counts events in
    ``[EDGES_S[i], EDGES_S[i+1])`` (ends open).
    """

    def __init__(self, num_blocks: int, offload: Any = None) -> None:
        self.born = [0] * num_blocks
        self.used = [0] * num_blocks
        self.counts = {name: [0] * NUM_BINS for name in HISTOGRAMS}
        self.offload = offload

    def on_allocate(self, block_id: int, now: int) -> None:
        self.born[block_id] = now
        self.used[block_id] = now

    def on_hit(self, block_id: int, now: int) -> None:
        self.counts["block_reuse_gap_s"][_bin(now - self.used[block_id])] += 1
        self.used[block_id] = now

    def on_evict(self, block_id: int, key: Hashable, now: int) -> None:
        self.counts["block_lifetime_s"][_bin(now - self.born[block_id])] += 1
        self.counts["block_idle_before_evict_s"][_bin(now - self.used[block_id])] += 1
        if self.offload is not None:
            self.offload.on_gpu_evict(key, now)

    def on_cache(self, block_id: int, key: Hashable, now: int) -> None:
        if self.offload is not None:
            self.offload.on_gpu_cache(key, now)

    def histograms(self) -> dict[str, Any]:
        return {
            name: {"unit": "s", "edges": EDGES_S, "counts": list(c)}
            for name, c in self.counts.items()
        }


class TimeSeries:
    """Samples taken at engine event boundaries, at most one per ``interval`` ticks,
    plus the time-weighted mean and the max of KV usage over every boundary.
    """

    COLUMNS = (
        "t_s",
        "kv_cache_usage_perc",
        "kv_cache_usage_with_cached_perc",
        "num_requests_running",
        "num_requests_waiting",
        "offload_usage_perc",
        "prefix_cache_hit_tokens",
    )

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.cols: dict[str, list[float]] = {c: [] for c in self.COLUMNS}
        self._last_sample: int | None = None
        self._last_t = 0
        self._last_usage = 0.0
        self._area = 0.0
        self.usage_max = 0.0
        self._t0: int | None = None

    def observe(self, now: int, usage: float, row: dict[str, float]) -> None:
        if self._t0 is None:
            self._t0 = now
        self._area += self._last_usage * (now - self._last_t)
        self._last_t, self._last_usage = now, usage
        if usage > self.usage_max:
            self.usage_max = usage
        if self._last_sample is None or now - self._last_sample >= self.interval:
            self._last_sample = now
            self.cols["t_s"].append(now / TICKS_PER_S)
            self.cols["kv_cache_usage_perc"].append(usage)
            for k, v in row.items():
                self.cols[k].append(v)

    def usage_mean(self) -> float:
        span = self._last_t - (self._t0 or 0)
        return self._area / span if span > 0 else self._last_usage
