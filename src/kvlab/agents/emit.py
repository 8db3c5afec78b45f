"""The workflow as a kvlab workload, and the simulator's offline answer per model and GPU.

:func:`offline_contexts` runs each strategy's graph without a server: the model
calls go to :class:`OfflineSender`, which answers with an empty text and records
the context it was given. Token counts are LangChain's approximation
(``count_tokens_approximately``: about 4 characters a token plus a few per
message), since the target models' tokenizers are not available offline; the
summaries of ``summarize`` / ``lc_summarize`` are empty offline.

:func:`workload` turns the calls into kvlab requests: one session per strategy
(and agent), one request per model call, one segment per message whose content id
is a hash of the message, so two calls share exactly the messages they have in
common at the same place: the simulator's prefix cache sees what a server's would.

:func:`answer` simulates each strategy's session on each (model, GPU) with the
model's whole context as ``max_model_len``: the first rejected request is the
step where the model overflows; prefix hit rate and TTFT come from the run;
concurrent agents that fit are plan's ``max_concurrency`` at the strategy's
largest prompt. Hybrid models' sliding-window and Mamba groups are sized by plan
(KV bytes, concurrency) and simulated as vLLM's hybrid KV cache groups; the answer
says so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvlab.agents.graph import STRATEGY_NAMES, Reply, StrategyConfig, build_graph, initial_messages
from kvlab.agents.workflow import Workflow, WorkflowConfig
from kvlab.errors import ConfigError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from kvlab.workload.records import Workload

#: Output tokens of every emitted model call (a tool call or a short answer).
OUTPUT_TOKENS = 64
#: Seconds between a call's answer and the next call (the tool runs).
TOOL_TIME_S = 0.5
#: The issue's comparison: models and GPUs (kvlab catalog names).
DEFAULT_MODELS: tuple[str, ...] = ("gpt-oss-120b", "nemotron-3-nano-30b-a3b")
DEFAULT_GPUS: tuple[str, ...] = ("dgx-spark", "h100")
#: Strategies emitted by default (the LLM-summary ones need a model to say anything).
DEFAULT_EMIT_STRATEGIES: tuple[str, ...] = (
    "naive",
    "clip",
    "extract",
    "window",
    "lc_context_edit",
    "cache_aware",
)
HYBRID_NOTE = (
    "hybrid models (sliding-window / Mamba layer groups): KV bytes and concurrency are "
    "sized by plan; the simulator runs plan's block size and block count with vLLM's hybrid KV "
    "cache groups (full, sliding-window, Mamba state), so their hit rate and TTFT are simulated"
)
TOKENS_NOTE = (
    "tokens are LangChain's approximation (about 4 characters a token), not the target "
    "models' tokenizers"
)


@dataclass
class OfflineCall:
    """One model call of an offline run: its step, company and the messages sent."""

    step: int
    kind: str
    company: str | None
    messages: list[BaseMessage]


@dataclass
class OfflineSender:
    """Answers every call with an empty text; keeps the calls (no server involved)."""

    calls: list[OfflineCall] = field(default_factory=list)

    def __call__(
        self, messages: Sequence[BaseMessage], step: int, company: str | None, kind: str
    ) -> Reply:
        self.calls.append(OfflineCall(step, kind, company, list(messages)))
        return Reply("", None, None, None)


def message_tokens(m: BaseMessage) -> int:
    """Approximate tokens of one message (LangChain's ``count_tokens_approximately``)."""
    from langchain_core.messages.utils import count_tokens_approximately

    return max(1, int(count_tokens_approximately([m])))


def offline_contexts(
    strategy: str, wf_config: WorkflowConfig, st_config: StrategyConfig
) -> list[OfflineCall]:
    """The model calls of ``strategy`` on the workflow, without a server."""
    from langchain_core.messages.utils import count_tokens_approximately

    wf = Workflow(wf_config)
    sender = OfflineSender()
    summary_model = _empty_chat() if strategy == "lc_summarize" else None
    graph = build_graph(
        strategy,
        wf,
        sender,
        st_config,
        count_tokens=count_tokens_approximately,
        summary_model=summary_model,
    )
    graph.invoke(
        {
            "messages": initial_messages(wf),
            "results": {},
            "step": 0,
            "stop": None,
            "plan_context": None,
        },
        {"recursion_limit": 4 * wf_config.num_model_calls + 20},
    )
    return sender.calls


def _empty_chat() -> Any:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    return FakeListChatModel(responses=[""])


def _content_id(m: BaseMessage) -> str:
    tool_calls = getattr(m, "tool_calls", None) or []
    raw = json.dumps(
        [m.type, m.content, [[tc["name"], tc["args"], tc["id"]] for tc in tool_calls]],
        sort_keys=True,
        default=str,
    )
    return "agents-" + hashlib.sha256(raw.encode()).hexdigest()[:24]


_KIND = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool_output"}


def workload(
    calls_by_strategy: dict[str, list[OfflineCall]], *, num_agents: int = 1, name: str = "agents"
) -> Workload:
    """kvlab requests of the calls: session ``<strategy>-<agent>``, class = strategy.

    Agents of the same strategy differ only in their session id and system message
    content id, so they share no prefix (different companies)."""
    from kvlab.workload.records import Request, Segment, Workload

    reqs: list[Request] = []
    for strategy, calls in calls_by_strategy.items():
        for agent in range(num_agents):
            for turn, call in enumerate(calls):
                segs = []
                for i, m in enumerate(call.messages):
                    cid = _content_id(m) + (f"-a{agent}" if agent else "")
                    if i == 0 and agent:
                        cid += "-sys"
                    segs.append(
                        Segment(_KIND.get(m.type, m.type), message_tokens(m), cid, "context")
                    )
                first = turn == 0
                reqs.append(
                    Request(
                        request_id=f"{strategy}-{agent}-{turn}",
                        segments=tuple(segs),
                        output_tokens=OUTPUT_TOKENS,
                        arrival_s=0.0 if first else None,
                        think_time_s=None if first else TOOL_TIME_S,
                        session_id=f"{strategy}-{agent}",
                        turn=turn,
                        cls=strategy,
                    )
                )
    return Workload(requests=tuple(reqs), name=name, meta={"source": "kvlab agents emit"})


@dataclass(frozen=True)
class OfflineRow:
    """The simulator's answer for one strategy on one model and GPU."""

    strategy: str
    model: str
    gpu: str
    num_calls: int
    max_prompt_tokens: int
    max_context: int
    overflow_step: int | None
    overflow_company: str | None
    agents_that_fit: int
    prefix_hit_rate: float | None
    ttft_mean_s: float | None
    tokens_sent: int
    kv_bytes_peak: int


def answer(
    calls_by_strategy: dict[str, list[OfflineCall]],
    models: Sequence[str] = DEFAULT_MODELS,
    gpus: Sequence[str] = DEFAULT_GPUS,
    progress: Callable[[str], None] | None = None,
) -> list[OfflineRow]:
    """Simulate every strategy's session on every (model, GPU); see the module docstring."""
    from kvlab.hardware import get_gpu
    from kvlab.models.catalog import get_model
    from kvlab.plan import plan
    from kvlab.sim import SimConfig, simulate

    rows: list[OfflineRow] = []
    for model in models:
        spec = get_model(model)
        for gpu in gpus:
            g = get_gpu(gpu)
            for strategy, calls in calls_by_strategy.items():
                if progress is not None:
                    progress(f"simulating {strategy} on {model} / {gpu}")
                prompts = [r.prompt_tokens for r in workload({strategy: calls}).requests]
                limit = spec.max_context
                over = next((i for i, p in enumerate(prompts) if p + OUTPUT_TOKENS > limit), None)
                # An agent stops at its overflow: simulate the calls before it.
                served = calls if over is None else calls[:over]
                fitting = prompts[: len(served)]
                peak = max(fitting) + OUTPUT_TOKENS if fitting else 1
                p = plan(spec, g, context_tokens=min(peak, limit), whatifs=False)
                fit = math.floor(p.capacity.max_concurrency) if p.vllm_starts else 0
                s: dict[str, Any] = {}
                if served:
                    wl = workload({strategy: served})
                    sim = SimConfig(
                        model=spec,
                        gpu=g,
                        max_model_len=limit,
                        block_size=p.block_size,
                        num_blocks=p.num_gpu_blocks,
                    )
                    s = simulate(wl, sim).summary
                ttft = s.get("ttft_s")
                rows.append(
                    OfflineRow(
                        strategy=strategy,
                        model=spec.name,
                        gpu=g.name,
                        num_calls=len(prompts),
                        max_prompt_tokens=max(prompts),
                        max_context=limit,
                        overflow_step=over,
                        overflow_company=None if over is None else calls[over].company,
                        agents_that_fit=fit,
                        prefix_hit_rate=s.get("prefix_cache_hit_rate"),
                        ttft_mean_s=ttft.get("mean") if isinstance(ttft, dict) else None,
                        tokens_sent=sum(fitting),
                        kv_bytes_peak=int(p.sequence_bytes),
                    )
                )
    return rows


def check_strategies(names: Sequence[str]) -> tuple[str, ...]:
    bad = [n for n in names if n not in STRATEGY_NAMES]
    if bad:
        raise ConfigError(
            f"unknown strategy {', '.join(bad)}; choose from {', '.join(STRATEGY_NAMES)}"
        )
    return tuple(names)
