"""Eviction policies for the simulator's block pool, one small class per file.

``POLICIES`` maps a name to a factory ``(ticks_per_s, **params) -> policy``;
adding a policy never edits the engine (docs/policies.md). ``lru`` is vLLM v1's
order (default). Every policy here but ``fifo`` also runs on the extent pool
(``supports_extents``), with the same results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvlab.errors import ConfigError
from kvlab.sim.policies.base import EvictionPolicy
from kvlab.sim.policies.fifo import FIFO
from kvlab.sim.policies.lfu import LFU
from kvlab.sim.policies.lru import LRU
from kvlab.sim.policies.retention import Retention
from kvlab.sim.policies.s3fifo import S3FIFO
from kvlab.sim.policies.ttl import TTL


def _ttl(ticks_per_s: int, ttl_s: float = 60.0, pin_rank: int = 0) -> TTL:
    return TTL(ttl=round(ttl_s * ticks_per_s), pin_rank=int(pin_rank))


POLICIES: dict[str, Callable[..., EvictionPolicy]] = {
    "lru": lambda ticks_per_s, **kw: LRU(**kw),
    "lfu": lambda ticks_per_s, **kw: LFU(**kw),
    "fifo": lambda ticks_per_s, **kw: FIFO(**kw),
    "s3fifo": lambda ticks_per_s, **kw: S3FIFO(**kw),
    "retention": lambda ticks_per_s, **kw: Retention(**kw),
    "ttl": _ttl,
}


#: ``learned:FILE``: a trained eviction policy (docs/rl.md)
LEARNED_PREFIX = "learned:"


def make_policy(name: str, ticks_per_s: int = 1, **params: Any) -> EvictionPolicy:
    """Build policy ``name``; ConfigError for an unknown name or parameter.

    ``learned:FILE`` loads a policy trained by ``kvlab rl train`` (the ``rl`` extra;
    :mod:`kvlab.rl.learned`)."""
    if name.startswith(LEARNED_PREFIX):
        if params:
            raise ConfigError(f"policy {name!r} takes no parameters, got {', '.join(params)}")
        from kvlab.rl.learned import load_learned

        return load_learned(name[len(LEARNED_PREFIX) :])
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown eviction policy {name!r}; choose one of {', '.join(POLICIES)}"
        ) from None
    try:
        return factory(ticks_per_s, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad parameters for policy {name!r}: {e}") from None


__all__ = ["LEARNED_PREFIX", "POLICIES", "EvictionPolicy", "make_policy"]
