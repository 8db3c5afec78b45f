"""MaskablePPO on ``kvlab/KVPressure-v0`` and its evaluation next to the random and
heuristic agents (what ``kvlab rl train --env kvpressure`` / ``kvlab rl eval --env
kvpressure`` run).

Training: MaskablePPO (sb3-contrib, CPU torch) on one tier, episodes seeded from the
training seed; the policy is saved as a zip, the training log (stable-baselines3's
``progress.csv``: episode reward mean, losses, per rollout) and ``train.json`` (tier,
steps, seed, wall time) beside it.

Evaluation: ``episodes`` held-out seeds (``seed, seed + 1, ...``; keep them apart from
training's) per agent; per agent the episode reward (mean, 95% half-width) and the mean
of each reward term (unweighted) and of the weight-0 metrics, from the environment's
own info at the episode's end.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kvlab.errors import ConfigError
from kvlab.rl.pressure_rewards import TERMS
from kvlab.rl.pressure_tools import DIFFICULTIES, METRICS, make_env


@dataclass(frozen=True)
class PressureScore:
    """One agent on one tier: episode rewards and the mean of each term / metric."""

    agent: str
    difficulty: str
    rewards: tuple[float, ...]
    terms: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.rewards)) if self.rewards else 0.0

    @property
    def ci95(self) -> float:
        n = len(self.rewards)
        return 1.96 * float(np.std(self.rewards, ddof=1)) / math.sqrt(n) if n > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "difficulty": self.difficulty,
            "mean": self.mean,
            "ci95": self.ci95,
            "rewards": list(self.rewards),
            "terms": dict(self.terms),
            "metrics": dict(self.metrics),
        }


def check_difficulty(difficulty: str) -> None:
    if difficulty not in DIFFICULTIES:
        raise ConfigError(
            f"--difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}"
        )


def flat_mask(env: Any) -> np.ndarray:
    """The environment's action mask flattened as MaskablePPO takes it for MultiDiscrete
    (slot by slot, every action of a slot)."""
    return np.asarray(env.action_masks(), dtype=bool).reshape(-1)


def masked_env(difficulty: str, seed: int, **env_kwargs: Any) -> Any:
    """A tier's environment, episode statistics recorded, masks for MaskablePPO."""
    from sb3_contrib.common.wrappers import ActionMasker
    from stable_baselines3.common.monitor import Monitor

    env = make_env(difficulty, **env_kwargs)
    env.reset(seed=seed)
    return ActionMasker(Monitor(env), lambda e: flat_mask(e.unwrapped))


def train_pressure(
    difficulty: str,
    out: Path,
    *,
    steps: int = 20_000,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    **env_kwargs: Any,
) -> Path:
    """Train MaskablePPO on one tier for ``steps`` decision steps; save the policy to
    ``out`` (``.zip`` added when missing), the log beside it (see module doc)."""
    check_difficulty(difficulty)
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import configure

    path = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
    log_dir = path.with_name(path.stem + "-log")
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = masked_env(difficulty, seed, **env_kwargs)
    n_steps = max(16, min(256, steps))
    model = MaskablePPO(
        "MultiInputPolicy" if _is_dict_space(env.observation_space) else "MlpPolicy",
        env,
        seed=seed,
        n_steps=n_steps,
        batch_size=min(64, n_steps),
        verbose=0,
        device="cpu",
    )
    model.set_logger(configure(str(log_dir), ["csv"]))

    class _Progress(BaseCallback):
        def _on_step(self) -> bool:
            if progress is not None and self.num_timesteps % n_steps == 0:
                progress(min(self.num_timesteps, steps), steps)
            return True

    model.learn(total_timesteps=steps, callback=_Progress())
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    meta = {
        "env": "kvlab/KVPressure-v0",
        "difficulty": difficulty,
        "steps": steps,
        "seed": seed,
        "n_steps": n_steps,
        "wall_s": time.perf_counter() - t0,
        "policy": str(path),
        "log": str(log_dir / "progress.csv"),
    }
    (log_dir / "train.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def _is_dict_space(space: Any) -> bool:
    from gymnasium import spaces

    return isinstance(space, spaces.Dict)


def load_policy(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: no such policy file (a zip saved by `kvlab rl train`)")
    from sb3_contrib import MaskablePPO

    try:
        return MaskablePPO.load(str(path), device="cpu")
    except Exception as e:  # a corrupt or foreign zip
        raise ConfigError(f"{path}: not a MaskablePPO policy ({type(e).__name__}: {e})") from None


def evaluate_pressure(
    difficulty: str,
    *,
    episodes: int = 10,
    seed: int = 1000,
    learned: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    **env_kwargs: Any,
) -> list[PressureScore]:
    """Every agent on ``episodes`` seeded episodes of one tier (see module doc)."""
    check_difficulty(difficulty)
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    model = load_policy(learned) if learned is not None else None
    agents: dict[str, Callable[[Any, Any, np.random.Generator], np.ndarray]] = {
        "random": _random_action,
        "heuristic": _heuristic_action,
    }
    if model is not None:
        agents["ppo"] = lambda env, obs, rng: np.asarray(
            model.predict(obs, action_masks=flat_mask(env), deterministic=True)[0]
        )
    scores: list[PressureScore] = []
    total = episodes * len(agents)
    done_n = 0
    for name, act in agents.items():
        rewards: list[float] = []
        terms = {t: 0.0 for t in TERMS}
        metrics = {m: 0.0 for m in METRICS}
        for ep in range(episodes):
            env = make_env(difficulty, **env_kwargs)
            obs, info = env.reset(seed=seed + ep)
            rng = np.random.default_rng(seed + ep)
            ep_reward, done = 0.0, False
            while not done:
                obs, r, term, trunc, info = env.step(act(env, obs, rng))
                ep_reward += float(r)
                done = bool(term or trunc)
            rewards.append(ep_reward)
            final = info["episode_terms"]  # unweighted episode scores and metrics
            for t in TERMS:
                terms[t] += float(final[t]) / episodes
            for m in METRICS:
                metrics[m] += float(final[m]) / episodes
            done_n += 1
            if progress is not None:
                progress(done_n, total)
        scores.append(PressureScore(name, difficulty, tuple(rewards), terms, metrics))
    return scores


def _random_action(env: Any, obs: Any, rng: np.random.Generator) -> np.ndarray:
    """Uniform among the actions the mask allows, slot by slot."""
    mask = np.asarray(env.action_masks(), dtype=bool).reshape(env.k, -1)
    return np.array([rng.choice(np.flatnonzero(row)) for row in mask], dtype=np.int64)


def _heuristic_action(env: Any, obs: Any, rng: np.random.Generator) -> np.ndarray:
    from kvlab.rl.kv_pressure import heuristic_action

    return np.asarray(heuristic_action(env))
