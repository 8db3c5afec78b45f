"""``kvlab/PrefixEviction-v0``: choose which cached prefix block to drop.

The environment replays a workload's prompts through a prefix cache of
``capacity_blocks`` blocks (:class:`kvlab.rl.prefix_cache.PrefixCache`: the cache
curve's semantics, so an agent that always picks candidate 0 is LRU and reproduces
``kvlab cache-curve`` exactly). Each step is one eviction:

- candidates: the ``k`` least recently used cached blocks (candidate 0 is LRU's victim);
- observation: ``Box(k * NUM_FEATURES)``, per candidate (log1p-scaled unless said):
  age (requests since its last touch), touches since it was cached, its last reuse gap,
  retention rank / 4, depth in its prompt, children (prefixes sharing it), its slot
  ``i / k`` (recency rank), and 1 for a real candidate (0 pads), computed by
  :func:`kvlab.rl.features.candidate_rows` (shared with the ``learned:FILE`` policy);
- action: ``Discrete(k)``, the candidate to evict; ``info["action_mask"]`` (and
  :meth:`action_masks`, for MaskablePPO) marks the real candidates;
- reward: prefix-hit tokens gained from this eviction to the next one (the shaped
  per-step reward; their sum is the episode's hit tokens, ``info["hit_tokens"]``).

An episode is ``episode_requests`` consecutive requests (the whole trace when None)
starting at a seeded offset, from an empty cache. The trace is made once
(:class:`kvlab.rl.prefix_trace.PrefixTrace`) and shared by every episode. The cache
holds ``capacity_blocks`` blocks, or, with ``capacity_fraction``, that share of the
episode's own distinct blocks (as ``kvlab rl eval`` sizes it: a fixed share of a whole
long trace is far more than one window of it ever fills, and then no eviction happens).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from kvlab.errors import ConfigError
from kvlab.rl.features import FEATURES, NUM_FEATURES, candidate_rows
from kvlab.rl.prefix_cache import PrefixCache
from kvlab.rl.prefix_trace import PrefixTrace

__all__ = [
    "FEATURES",
    "NUM_FEATURES",
    "PrefixEvictionEnv",
    "episode_capacity",
    "heuristic_action",
]


class PrefixEvictionEnv(gym.Env[np.ndarray, np.int64]):
    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's own type)

    def __init__(
        self,
        trace: PrefixTrace,
        capacity_blocks: int | None,
        k: int = 8,
        episode_requests: int | None = None,
        *,
        capacity_fraction: float | None = None,
    ) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1 candidate, got {k}")
        if (capacity_blocks is None) == (capacity_fraction is None):
            raise ConfigError("give one of capacity_blocks and capacity_fraction")
        if capacity_blocks is not None and capacity_blocks < 1:
            raise ConfigError(f"capacity_blocks must be >= 1, got {capacity_blocks}")
        if capacity_fraction is not None and not 0.0 < capacity_fraction <= 1.0:
            raise ConfigError(f"capacity_fraction must be in (0, 1], got {capacity_fraction}")
        self.trace = trace
        self.capacity_blocks = capacity_blocks
        self.capacity_fraction = capacity_fraction
        self.k = k
        self.episode_requests = episode_requests
        self.observation_space = gym.spaces.Box(0.0, 64.0, (k * NUM_FEATURES,), np.float32)
        self.action_space = gym.spaces.Discrete(k)
        self.cache: PrefixCache | None = None
        self._cands: list[int] = []
        self._mask = np.zeros(k, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        n = self.trace.num_requests
        if self.episode_requests is None or self.episode_requests >= n:
            lo, hi = 0, n
        else:
            lo = int(self.np_random.integers(0, n - self.episode_requests + 1))
            hi = lo + self.episode_requests
        if options and "first" in options:
            lo, hi = self.trace.window(int(options["first"]), hi - lo)
        cap = self.capacity_blocks
        if cap is None:
            assert self.capacity_fraction is not None
            cap = episode_capacity(self.trace, lo, hi, self.capacity_fraction)
        self.cache = PrefixCache(self.trace, cap, lo, hi)
        self._gained = 0
        more = self.cache.advance()
        self._gained = self.cache.hit_tokens
        return self._obs(more), self._info(more)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        c = self.cache
        if c is None:
            raise RuntimeError("call reset() first")
        if c.pending is None:  # an episode without evictions: over at its first step
            return self._obs(False), 0.0, True, False, self._info(False)
        a = int(action)
        if not 0 <= a < len(self._cands):
            a = 0  # an invalid slot (masked out) evicts the LRU candidate
        before = c.hit_tokens
        c.evict(self._cands[a])
        more = c.advance()
        reward = float(c.hit_tokens - before)
        return self._obs(more), reward, not more, False, self._info(more)

    def action_masks(self) -> np.ndarray:
        return self._mask.copy()

    def _obs(self, more: bool) -> np.ndarray:
        k = self.k
        out = np.zeros((k, NUM_FEATURES), dtype=np.float32)
        mask = self._mask
        mask[:] = False
        if not more:
            self._cands = []
            mask[0] = True
            return out.reshape(-1)
        c = self.cache
        assert c is not None
        cands = self._cands = c.lru_order(k)
        rows = candidate_rows(
            c.request, cands, k, c.last_touch, c.touches, c.gap, c.rank, c.depth, c.children
        )
        out[: len(rows)] = rows
        mask[: len(rows)] = True
        return out.reshape(-1)

    def _info(self, more: bool) -> dict[str, Any]:
        c = self.cache
        assert c is not None
        return {
            "action_mask": self._mask.copy(),
            "hit_tokens": c.hit_tokens,
            "hit_blocks": c.hit_blocks,
            "decisions": c.decisions,
            "request": c.request,
        }


def episode_capacity(trace: PrefixTrace, lo: int, hi: int, fraction: float) -> int:
    """``fraction`` of the distinct blocks of requests ``lo .. hi - 1`` (at least 1)."""
    distinct = len(set(trace.keys[trace.start[lo] : trace.start[hi]]))
    return max(1, int(distinct * fraction))


def heuristic_action(obs: np.ndarray, k: int) -> int:
    """A value-aware rule over the observation: evict the real candidate with the least
    ``(touches + 1) / (age + 1)``, a system-prompt block (rank 0) or one shared by several
    prefixes counting double; ties go to the least recently used."""
    f = obs.reshape(k, NUM_FEATURES)
    valid = f[:, 7] > 0
    touches = np.expm1(f[:, 1])
    age = np.expm1(f[:, 0])
    value = (touches + 1.0) / (age + 1.0)
    value = value * np.where(f[:, 3] == 0.0, 2.0, 1.0) * np.where(f[:, 5] > np.log(2.0), 2.0, 1.0)
    value = np.where(valid, value, np.inf)
    return int(np.argmin(value))
