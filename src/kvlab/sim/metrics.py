"""The sampled time series of a simulation (block residency histograms live in
:class:`kvlab.sim.block_pool.BlockPool`)."""

from __future__ import annotations

from kvlab.sim.cost_model import TICKS_PER_S


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

    def due(self, now: int) -> bool:
        """Whether :meth:`observe` at ``now`` takes a sample (callers build rows only then)."""
        return self._last_sample is None or now - self._last_sample >= self.interval

    def observe(self, now: int, usage: float, row: dict[str, float] | None) -> None:
        """Account usage at ``now``; ``row`` (the other columns) is needed when :meth:`due`."""
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
            assert row is not None, "a sample is due: pass the row"
            for k, v in row.items():
                self.cols[k].append(v)

    def tick(self, now: int, usage: float) -> bool:
        """Account usage at ``now`` (an event boundary); True when a sample is due,
        then pass the other columns to :meth:`sample`."""
        last = self._last_t
        if self._t0 is None:
            self._t0 = last = now
        self._area += self._last_usage * (now - last)
        self._last_t, self._last_usage = now, usage
        if usage > self.usage_max:
            self.usage_max = usage
        s = self._last_sample
        return s is None or now - s >= self.interval

    def sample(self, now: int, row: dict[str, float]) -> None:
        """Take the sample :meth:`tick` said was due (usage as ticked)."""
        self._last_sample = now
        self.cols["t_s"].append(now / TICKS_PER_S)
        self.cols["kv_cache_usage_perc"].append(self._last_usage)
        for k, v in row.items():
            self.cols[k].append(v)

    def usage_mean(self) -> float:
        span = self._last_t - (self._t0 or 0)
        return self._area / span if span > 0 else self._last_usage
