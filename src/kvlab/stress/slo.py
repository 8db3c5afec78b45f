"""SLO: the service-level objectives a stress scenario is judged against.

A run *meets* the SLOs when every limit holds: p99 time to first token, p99 time per
output token, preemptions within the budget, peak KV usage (vLLM's
``kv_cache_usage_perc``) at or under the ceiling, and no request rejected. It is
*close* to them (a warning) when a measured figure passes but exceeds
``warn_fraction`` of its limit. The defaults are stated here and in docs/stress.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from kvlab.errors import ConfigError

#: The defaults, in one place (docs/stress.md quotes them).
DEFAULT_TTFT_P99_S = 2.0
DEFAULT_TPOT_P99_S = 0.1
DEFAULT_MAX_PREEMPTIONS = 0
DEFAULT_MAX_KV_USAGE = 0.95
DEFAULT_WARN_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class Slo:
    """Limits on one simulated run; ``max_preemptions`` counts preemptions per run."""

    ttft_p99_s: float = DEFAULT_TTFT_P99_S
    tpot_p99_s: float = DEFAULT_TPOT_P99_S
    max_preemptions: int = DEFAULT_MAX_PREEMPTIONS
    max_kv_usage: float = DEFAULT_MAX_KV_USAGE
    warn_fraction: float = DEFAULT_WARN_FRACTION

    def __post_init__(self) -> None:
        for name in ("ttft_p99_s", "tpot_p99_s"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not (math.isfinite(v) and v > 0)
            ):
                raise ConfigError(f"slo.{name} must be a number of seconds > 0, got {v!r}")
        v = self.max_preemptions
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"slo.max_preemptions must be an integer >= 0, got {v!r}")
        for name in ("max_kv_usage", "warn_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
                raise ConfigError(f"slo.{name} must be in (0, 1], got {v!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Slo:
        known = set(cls.__dataclass_fields__)
        for k in d:
            if k not in known:
                raise ConfigError(f"unknown SLO {k!r}; known: {', '.join(sorted(known))}")
        return cls(**dict(d))

    def with_changes(self, **changes: Any) -> Slo:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, summary: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """(violations, warnings) of a run's ``summary.json``, each a sentence with numbers."""
        bad: list[str] = []
        warn: list[str] = []
        rejected = summary.get("num_rejected") or 0
        if rejected:
            bad.append(f"{rejected:,} request(s) rejected: prompt >= max_model_len")
        unfinished = (summary.get("num_unfinished") or 0) + (summary.get("num_failed") or 0)
        if unfinished:
            bad.append(f"{unfinished:,} request(s) did not finish")
        pre = summary.get("num_preemptions") or 0
        if pre > self.max_preemptions:
            bad.append(f"{pre:,} preemption(s) > budget {self.max_preemptions}")
        for key, limit, label in (
            ("ttft_s", self.ttft_p99_s, "TTFT p99"),
            ("tpot_s", self.tpot_p99_s, "TPOT p99"),
        ):
            p99 = (summary.get(key) or {}).get("p99")
            if p99 is None:
                continue
            if p99 > limit:
                bad.append(f"{label} {p99:.3f} s > {limit:g} s")
            elif p99 > self.warn_fraction * limit:
                warn.append(f"{label} {p99:.3f} s is over {self.warn_fraction:.0%} of {limit:g} s")
        use = summary.get("kv_cache_usage_perc_max")
        if use is not None:
            if use > self.max_kv_usage:
                bad.append(f"peak KV usage {use:.1%} > ceiling {self.max_kv_usage:.0%}")
            elif use > self.warn_fraction * self.max_kv_usage:
                warn.append(
                    f"peak KV usage {use:.1%} is over {self.warn_fraction:.0%} of the "
                    f"{self.max_kv_usage:.0%} ceiling"
                )
        return bad, warn
