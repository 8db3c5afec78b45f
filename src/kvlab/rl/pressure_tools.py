"""``kvlab/KVPressure-v0`` as tools for an LLM: ``evict`` / ``compress`` /
``swap_to_cpu`` / ``keep`` over the compact JSON observation, and the environment's
seven reward terms as one scoring function each. Nothing here imports verifiers: the
verifiers taskset (:mod:`kvlab.rl.verifiers_env`) and any other LLM harness wrap this.

A :class:`PressureToolSession` is one seeded episode. Every tool call is **one decision
step** of the environment: ``evict(seq_id)`` / ``compress(seq_id)`` / ``swap_to_cpu(seq_id)``
act on one of the visible eviction candidates and keep every other one; ``keep()``
acts on none. The call's text answer is the next compact observation (JSON), or the
episode's result once it is over. A call the action mask forbids (an id that is not a
candidate, or an action masked for it) is answered with an error line and does **not**
advance the episode (no step is spent).

Invariant: the session's reward is the environment's own: the sum of the rewards its
``step`` returned (the environment pays the change of the weighted episode score, so
the sum is the episode's score), and the per-term scores are the last step's
``info["episode_terms"]``, so ``sum(weight[t] * term[t])`` over
:data:`kvlab.rl.pressure_rewards.TERMS` equals :attr:`PressureToolSession.total_reward`
with the default weights (tests play fixed tool sequences and check).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import ConfigError
from kvlab.rl.pressure_rewards import DEFAULT_WEIGHTS, TERMS

#: the tools, in the environment's action-code order (``keep`` is code 0)
TOOL_ACTIONS: tuple[str, ...] = ("keep", "evict", "compress", "swap_to_cpu")
DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
#: the weight-0 figures of ``info["episode_terms"]``
METRICS: tuple[str, ...] = ("tokens", "failures", "swap_latency_s", "pressure_steps")

SYSTEM_PROMPT = (
    "You manage the GPU KV cache of an LLM inference server under memory pressure. "
    "At each decision step you see a JSON observation: memory usage and budget, the "
    "steps left, pressure signals, an overview of the cache, the requests using most "
    "memory, the eviction candidates (seq_id, blocks, progress, retention class, "
    "protected share, the actions allowed on each) with an eviction order (safest "
    "first) and the pending queue. Call exactly one tool per step: "
    "evict(seq_id) frees a request's blocks (its work is recomputed later), "
    "compress(seq_id) halves its KV memory (fp16 -> int8 -> int4), "
    "swap_to_cpu(seq_id) moves its blocks to CPU memory (the transfer takes time), "
    "keep() changes nothing. Only the listed candidates can be acted on, and only "
    "with the actions listed for them. Keep memory below the budget without failing "
    "requests; prefer not to evict system or context blocks or requests that are "
    "nearly done."
)


@dataclass(frozen=True)
class PressureExample:
    """One task: a seeded episode of one difficulty tier."""

    difficulty: str
    seed: int

    @property
    def name(self) -> str:
        return f"kvpressure-{self.difficulty}-{self.seed}"


def pressure_examples(
    difficulty: str = "all", num_examples: int = -1, seed: int = 42, per_tier: int = 50
) -> list[PressureExample]:
    """The examples of ``load_environment``: ``per_tier`` seeded episodes of each
    requested tier (``"all"`` = easy, medium, hard interleaved), seeds ``seed + i``,
    cut to ``num_examples`` (``-1`` = all of them)."""
    tiers = _tiers(difficulty)
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < -1:
        raise ConfigError(f"num_examples must be -1 (all) or >= 0, got {num_examples!r}")
    if per_tier < 1:
        raise ConfigError(f"per_tier must be >= 1, got {per_tier}")
    n = per_tier * len(tiers) if num_examples == -1 else num_examples
    out: list[PressureExample] = []
    i = 0
    while len(out) < n:
        out.append(PressureExample(tiers[i % len(tiers)], seed + i // len(tiers)))
        i += 1
    return out


def _tiers(difficulty: str) -> tuple[str, ...]:
    if difficulty == "all":
        return DIFFICULTIES
    if difficulty not in DIFFICULTIES:
        raise ConfigError(
            f"difficulty must be one of all, {', '.join(DIFFICULTIES)}; got {difficulty!r}"
        )
    return (difficulty,)


def make_env(difficulty: str, **kwargs: Any) -> Any:
    """A ``KVPressureEnv`` of one tier (imports the rl extra)."""
    from kvlab.rl.kv_pressure import KVPressureEnv

    _tiers(difficulty)
    return KVPressureEnv(difficulty=difficulty, **kwargs)


@dataclass
class PressureToolSession:
    """One episode driven by tool calls (see module doc)."""

    env: Any
    seed: int
    total_reward: float = 0.0
    steps: int = 0
    done: bool = False
    last_info: dict[str, Any] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    actions: list[list[int]] = field(default_factory=list)

    @classmethod
    def start(cls, example: PressureExample, **env_kwargs: Any) -> PressureToolSession:
        env = make_env(example.difficulty, **env_kwargs)
        _obs, info = env.reset(seed=example.seed)
        return cls(env=env, seed=example.seed, last_info=dict(info))

    # -- what the model sees ---------------------------------------------------------
    def observation(self) -> dict[str, Any]:
        return dict(self.env.compact_observation())

    def observation_json(self) -> str:
        return json.dumps(self.observation(), sort_keys=True, separators=(",", ":"))

    def candidate_ids(self) -> list[str]:
        """The seq ids of the candidate slots, in slot (action) order."""
        cands = sorted(self.observation()["candidates"], key=lambda c: int(c["slot"]))
        return [str(c["seq_id"]) for c in cands]

    # -- the tools -------------------------------------------------------------------
    def keep(self) -> str:
        """Act on no candidate: advance to the next decision step."""
        return self._act("keep", None)

    def evict(self, seq_id: str) -> str:
        """Evict a candidate sequence (preemption by recompute)."""
        return self._act("evict", seq_id)

    def compress(self, seq_id: str) -> str:
        """Compress a candidate's KV cache one tier (fp16 -> int8 -> int4)."""
        return self._act("compress", seq_id)

    def swap_to_cpu(self, seq_id: str) -> str:
        """Move a candidate's KV blocks to CPU memory (the transfer takes time)."""
        return self._act("swap_to_cpu", seq_id)

    def call(self, name: str, arguments: Mapping[str, Any] | None = None) -> str:
        """A tool call by name (what a harness hands over)."""
        args = dict(arguments or {})
        if name == "keep":
            return self.keep()
        if name in TOOL_ACTIONS:
            if "seq_id" not in args:
                return f"error: {name} needs seq_id"
            return self._act(name, args["seq_id"])
        return f"error: unknown tool {name!r}; the tools are {', '.join(TOOL_ACTIONS)}"

    def _act(self, tool: str, seq_id: object) -> str:
        import numpy as np

        if self.done:
            return "error: the episode is over"
        n_slots = len(self.env.action_space.nvec)
        action = np.zeros(n_slots, dtype=np.int64)
        if seq_id is not None:
            if isinstance(seq_id, bool) or not isinstance(seq_id, int | str):
                return f"error: seq_id must be a seq id (string), got {seq_id!r}"
            seq_id = str(seq_id)
            ids = self.candidate_ids()
            if seq_id not in ids:
                return (
                    f"error: seq {seq_id} is not an eviction candidate now; "
                    f"candidates: {', '.join(ids) or 'none'}"
                )
            slot = ids.index(seq_id)
            code = TOOL_ACTIONS.index(tool)
            mask = self.last_info.get("action_mask")
            if mask is not None and not bool(np.asarray(mask)[slot][code]):
                return f"error: {tool} is not allowed for seq {seq_id} now"
            action[slot] = code
        _obs, reward, terminated, truncated, info = self.env.step(action)
        self.total_reward += float(reward)
        self.steps += 1
        self.last_info = dict(info)
        self.calls.append(tool if seq_id is None else f"{tool}({seq_id})")
        self.actions.append([int(a) for a in action])
        self.done = bool(terminated or truncated)
        if self.done:
            return json.dumps({"episode_over": True, **self.result()}, sort_keys=True)
        return self.observation_json()

    # -- the score -------------------------------------------------------------------
    def breakdown(self) -> dict[str, float]:
        """Each term's unweighted episode score so far (the last step's
        ``info["episode_terms"]``; zeros before the first step)."""
        terms = self.last_info.get("episode_terms", {})
        return {t: float(terms.get(t, 0.0)) for t in TERMS}

    def metrics(self) -> dict[str, float]:
        """The weight-0 figures of the episode so far (:data:`METRICS`)."""
        terms = self.last_info.get("episode_terms", {})
        return {m: float(terms.get(m, 0.0)) for m in METRICS}

    def result(self) -> dict[str, Any]:
        return {
            "reward": self.total_reward,
            "steps": self.steps,
            "terms": self.breakdown(),
            "metrics": self.metrics(),
        }


def term_scorer(term: str) -> Callable[[Mapping[str, float]], float]:
    """A scoring function of one term over a result's ``terms`` mapping; its name is the
    term's (so a harness reports each term by name)."""
    if term not in DEFAULT_WEIGHTS:
        raise ConfigError(f"unknown reward term {term!r}; choose from {', '.join(TERMS)}")

    def score(terms: Mapping[str, float]) -> float:
        return float(terms.get(term, 0.0))

    score.__name__ = term
    score.__qualname__ = term
    return score


def term_scorers() -> Iterator[tuple[Callable[[Mapping[str, float]], float], float]]:
    """Every term's scoring function with its weight, in :data:`TERMS` order."""
    for t in TERMS:
        yield term_scorer(t), DEFAULT_WEIGHTS[t]
