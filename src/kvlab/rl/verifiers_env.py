"""``kvlab/KVPressure-v0`` as a verifiers (>= 0.4, ``verifiers.v1``) taskset: the
``rl-verifiers`` extra. The plugin module verifiers imports by id is ``kvlab_kvpressure``
(``environments/kvlab_kvpressure/``, installable on its own); it re-exports this.

* :class:`KVPressureTaskset` (config :class:`KVPressureTasksetConfig`: ``difficulty``,
  ``num_examples``, ``seed``) yields one :class:`KVPressureTask` per seeded episode
  (:func:`kvlab.rl.pressure_tools.pressure_examples`); its prompt is the episode's first
  compact observation (JSON).
* :class:`KVPressureToolset`, launched per rollout (one episode each), exposes the tools
  ``evict`` / ``compress`` / ``swap_to_cpu`` / ``keep`` (bare names) over a
  :class:`kvlab.rl.pressure_tools.PressureToolSession`; after every call it writes the
  episode's reward and per-term scores into the rollout state (:class:`KVPressureState`).
* :class:`KVPressureTask` scores a rollout with one ``@vf.reward`` per term of
  :mod:`kvlab.rl.pressure_rewards`, each weighted as there, so verifiers reports the
  seven terms separately and their weighted sum is the environment's own reward; the
  weight-0 figures (tokens, failures, swap latency, pressure steps, steps) are metrics.

:func:`load_environment` (``difficulty="all"``, ``num_examples=-1``, ``seed=42``) builds
the single-agent env over this taskset. ``python -m kvlab.rl.verifiers_env`` serves the
toolset (its config in ``VF_CONFIG``): that is how verifiers starts each rollout's tool
server, so a whole rollout (``vf-eval kvlab-kvpressure``, docs/rl.md) needs kvlab
importable from any working directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import verifiers.v1 as vf
from pydantic import Field

from kvlab.rl.pressure_rewards import DEFAULT_WEIGHTS, TERMS
from kvlab.rl.pressure_tools import (
    METRICS,
    SYSTEM_PROMPT,
    PressureExample,
    PressureToolSession,
    pressure_examples,
)

TASKSET_ID = "kvlab-kvpressure"


class KVPressureTasksetConfig(vf.TasksetConfig):
    """``--env.taskset.*``: which episodes load."""

    difficulty: str = "all"
    num_examples: int = -1
    seed: int = 42


class KVPressureData(vf.TaskData):
    """A task's wire data: the tier and the episode's seed."""

    difficulty: str
    seed: int


class KVPressureState(vf.State):
    """What the toolset reports to the rollout after each call."""

    reward: float = 0.0
    steps: int = 0
    done: bool = False
    terms: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    calls: list[str] = Field(default_factory=list)


class KVPressureToolsetConfig(vf.ToolsetConfig):
    pass


class KVPressureToolset(vf.Toolset[KVPressureToolsetConfig, KVPressureState]):
    """The four tools over one episode (one server per rollout)."""

    TOOL_PREFIX = None  # the tools are advertised by their bare names

    session: PressureToolSession | None = None

    async def setup_task(self, task: Any) -> None:
        self.start(PressureExample(task.difficulty, task.seed))

    def start(self, example: PressureExample) -> None:
        self.session = PressureToolSession.start(example)

    def _run(self, name: str, seq_id: str | None) -> str:
        s = self.session
        if s is None:
            return "error: no episode has been started"
        text = s.call(name, {} if seq_id is None else {"seq_id": seq_id})
        st = self.state
        st.reward = s.total_reward
        st.steps = s.steps
        st.done = s.done
        st.terms = s.breakdown()
        st.metrics = s.metrics()
        st.calls = list(s.calls)
        return text

    @vf.tool
    def evict(self, seq_id: str) -> str:
        """Evict a candidate: preempt it, freeing its blocks; returns the next observation."""
        return self._run("evict", seq_id)

    @vf.tool
    def compress(self, seq_id: str) -> str:
        """Compress a candidate's KV one tier (fp16->int8->int4, each halves its blocks)."""
        return self._run("compress", seq_id)

    @vf.tool
    def swap_to_cpu(self, seq_id: str) -> str:
        """Swap a candidate's KV to CPU memory (frees GPU blocks; the transfer takes time)."""
        return self._run("swap_to_cpu", seq_id)

    @vf.tool
    def keep(self) -> str:
        """Change nothing this step. Returns the next observation (JSON)."""
        return self._run("keep", None)


class KVPressureTask(vf.Task[KVPressureData, KVPressureState, vf.TaskConfig]):
    """One seeded episode; scored by the seven terms (added below, one method each).
    verifiers awaits every metric and reward, so they are coroutines."""

    @classmethod
    def toolsets(cls, config: Any) -> list[Any]:
        return [KVPressureToolset(KVPressureToolsetConfig())]

    @vf.metric
    async def steps(self, trace: Any) -> float:
        return float(trace.state.steps)

    @vf.metric
    async def env_metrics(self, trace: Any) -> dict[str, float]:
        return {k: float(trace.state.metrics.get(k, 0.0)) for k in METRICS}


def _term_reward(term: str) -> Any:
    async def reward(self: KVPressureTask, trace: Any) -> float:
        return float(trace.state.terms.get(term, 0.0))

    reward.__name__ = term
    reward.__qualname__ = f"KVPressureTask.{term}"
    reward.__doc__ = f"The {term} term of kvlab.rl.pressure_rewards, weighted as there."
    return vf.reward(reward, weight=DEFAULT_WEIGHTS[term])


for _t in TERMS:
    setattr(KVPressureTask, _t, _term_reward(_t))


class KVPressureTaskset(vf.Taskset[KVPressureTask, KVPressureTasksetConfig]):
    """Seeded KVPressure episodes (see module doc)."""

    def load(self) -> Iterator[KVPressureTask]:
        c = self.config
        for ex in pressure_examples(c.difficulty, c.num_examples, c.seed):
            first = PressureToolSession.start(ex).observation_json()
            yield KVPressureTask(
                KVPressureData(
                    name=ex.name,
                    id=ex.name,
                    prompt=first,
                    system_prompt=SYSTEM_PROMPT,
                    difficulty=ex.difficulty,
                    seed=ex.seed,
                ),
                c.task,
            )


def load_environment(difficulty: str = "all", num_examples: int = -1, seed: int = 42) -> Any:
    """The single-agent verifiers env over :class:`KVPressureTaskset` (the plugin module
    ``kvlab_kvpressure`` must be importable: install ``environments/kvlab_kvpressure``)."""
    from kvlab.rl.pressure_tools import pressure_examples as check

    check(difficulty, num_examples, seed)  # bad arguments: one ConfigError line
    config = vf.SingleAgentEnvConfig(
        taskset=KVPressureTasksetConfig(
            id=TASKSET_ID, difficulty=difficulty, num_examples=num_examples, seed=seed
        )
    )
    return vf.load_environment(config)


__all__ = ["KVPressureTaskset"]


if __name__ == "__main__":
    # verifiers launches each rollout's tool server as ``python -m <toolset's module>``
    KVPressureToolset.run()
