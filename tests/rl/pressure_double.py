"""A gym-style double of KVPressure's interface for the tool adapter's tests: three
candidates (seq ids 10, 11, 12), three steps."""

from __future__ import annotations

from typing import Any

import numpy as np

from kvlab.rl.pressure_rewards import TERMS
from kvlab.rl.pressure_tools import TOOL_ACTIONS


class _Space:
    def __init__(self, k: int) -> None:
        self.nvec = np.full(k, len(TOOL_ACTIONS))


class TallyEnv:
    """Three candidates (seq ids "10", "11", "12"), three steps; it records the actions it
    got, forbids ``compress`` of seq 12 in its mask, and pays each step's sum of codes."""

    def __init__(self) -> None:
        self.action_space = _Space(3)
        self.actions: list[list[int]] = []

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        return None, {"action_mask": self._mask()}

    def _mask(self) -> np.ndarray:
        m = np.ones((3, 4), dtype=bool)
        m[2, 2] = False
        return m

    def compact_observation(self) -> dict[str, Any]:
        return {
            "episode_remaining": 3 - len(self.actions),
            "candidates": [{"seq_id": str(s), "slot": i} for i, s in enumerate((10, 11, 12))],
        }

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self.actions.append([int(a) for a in action])
        done = len(self.actions) == 3
        terms = {t: 0.1 * (i + 1) for i, t in enumerate(TERMS)}
        info = {"action_mask": self._mask(), "episode_terms": {**terms, "tokens": 7.0}}
        return None, float(sum(action)), done, False, info
