"""MaskablePPO on ``kvlab/KVPressure-v0`` (what ``kvlab rl train --env kvpressure``
runs) and a trained policy's episodes next to the baselines of
:mod:`kvlab.rl.pressure_baselines` (what ``kvlab rl eval-pressure --policy`` runs).

Training: MaskablePPO (sb3-contrib, CPU torch) on one tier, the environment reset from
the training seed and its episodes' scenarios drawn from that stream; the policy is
saved as a zip, the training log (stable-baselines3's ``progress.csv``: episode reward
mean, losses, per rollout) and ``train.json`` (tier, steps, seed, wall time) in
``FILE-log/`` beside it.

Evaluation: the agent ``ppo`` plays the same held-out reset seeds as the baselines
(deterministic actions, masked); its episodes are :class:`EpisodeRow` s like theirs, so
one table reports every agent's reward and each term.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kvlab.errors import ConfigError
from kvlab.rl.pressure_tools import DIFFICULTIES, make_env


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
    from stable_baselines3.common.logger import configure

    from kvlab.rl.evaluate import masked_ppo, progress_callback

    path = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
    log_dir = path.with_name(path.stem + "-log")
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = masked_env(difficulty, seed, **env_kwargs)
    n_steps = max(16, min(256, steps))
    policy = "MultiInputPolicy" if _is_dict_space(env.observation_space) else "MlpPolicy"
    model = masked_ppo(env, policy, seed, n_steps)
    model.set_logger(configure(str(log_dir), ["csv"]))

    model.learn(total_timesteps=steps, callback=progress_callback(progress, n_steps, steps))
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


def play_policy(env: Any, model: Any, seed: int) -> Any:
    """One episode of a trained policy from reset seed ``seed``, as an
    :class:`kvlab.rl.pressure_baselines.EpisodeRow` of agent ``ppo``."""
    from kvlab.rl.kv_pressure import ACTIONS
    from kvlab.rl.pressure_baselines import EpisodeRow

    obs, info = env.reset(seed=seed)
    actions = dict.fromkeys(ACTIONS[1:], 0)
    done, steps = False, 0
    while not done:
        act, _ = model.predict(obs, action_masks=flat_mask(env), deterministic=True)
        obs, _, term, trunc, info = env.step(np.asarray(act))
        done = bool(term or trunc)
        steps += 1
        for k, v in info["applied"].items():
            actions[k] += v
    return EpisodeRow(
        env.difficulty,
        "ppo",
        seed,
        float(info["episode_reward"]),
        dict(info["episode_terms"]),
        actions,
        steps,
    )


def evaluate_with_policy(
    difficulties: Sequence[str],
    agents: Sequence[str],
    policy: Path | None,
    *,
    episodes: int = 10,
    seed: int = 1000,
    kind: str = "mixed",
    on_episode: Callable[[Any, int, int], None] | None = None,
    **env_kwargs: Any,
) -> list[Any]:
    """:func:`kvlab.rl.pressure_baselines.evaluate` of ``agents`` on each tier, then
    (with ``policy``) the trained policy on the same seeds; the summaries tier by tier."""
    from kvlab.rl.kv_pressure import KVPressureEnv
    from kvlab.rl.pressure_baselines import evaluate, summarize

    model = load_policy(policy) if policy is not None else None  # bad file: one line first
    env_kwargs.setdefault("num_scenarios", None)  # held-out: a new scenario every reset
    rows: list[Any] = []
    per_tier = len(agents) * episodes + (episodes if model is not None else 0)
    total = len(difficulties) * per_tier

    def seen(row: Any, _done: int, _total: int) -> None:
        rows.append(row)
        if on_episode is not None:
            on_episode(row, len(rows), total)

    for d in difficulties:
        if agents:
            evaluate([d], agents, episodes=episodes, seed=seed, kind=kind, on_episode=seen,
                     **env_kwargs)  # fmt: skip
        if model is None:
            continue
        check_difficulty(d)
        env = KVPressureEnv(d, kind=kind, compact_info=False, **env_kwargs)
        try:
            for ep in range(episodes):
                seen(play_policy(env, model, seed + ep), 0, 0)
        finally:
            env.close()
    return summarize(rows)
