"""Baseline agents on ``kvlab/KVPressure-v0`` and their evaluation per tier (what
``kvlab rl eval-pressure`` runs).

Agents (:data:`AGENTS`): ``keep`` (never acts: the engine's own scheduler handles the
pressure), ``random`` (a uniform allowed action per slot, from the mask), ``heuristic``
(:func:`kvlab.rl.kv_pressure.heuristic_action`: value-aware, acts only at high usage,
compress / swap before evict).

An evaluation plays ``episodes`` episodes per tier and agent on the reset seeds
``seed, seed + 1, ...`` (the same scenarios for every agent; keep them apart from
training seeds) and reports per episode the reward (the episode's score), the unweighted
score of every term and the weight-0 metrics, and per (tier, agent) their means and the
reward's 95% half-width (normal approximation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvlab.errors import ConfigError
from kvlab.rl.pressure_rewards import TERMS
from kvlab.rl.pressure_scenario import DIFFICULTIES, KINDS, check_choice

AGENTS: tuple[str, ...] = ("keep", "random", "heuristic")
#: the weight-0 metrics and action counts reported with the terms
METRICS: tuple[str, ...] = ("tokens", "failures", "swap_latency_s", "pressure_steps")


@dataclass(frozen=True)
class EpisodeRow:
    """One episode of one agent: its reward, term scores (unweighted), metrics, the
    actions it played (engine effects applied) and its decision steps."""

    difficulty: str
    agent: str
    seed: int
    reward: float
    terms: dict[str, float]
    actions: dict[str, int]
    steps: int


@dataclass
class Summary:
    """The episodes of one (tier, agent)."""

    difficulty: str
    agent: str
    rows: list[EpisodeRow] = field(default_factory=list)

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.rows]

    @property
    def mean(self) -> float:
        return float(np.mean(self.rewards)) if self.rows else 0.0

    @property
    def ci95(self) -> float:
        n = len(self.rows)
        return 1.96 * float(np.std(self.rewards, ddof=1)) / math.sqrt(n) if n > 1 else 0.0

    def term_means(self) -> dict[str, float]:
        keys = (*TERMS, *METRICS)
        if not self.rows:
            return dict.fromkeys(keys, 0.0)
        return {k: float(np.mean([r.terms[k] for r in self.rows])) for k in keys}

    def action_means(self) -> dict[str, float]:
        if not self.rows:
            return {}
        keys = self.rows[0].actions
        return {k: float(np.mean([r.actions[k] for r in self.rows])) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {
            "difficulty": self.difficulty,
            "agent": self.agent,
            "episodes": len(self.rows),
            "reward_mean": self.mean,
            "reward_ci95": self.ci95,
            "terms_mean": self.term_means(),
            "actions_mean": self.action_means(),
            "rewards": self.rewards,
        }


def play_episode(env: Any, agent: str, seed: int) -> EpisodeRow:
    """One episode of ``agent`` on ``env`` from reset seed ``seed``."""
    from kvlab.rl.kv_pressure import ACTIONS, heuristic_action

    _, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    keep = np.zeros(env.k, dtype=np.int64)
    actions = dict.fromkeys(ACTIONS[1:], 0)
    done, steps = False, 0
    while not done:
        if agent == "keep":
            a = keep
        elif agent == "random":
            a = np.array([int(rng.choice(np.flatnonzero(row))) for row in info["action_mask"]])
        else:
            a = heuristic_action(env)
        _, _, done, _, info = env.step(a)
        steps += 1
        for k, v in info["applied"].items():
            actions[k] += v
    return EpisodeRow(
        env.difficulty,
        agent,
        seed,
        float(info["episode_reward"]),
        dict(info["episode_terms"]),
        actions,
        steps,
    )


def evaluate(
    difficulties: Sequence[str] = DIFFICULTIES,
    agents: Sequence[str] = AGENTS,
    *,
    episodes: int = 10,
    seed: int = 1000,
    kind: str = "mixed",
    on_episode: Callable[[EpisodeRow, int, int], None] | None = None,
    **env_kwargs: Any,
) -> list[Summary]:
    """Every (tier, agent) over ``episodes`` seeded episodes (module doc).
    ``on_episode(row, done, total)`` is called after each episode."""
    from kvlab.rl.kv_pressure import KVPressureEnv

    if isinstance(episodes, bool) or episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    for d in difficulties:
        check_choice("difficulty", d, DIFFICULTIES)
    for a in agents:
        check_choice("agent", a, AGENTS)
    check_choice("workload kind", kind, KINDS)
    # held-out episodes: a new scenario every reset, not the training set's
    env_kwargs.setdefault("num_scenarios", None)
    rows: list[EpisodeRow] = []
    total = len(difficulties) * len(agents) * episodes
    for d in difficulties:
        env = KVPressureEnv(d, kind=kind, compact_info=False, **env_kwargs)
        try:
            for a in agents:
                for ep in range(episodes):
                    row = play_episode(env, a, seed + ep)
                    rows.append(row)
                    if on_episode is not None:
                        on_episode(row, len(rows), total)
        finally:
            env.close()
    return summarize(rows)


def summarize(rows: Sequence[EpisodeRow]) -> list[Summary]:
    """The rows grouped by (tier, agent), in the order they first appear."""
    out: dict[tuple[str, str], Summary] = {}
    for r in rows:
        key = (r.difficulty, r.agent)
        if key not in out:
            out[key] = Summary(*key)
        out[key].rows.append(r)
    return list(out.values())
