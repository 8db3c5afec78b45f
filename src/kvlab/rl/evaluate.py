"""Training and evaluation on ``kvlab/PrefixEviction-v0`` (what ``kvlab rl`` runs).

Evaluation: seeded episodes of ``requests`` consecutive requests (offsets drawn from
``seed``), a cache of ``capacity_fraction`` of each episode's distinct blocks (training
sizes it the same way); per
episode the block hit rate (hit blocks / hittable blocks) of kvlab's policies,
Belady's bound, and the agents ``random``, ``heuristic`` and ``learned`` (a saved
MaskablePPO policy). Training: MaskablePPO (sb3-contrib) on the environment, saved as
a zip file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kvlab.errors import ConfigError
from kvlab.rl.baselines import reference_hits
from kvlab.rl.prefix_eviction import PrefixEvictionEnv, episode_capacity, heuristic_action
from kvlab.rl.prefix_trace import PrefixTrace


@dataclass(frozen=True)
class Score:
    """Block hit rates of one policy over the episodes, their mean and 95% half-width."""

    name: str
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else 0.0

    @property
    def ci95(self) -> float:
        n = len(self.values)
        return 1.96 * float(np.std(self.values, ddof=1)) / math.sqrt(n) if n > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "mean": self.mean,
            "ci95": self.ci95,
            "values": list(self.values),
        }


def check_args(episodes: int, requests: int, capacity_fraction: float, k: int) -> None:
    """ConfigError naming the first option out of range (cheap: before a trace loads)."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if requests < 1:
        raise ConfigError(f"--requests must be >= 1, got {requests}")
    if not 0.0 < capacity_fraction <= 1.0:
        raise ConfigError(f"--capacity-fraction must be in (0, 1], got {capacity_fraction}")
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")


def evaluate(
    trace: PrefixTrace,
    *,
    episodes: int = 5,
    requests: int = 400,
    capacity_fraction: float = 0.1,
    k: int = 8,
    seed: int = 0,
    learned: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Score]:
    """Scores of every policy and agent on seeded episodes of ``trace`` (see module doc)."""
    check_args(episodes, requests, capacity_fraction, k)
    model = _load(learned) if learned is not None else None
    rows: dict[str, list[float]] = {}
    rng = np.random.default_rng(seed)
    for ep in range(episodes):
        lo = int(rng.integers(0, max(1, trace.num_requests - requests + 1)))
        lo, hi = trace.window(lo, requests)
        cap = episode_capacity(trace, lo, hi, capacity_fraction)
        hittable = sum(trace.hittable[lo:hi]) or 1
        for name, hits in reference_hits(trace, cap, lo, hi).items():
            rows.setdefault(name, []).append(hits / hittable)
        agents = ["random", "heuristic"] + (["learned"] if model is not None else [])
        for agent in agents:
            env = PrefixEvictionEnv(trace, cap, k=k, episode_requests=hi - lo)
            obs, info = env.reset(seed=seed + ep, options={"first": lo})
            arng = np.random.default_rng(seed + ep)
            done = info["decisions"] == 0
            while not done:
                mask = info["action_mask"]
                if agent == "random":
                    a = int(arng.choice(np.flatnonzero(mask)))
                elif agent == "heuristic":
                    a = heuristic_action(obs, k)
                else:
                    assert model is not None
                    act, _ = model.predict(obs, action_masks=mask, deterministic=True)
                    a = int(act)
                obs, _, done, _, info = env.step(a)
            rows.setdefault(agent, []).append(info["hit_blocks"] / hittable)
        if progress is not None:
            progress(ep + 1, episodes)
    return [Score(name, tuple(v)) for name, v in rows.items()]


def train(
    trace: PrefixTrace,
    out: Path,
    *,
    steps: int = 20_000,
    requests: int = 400,
    capacity_fraction: float = 0.1,
    k: int = 8,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Train MaskablePPO on ``trace`` for ``steps`` decisions; save it to ``out`` (a zip).

    The cache is ``capacity_fraction`` of each episode's distinct blocks, as
    :func:`evaluate` sizes it. ``progress(done, steps)`` is called after every rollout."""
    check_args(1, requests, capacity_fraction, k)
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    env = PrefixEvictionEnv(
        trace, None, k=k, episode_requests=requests, capacity_fraction=capacity_fraction
    )
    n_steps = max(16, min(512, steps))
    model = masked_ppo(env, "MlpPolicy", seed, n_steps)
    model.learn(total_timesteps=steps, callback=progress_callback(progress, n_steps, steps))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return out if out.suffix == ".zip" else out.with_name(out.name + ".zip")


def masked_ppo(env: Any, policy: str, seed: int, n_steps: int) -> Any:
    """sb3-contrib's MaskablePPO on ``env`` as kvlab trains it: CPU torch, rollouts of
    ``n_steps`` steps, batches of at most 64, default hyperparameters otherwise."""
    from sb3_contrib import MaskablePPO

    return MaskablePPO(
        policy,
        env,
        seed=seed,
        n_steps=n_steps,
        batch_size=min(64, n_steps),
        verbose=0,
        device="cpu",
    )


def progress_callback(progress: Callable[[int, int], None] | None, every: int, steps: int) -> Any:
    """A stable-baselines3 callback calling ``progress(done, steps)`` every ``every``
    timesteps (after each rollout of ``every`` steps); None without ``progress``."""
    if progress is None:
        return None
    from stable_baselines3.common.callbacks import BaseCallback

    report = progress

    class _Progress(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % every == 0:
                report(min(self.num_timesteps, steps), steps)
            return True

    return _Progress()


def _load(path: Path) -> Any:
    from kvlab.rl.learned import load_maskable_ppo

    return load_maskable_ppo(path, "rl eval --policy")
