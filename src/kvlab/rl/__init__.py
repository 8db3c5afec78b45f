"""Reinforcement-learning environments for KV-cache decisions (the ``rl`` extra).

``kvlab/PrefixEviction-v0`` (:mod:`kvlab.rl.prefix_eviction`) and
``kvlab/KVPressure-v0`` (:mod:`kvlab.rl.kv_pressure`) are registered with Gymnasium by
:func:`register_envs` (called on import of this package when Gymnasium is installed).
``learned:FILE`` (:mod:`kvlab.rl.learned`) runs a trained policy in the simulator;
:mod:`kvlab.rl.engine_steps` stops the engine at decision points (KVPressure's base).
See docs/rl.md.
"""

from __future__ import annotations

import contextlib

ENV_IDS: tuple[str, ...] = ("kvlab/PrefixEviction-v0", "kvlab/KVPressure-v0")


def register_envs() -> None:
    """Register the environments with Gymnasium (idempotent)."""
    import gymnasium as gym

    entry = {
        "kvlab/PrefixEviction-v0": "kvlab.rl.prefix_eviction:PrefixEvictionEnv",
        "kvlab/KVPressure-v0": "kvlab.rl.kv_pressure:KVPressureEnv",
    }
    for env_id, point in entry.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=point)


with contextlib.suppress(ImportError):  # the rl extra is optional
    register_envs()

__all__ = ["ENV_IDS", "register_envs"]
