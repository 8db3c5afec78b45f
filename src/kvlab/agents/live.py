"""Run the workflow's graphs against an OpenAI-compatible server and measure every model call.

Each model call becomes one :class:`StepRow` (``steps.jsonl``): prompt and cached
tokens from the server's ``usage`` (cached tokens need vLLM's
``--enable-prompt-tokens-details``), the bytes of the context sent, the KV bytes that
context would take on the target models (:func:`kvlab.plan.plan`, counted in the
served model's tokens), the server's KV usage and preemptions from ``/metrics`` right
after the call, and the call's latency. A 400 from the server is an overflow,
classified by its message (:func:`classify_overflow`) and recorded with its step and
company; the agent stops there. The run directory also holds kvlab's
``requests.jsonl`` / ``summary.json`` (one request per model call, class = strategy),
so ``kvlab compare`` reads it, and ``agents.json``: per agent its completion,
overflow, fact retention and token totals.

Who decides (``RunConfig.decisions``): ``scripted`` (the default,
:class:`kvlab.agents.workflow.ScriptedPolicy`): the tiny models this runs on in tests
write noise and cannot call tools, so the tool sequence is fixed, while every model
call is really sent with the context the strategy keeps. ``model``: the five tools are
bound to the chat model (``bind_tools``, OpenAI tool calling) and the model's own tool
calls drive the graph; each row then lists the calls the model made and how many of
them could not run, and the run ends as :data:`kvlab.agents.graph.END_REASONS` says.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kvlab.agents.graph import (
    DECISION_MODES,
    Reply,
    StrategyConfig,
    ToolsRefused,
    build_graph,
    context_text,
    default_max_steps,
    initial_messages,
)
from kvlab.agents.workflow import (
    Workflow,
    WorkflowConfig,
    check_tool_call,
    fact_retention,
    tool_schemas,
)
from kvlab.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    ContextOverflow,
    ServerError,
)

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

#: Default target models for the KV bytes column (kvlab catalog names) and their GPU.
DEFAULT_TARGETS: tuple[str, ...] = ("gpt-oss-120b", "nemotron-3-nano-30b-a3b", "llama-3.1-8b")
DEFAULT_TARGET_GPU = "h100"
#: Overflow kinds (:func:`classify_overflow`).
OVERFLOW_KINDS: tuple[str, ...] = ("context_length", "negative_max_tokens")
#: What the run says about who decided, by ``--decisions``.
DECISIONS = "decisions scripted (fixed tool sequence); every model call really sent"
DECISIONS_MODEL = "decisions by the model: its own tool calls drive the graph"
DECISION_TEXT: dict[str, str] = {"scripted": DECISIONS, "model": DECISIONS_MODEL}

_NEG_MAX = re.compile(r"max_tokens must be at least 1, got (-?\d+)")
_CTX = re.compile(r"maximum context length|context length|max_model_len|too long", re.IGNORECASE)


def classify_overflow(message: str) -> str | None:
    """``negative_max_tokens`` (``max_tokens must be at least 1, got -N``),
    ``context_length`` (the prompt plus output exceeds the model's length), or None."""
    if _NEG_MAX.search(message):
        return "negative_max_tokens"
    if _CTX.search(message):
        return "context_length"
    return None


class AgentOverflow(ContextOverflow):
    """The server refused a model call as too long: ``kind`` (see OVERFLOW_KINDS),
    at model call ``step`` while working on ``company``."""

    def __init__(self, message: str, *, kind: str, step: int, company: str | None) -> None:
        super().__init__(message, status=400)
        self.kind = kind
        self.step = step
        self.company = company


class AgentStopped(BackendError):
    """The run was interrupted: the agent makes no further model call."""


@dataclass
class StepRow:
    """One model call. Tokens are the served model's; ``kv_bytes`` per target model is
    plan's bytes for a sequence of ``prompt_tokens`` (None when the prompt is unknown)."""

    agent: int
    strategy: str
    step: int
    kind: str
    company: str | None
    t_s: float
    latency_s: float
    num_messages: int
    context_bytes: int
    prompt_tokens: int | None
    cached_tokens: int | None
    output_tokens: int | None
    kv_bytes: dict[str, int] | None
    server_kv_usage_perc: float | None
    server_preemptions: float | None
    status: str = "ok"
    overflow_kind: str | None = None
    error: str | None = None
    #: Who chose this step's tool calls: "model" or "scripted".
    decided_by: str = "scripted"
    #: The tool calls the model made in its answer (name, args, id, and ``invalid``:
    #: why it cannot run, or None); empty under scripted decisions (the model is not
    #: offered tools) and for summary calls.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: How many of ``tool_calls`` cannot run (unknown tool, bad JSON, wrong argument).
    invalid_tool_calls: int = 0


def context_bytes(messages: Sequence[BaseMessage]) -> int:
    """UTF-8 bytes of the messages' contents and tool-call arguments."""
    return len(context_text(messages).encode("utf-8"))


def reset_prefix_cache(endpoint: str, timeout_s: float = 10.0) -> bool:
    """POST vLLM's ``/reset_prefix_cache`` (served when ``VLLM_SERVER_DEV_MODE=1``), so a
    run's hits are its own; True when the server did it."""
    req = urllib.request.Request(
        endpoint.rstrip("/") + "/reset_prefix_cache", data=b"", method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


class ServerProbe:
    """The server's KV usage gauge and preemption counter from ``/metrics`` (vLLM names,
    :data:`kvlab.backends.metrics.VLLM`); None where the server does not export them."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.url = base_url.rstrip("/") + "/metrics"
        self.timeout_s = timeout_s
        self.first_preemptions: float | None = None

    def read(self) -> tuple[float | None, float | None]:
        from kvlab.backends.metrics import detect_profile, parse_prometheus

        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as r:
                samples = parse_prometheus(r.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError, ValueError):
            return None, None
        profile = detect_profile(samples)
        if profile is None:
            return None, None
        gauges = profile.read(samples, "gauges")
        counters = profile.read(samples, "counters")
        pre = counters.get("num_preemptions")
        if pre is not None and self.first_preemptions is None:
            self.first_preemptions = pre
        delta = (
            None if pre is None or self.first_preemptions is None else pre - self.first_preemptions
        )
        return gauges.get("kv_cache_usage_perc"), delta


@lru_cache(maxsize=4096)
def kv_bytes_on(model: str, gpu: str, tokens: int) -> int:
    """Bytes of one sequence of ``tokens`` tokens of ``model`` on ``gpu`` (plan's
    ``sequence_bytes``: all layers, sliding windows and Mamba state included)."""
    from kvlab.plan import plan

    return int(plan(model, gpu, context_tokens=max(1, tokens), whatifs=False).sequence_bytes)


class ServerTokenCounter:
    """Exact prompt tokens of a message list from the server's ``POST /tokenize`` (vLLM:
    the chat template applied, generation prompt added). When the server has no such
    endpoint, the :class:`TokenEstimate` fallback answers and ``exact`` turns False."""

    def __init__(self, endpoint: str, model: str, fallback: TokenEstimate, timeout_s: float = 30.0):
        self.url = endpoint.rstrip("/") + "/tokenize"
        self.model = model
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.exact = True

    def __call__(self, messages: Sequence[BaseMessage]) -> int:
        if not self.exact:
            return self.fallback(messages)
        body = json.dumps(
            {
                "model": self.model,
                "messages": openai_messages(messages),
                "add_generation_prompt": True,
            }
        ).encode()
        req = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return int(json.loads(r.read())["count"])
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            self.exact = False
            return self.fallback(messages)


def openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """The messages as the chat-completions request carries them: LangChain's conversion,
    plus the tool calls whose arguments are not JSON (``invalid_tool_calls``), which
    ChatOpenAI sends as tool calls too and the conversion leaves out."""
    from langchain_core.messages import convert_to_openai_messages

    out = convert_to_openai_messages(list(messages))
    for m, d in zip(messages, out, strict=True):
        bad = getattr(m, "invalid_tool_calls", None) or []
        if bad and isinstance(d, dict):
            d.setdefault("tool_calls", []).extend(
                {"type": "function", "id": tc.get("id"),
                 "function": {"name": tc.get("name"), "arguments": tc.get("args") or ""}}
                for tc in bad
            )  # fmt: skip
    return list(out)


class TokenEstimate:
    """Tokens of a message list when the server cannot count them: characters x the
    largest tokens-per-character ratio the server has reported so far (1/4 before the
    first reply), plus 4 tokens per message. Conservative: the ratio only grows."""

    def __init__(self) -> None:
        self.tokens_per_char = 0.25
        self._lock = threading.Lock()

    def observe(self, chars: int, prompt_tokens: int) -> None:
        if chars > 0:
            with self._lock:
                self.tokens_per_char = max(self.tokens_per_char, prompt_tokens / chars)

    def __call__(self, messages: Sequence[BaseMessage]) -> int:
        chars = len(context_text(messages))
        return int(chars * self.tokens_per_char) + 4 * len(messages) + 1


@dataclass
class Recorder:
    """Collects StepRows, appends them to ``steps.jsonl`` and prints progress lines."""

    path: Path | None
    progress: TextIO | None = None
    rows: list[StepRow] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, row: StepRow, total_steps: int, companies: Sequence[str] = ()) -> None:
        with self._lock:
            self.rows.append(row)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(row), sort_keys=True) + "\n")
            if self.progress is not None:
                what = row.company or ("masterplan" if row.decided_by == "scripted" else "")
                if row.company is not None and row.company in companies:
                    what = (
                        f"company {list(companies).index(row.company) + 1}/{len(companies)} {what}"
                    )
                tok = "?" if row.prompt_tokens is None else f"{row.prompt_tokens:,}"
                hit = "" if row.cached_tokens is None else f", cached {row.cached_tokens:,}"
                status = {"ok": "", "overflow": f"  OVERFLOW ({row.overflow_kind})"}.get(
                    row.status, f"  {row.status.upper()}: {row.error}"
                )
                if row.decided_by == "model" and row.kind == "agent" and row.status == "ok":
                    names = ", ".join(str(c["name"]) for c in row.tool_calls) or "no tool call"
                    bad = f", {row.invalid_tool_calls} invalid" if row.invalid_tool_calls else ""
                    status += f"  -> {names}{bad}"
                print(
                    f"[{row.strategy} agent {row.agent}] step {row.step + 1}/{total_steps} "
                    f"{row.kind}{' ' + what if what else ''}: prompt {tok} tok{hit}, "
                    f"{row.latency_s:.2f} s{status}",
                    file=self.progress,
                    flush=True,
                )


class LiveSender:
    """Sends the context to the server with langchain-openai's ``ChatOpenAI`` and records
    a StepRow per call (see the module docstring)."""

    def __init__(
        self,
        *,
        endpoint: str,
        model: str,
        agent: int,
        strategy: str,
        recorder: Recorder,
        probe: ServerProbe,
        estimate: TokenEstimate,
        targets: Sequence[str],
        target_gpu: str,
        total_steps: int,
        companies: Sequence[str],
        max_output_tokens: int,
        t0: float,
        timeout_s: float,
        decisions: str = "scripted",
    ) -> None:
        from langchain_openai import ChatOpenAI

        self.chat = ChatOpenAI(
            model=model,
            base_url=endpoint.rstrip("/") + "/v1",
            api_key="EMPTY",  # type: ignore[arg-type]
            temperature=0,
            max_tokens=max_output_tokens,  # type: ignore[call-arg]
            max_retries=0,
            timeout=timeout_s,
        )
        self.agent, self.strategy, self.recorder = agent, strategy, recorder
        self.probe, self.estimate = probe, estimate
        self.targets, self.target_gpu = tuple(targets), target_gpu
        self.total_steps, self.t0 = total_steps, t0
        self.companies = tuple(companies)
        self.last_step = 0
        self.decisions = decisions
        # Model decisions: the agent's calls offer the five tools (tool_choice auto).
        self.chat_tools = self.chat.bind_tools(tool_schemas()) if decisions == "model" else None

    def __call__(
        self, messages: Sequence[BaseMessage], step: int, company: str | None, kind: str
    ) -> Reply:
        import openai

        if step < 0:  # a call the strategy makes on its own (a summary): the current step
            step = self.last_step
        elif kind == "agent":
            self.last_step = step
        if self.recorder.stop.is_set():
            raise AgentStopped(f"agent {self.agent} stopped before model call {step}")
        text_chars = len(context_text(messages))
        t_send = time.perf_counter()
        err: AgentOverflow | ToolsRefused | None = None
        model_decides = self.chat_tools is not None and kind == "agent"
        chat: Any = self.chat_tools if model_decides else self.chat
        try:
            resp = chat.invoke(list(messages))
        except openai.BadRequestError as e:
            msg = str(getattr(e, "message", e))
            kind_of = classify_overflow(msg)
            if kind_of is None and model_decides and "tool" in msg.lower():
                err = ToolsRefused(f"HTTP 400: {msg}", status=400)
            elif kind_of is None:
                raise ServerError(
                    f"model call {step} ({company}): HTTP 400: {msg}", status=400
                ) from None
            else:
                err = AgentOverflow(msg, kind=kind_of, step=step, company=company)
        except openai.APIConnectionError as e:
            raise BackendUnavailable(f"cannot reach the server: {e}") from None
        except openai.APIStatusError as e:
            raise ServerError(
                f"model call {step}: HTTP {e.status_code}: {e.message}", status=e.status_code
            ) from None
        latency = time.perf_counter() - t_send
        usage: dict[str, Any] = {} if err else dict(resp.usage_metadata or {})
        content = "" if err else str(resp.content)
        calls: tuple[dict[str, Any], ...] = () if err else tuple(resp.tool_calls or ())
        bad: tuple[dict[str, Any], ...] = () if err else tuple(resp.invalid_tool_calls or ())
        listed = [
            {"name": c.get("name"), "args": c.get("args"), "id": c.get("id"),
             "invalid": check_tool_call(c.get("name"), c.get("args"))}
            for c in calls
        ] + [
            {"name": c.get("name"), "args": c.get("args"), "id": c.get("id"),
             "invalid": f"arguments are not valid JSON: {str(c.get('args'))[:80]!r}"}
            for c in bad
        ]  # fmt: skip
        prompt = usage.get("input_tokens")
        cached = (usage.get("input_token_details") or {}).get("cache_read")
        if prompt is not None:
            self.estimate.observe(text_chars, int(prompt))
        kv_use, pre = self.probe.read()
        if model_decides:  # the company the model's calls name, else the one it worked on
            named = [c["args"].get("company") for c in calls if isinstance(c.get("args"), dict)]
            company = next((n for n in named if n in self.companies), company)
        row = StepRow(
            agent=self.agent,
            strategy=self.strategy,
            step=step,
            kind=kind,
            company=company,
            t_s=round(t_send - self.t0, 6),
            latency_s=round(latency, 6),
            num_messages=len(messages),
            context_bytes=context_bytes(messages),
            prompt_tokens=None if prompt is None else int(prompt),
            cached_tokens=None if cached is None else int(cached),
            output_tokens=usage.get("output_tokens"),
            kv_bytes=None
            if prompt is None
            else {t: kv_bytes_on(t, self.target_gpu, int(prompt)) for t in self.targets},
            server_kv_usage_perc=kv_use,
            server_preemptions=pre,
            status="ok"
            if err is None
            else ("overflow" if isinstance(err, AgentOverflow) else "tools_refused"),
            overflow_kind=err.kind if isinstance(err, AgentOverflow) else None,
            error=None if err is None else str(err)[:500],
            decided_by="model" if self.decisions == "model" and kind == "agent" else "scripted",
            tool_calls=listed,
            invalid_tool_calls=sum(1 for c in listed if c["invalid"]),
        )
        self.recorder.add(row, self.total_steps, self.companies)
        if err is not None:
            raise err
        return Reply(content, row.prompt_tokens, row.cached_tokens, row.output_tokens, calls, bad)


@dataclass(frozen=True)
class RunConfig:
    """One ``kvlab agents run``."""

    strategy: str
    endpoint: str
    model: str
    workflow: WorkflowConfig = field(default_factory=WorkflowConfig)
    strategies: StrategyConfig = field(default_factory=StrategyConfig)
    num_agents: int = 1
    max_output_tokens: int = 16
    targets: tuple[str, ...] = DEFAULT_TARGETS
    target_gpu: str = DEFAULT_TARGET_GPU
    timeout_s: float = 300.0
    reset_prefix_cache: bool = True
    #: Who decides the tool calls: "scripted" or "model" (see the module docstring).
    decisions: str = "scripted"
    #: Model calls at most per agent (None: 4x the scripted run's calls).
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.num_agents < 1 or self.max_output_tokens < 1:
            raise ConfigError("agents and max output tokens must be >= 1")
        if self.decisions not in DECISION_MODES:
            raise ConfigError(
                f"--decisions must be one of {', '.join(DECISION_MODES)}, got {self.decisions!r}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps}")

    @property
    def step_limit(self) -> int:
        return self.max_steps or default_max_steps(Workflow(self.workflow))


@dataclass
class AgentOutcome:
    """How one agent's run ended."""

    agent: int
    completed: bool
    steps: int
    overflow: dict[str, Any] | None
    fact_retention: float
    final_context_bytes: int
    exact_token_counts: bool
    #: How the run ended (:data:`kvlab.agents.graph.END_REASONS`) and why, in words.
    end: str = "done"
    end_detail: str = ""
    #: Tool calls answered, those that could not run (invalid), tools that failed.
    tool_calls: int = 0
    invalid_tool_calls: int = 0
    tool_errors: int = 0
    #: Share of the key facts in the masterplan the model wrote (None: scripted
    #: decisions, where the policy writes it, or no masterplan written).
    masterplan_fact_retention: float | None = None


def run_agent(
    cfg: RunConfig, agent: int, recorder: Recorder, probe: ServerProbe, t0: float
) -> AgentOutcome:
    """Run one agent's graph to its end (final answer or overflow)."""
    wf = Workflow(WorkflowConfig(**{**asdict(cfg.workflow), "seed": cfg.workflow.seed + agent}))
    estimate = TokenEstimate()
    sender = LiveSender(
        endpoint=cfg.endpoint,
        model=cfg.model,
        agent=agent,
        strategy=cfg.strategy,
        recorder=recorder,
        probe=probe,
        estimate=estimate,
        targets=cfg.targets,
        target_gpu=cfg.target_gpu,
        total_steps=wf.config.num_model_calls if cfg.decisions == "scripted" else cfg.step_limit,
        companies=[c.name for c in wf.companies],
        max_output_tokens=cfg.max_output_tokens,
        t0=t0,
        timeout_s=cfg.timeout_s,
        decisions=cfg.decisions,
    )
    summary_model = sender.chat if cfg.strategy == "lc_summarize" else None
    if summary_model is not None:
        summary_model = _RecordingChat.wrap(sender)
    counter = ServerTokenCounter(cfg.endpoint, cfg.model, estimate)
    graph = build_graph(
        cfg.strategy,
        wf,
        sender,
        cfg.strategies,
        count_tokens=counter,
        summary_model=summary_model,
        decisions=cfg.decisions,
        max_steps=cfg.step_limit,
    )
    # Three nodes per model call (agent, tools, compact) and the last agent visit.
    limit = 3 * (cfg.step_limit + 2) + 10
    state = graph.invoke(
        {
            "messages": initial_messages(wf),
            "results": {},
            "step": 0,
            "stop": None,
            "plan_context": None,
            "company": None,
            "tool_calls": 0,
            "invalid_calls": 0,
            "tool_errors": 0,
            "done_tools": {},
        },
        {"recursion_limit": limit},
    )
    overflow = None
    over = [
        r
        for r in recorder.rows
        if r.agent == agent and r.status == "overflow" and r.kind == "agent"
    ]
    if state.get("stop") == "overflow" and over:
        r = over[-1]
        overflow = {"step": r.step, "company": r.company, "kind": r.overflow_kind, "error": r.error}
    # Retention: what the agent held when it had to write the masterplan (or when it
    # overflowed), not the masterplan call itself.
    text = state.get("plan_context") or context_text(state["messages"])
    end = str(state.get("stop") or "done")
    steps = int(state["step"])
    plan_kept = None
    if cfg.decisions == "model" and wf.masterplan is not None:
        plan_kept = round(fact_retention(wf.key_facts(), wf.masterplan), 4)
    return AgentOutcome(
        agent=agent,
        completed=end == "done",
        steps=steps,
        overflow=overflow,
        fact_retention=round(fact_retention(wf.key_facts(), text), 4),
        final_context_bytes=len(text.encode("utf-8")),
        exact_token_counts=counter.exact,
        end=end,
        end_detail=end_detail(
            end,
            steps,
            cfg.step_limit,
            overflow,
            wf.masterplan is not None,
            next(
                (
                    r.error
                    for r in recorder.rows
                    if r.agent == agent and r.status == "tools_refused"
                ),
                None,
            ),
        ),
        tool_calls=int(state.get("tool_calls") or 0),
        invalid_tool_calls=int(state.get("invalid_calls") or 0),
        tool_errors=int(state.get("tool_errors") or 0),
        masterplan_fact_retention=plan_kept,
    )


def end_detail(
    end: str,
    steps: int,
    limit: int,
    overflow: dict[str, Any] | None,
    wrote_plan: bool,
    refused: str | None = None,
) -> str:
    """How an agent's run ended, in one line."""
    if end == "overflow" and overflow is not None:
        return (
            f"overflow ({overflow['kind']}) at model call {overflow['step'] + 1} "
            f"({overflow['company'] or 'masterplan'})"
        )
    if end == "tools_refused":
        return f"the server refused the tools at model call {steps + 1}: {refused or '?'}"
    if end == "step_limit":
        return f"step limit: {limit} model calls made without a final answer"
    if end == "no_tool_call":
        return f"model made no tool call at step {steps} (no masterplan written)"
    if end == "done":
        return "masterplan written, final answer" if wrote_plan else "final answer"
    return end


class _RecordingChat:
    """A chat model for LangChain's SummarizationMiddleware whose calls go through the
    LiveSender (so summary calls are measured like the others, ``kind`` "summary")."""

    @staticmethod
    def wrap(sender: LiveSender) -> Any:
        from langchain_core.language_models.chat_models import BaseChatModel
        from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: F401
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        class SenderChat(BaseChatModel):
            @property
            def _llm_type(self) -> str:
                return "kvlab-live-sender"

            def _generate(
                self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
            ) -> ChatResult:
                try:
                    reply = sender(messages, -1, None, "summary")
                    text = reply.content
                except ContextOverflow:
                    text = ""
                return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

        return SenderChat()


def run(
    cfg: RunConfig, out_dir: str | Path, progress: TextIO | None = sys.stderr
) -> dict[str, Any]:
    """Run ``cfg.num_agents`` agents at once and write the run directory; returns
    the contents of ``agents.json``."""
    from concurrent.futures import ThreadPoolExecutor

    out = Path(out_dir)
    steps_path = out / "steps.jsonl"
    try:
        out.mkdir(parents=True, exist_ok=True)
        steps_path.write_text("", encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there: {e.strerror or e}") from None
    recorder = Recorder(steps_path, progress)
    probe = ServerProbe(cfg.endpoint)
    probe.read()
    reset = reset_prefix_cache(cfg.endpoint) if cfg.reset_prefix_cache else False
    t0 = time.perf_counter()
    outcomes: list[AgentOutcome] = []
    interrupted = False
    pool = ThreadPoolExecutor(max_workers=cfg.num_agents)
    futures: list[Any] = []
    try:
        futures = [
            pool.submit(run_agent, cfg, i, recorder, probe, t0) for i in range(cfg.num_agents)
        ]
        outcomes = [f.result() for f in futures]
    except KeyboardInterrupt:
        # Ctrl-C: agents stop before their next call; the calls made so far are kept.
        interrupted = True
        recorder.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        outcomes = [  # the agents that had finished
            f.result() for f in futures if f.done() and not f.cancelled() and not f.exception()
        ]
    finally:
        # On any error too, the other agents stop before their next call.
        recorder.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        # Whatever happened, the calls made so far are kept in the run directory.
        wall_s = time.perf_counter() - t0
        report = summarize_run(cfg, recorder.rows, outcomes, wall_s, interrupted)
        report["prefix_cache_reset"] = reset
        if recorder.rows:
            write_run_dir(out, cfg, recorder.rows, report, wall_s)
    return report


def summarize_run(
    cfg: RunConfig,
    rows: Sequence[StepRow],
    outcomes: Sequence[AgentOutcome],
    wall_s: float,
    interrupted: bool = False,
) -> dict[str, Any]:
    """``agents.json``: the run's configuration, per-agent outcomes and token totals."""
    ok = [r for r in rows if r.status == "ok"]
    sent = sum(r.prompt_tokens or 0 for r in ok)
    known_cached = [r for r in ok if r.cached_tokens is not None]
    cached = sum(r.cached_tokens or 0 for r in known_cached) if known_cached else None
    agent_rows = [r for r in ok if r.kind == "agent" and r.prompt_tokens is not None]
    return {
        "strategy": cfg.strategy,
        "model": cfg.model,
        "endpoint": cfg.endpoint,
        "decisions": DECISION_TEXT[cfg.decisions],
        "decided_by": cfg.decisions,
        "max_steps": cfg.step_limit,
        "ends": {
            e: sum(1 for o in outcomes if o.end == e) for e in sorted({o.end for o in outcomes})
        },
        "steps": sum(o.steps for o in outcomes),
        "tool_calls": sum(o.tool_calls for o in outcomes),
        "invalid_tool_calls": sum(o.invalid_tool_calls for o in outcomes),
        "tool_errors": sum(o.tool_errors for o in outcomes),
        "masterplan_fact_retention_mean": _mean(
            [
                o.masterplan_fact_retention
                for o in outcomes
                if o.masterplan_fact_retention is not None
            ]
        ),
        "interrupted": interrupted,
        "workflow": asdict(cfg.workflow),
        "strategy_config": asdict(cfg.strategies),
        "num_agents": cfg.num_agents,
        "agents": [asdict(o) for o in outcomes],
        "completed": sum(1 for o in outcomes if o.completed),
        "num_model_calls": len(rows),
        "tokens_sent": sent,
        "tokens_cached": cached,
        "tokens_recomputed": None if cached is None else sent - cached,
        "prefix_hit_share": None if cached is None or not sent else round(cached / sent, 4),
        "max_prompt_tokens": max((r.prompt_tokens or 0 for r in agent_rows), default=None),
        "fact_retention_mean": round(sum(o.fact_retention for o in outcomes) / len(outcomes), 4)
        if outcomes
        else None,
        "server_kv_usage_perc_max": max(
            (r.server_kv_usage_perc for r in rows if r.server_kv_usage_perc is not None),
            default=None,
        ),
        "server_preemptions": max(
            (r.server_preemptions for r in rows if r.server_preemptions is not None), default=None
        ),
        "wall_s": round(wall_s, 3),
        "kv_targets": {"models": list(cfg.targets), "gpu": cfg.target_gpu},
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def write_run_dir(
    out: Path, cfg: RunConfig, rows: Sequence[StepRow], report: dict[str, Any], wall_s: float
) -> None:
    """kvlab's run directory (one request per model call) plus ``agents.json``."""
    from kvlab.backends.base import build_result
    from kvlab.results import RequestRecord
    from kvlab.results.records import STATUS_FAILED, STATUS_OK
    from kvlab.results.run_dir import atomic_write_text

    records: list[RequestRecord] = []
    for r in rows:
        ok = r.status == "ok"
        records.append(
            RequestRecord(
                request_id=f"a{r.agent}-s{r.step}-{r.kind}-{len(records)}",
                arrival_s=r.t_s,
                prompt_tokens=r.prompt_tokens or 0,
                output_tokens=r.output_tokens or 0,
                session_id=f"agent-{r.agent}",
                cls=cfg.strategy,
                status=STATUS_OK if ok else STATUS_FAILED,
                admitted_s=r.t_s,
                finish_s=r.t_s + r.latency_s if ok else None,
                # A refused call was never prefilled: 0 tokens, 0 hits, 0 computed.
                cached_tokens=r.cached_tokens if ok else 0,
                computed_tokens=(
                    None
                    if r.cached_tokens is None or r.prompt_tokens is None
                    else r.prompt_tokens - r.cached_tokens
                )
                if ok
                else 0,
                offload_hit_tokens=None,
                num_preemptions=None,
                error=None
                if ok
                else (f"overflow_{r.overflow_kind}" if r.status == "overflow" else r.status),
                error_detail=r.error,
                sent_s=r.t_s,
            )
        )
    usage = [r.server_kv_usage_perc for r in rows if r.server_kv_usage_perc is not None]
    ts = {}
    if usage and len(usage) == len(rows):
        ts = {"t_s": [r.t_s + r.latency_s for r in rows], "kv_cache_usage_perc": usage}
    has_cached = any(r.cached_tokens is not None for r in rows)
    counters: dict[str, Any] = {}
    if usage:
        counters["kv_cache_usage_perc_max"] = max(usage)
        counters["kv_cache_usage_perc_mean"] = sum(usage) / len(usage)
    result = build_result(
        "agents",
        records,
        wall_s=wall_s,
        record_source="usage.prompt_tokens_details" if has_cached else None,
        counters=counters,
        config={
            "backend": "agents",
            "strategy": cfg.strategy,
            "model": cfg.model,
            "endpoint": cfg.endpoint,
            "decisions": DECISION_TEXT[cfg.decisions],
        },
        timeseries=ts,
        seed=cfg.workflow.seed,
        workload=f"pension workflow ({cfg.workflow.num_companies} companies)",
    )
    result.save(out)
    atomic_write_text(out / "agents.json", json.dumps(report, indent=2, sort_keys=True) + "\n")


def load_report(run_dir: str | Path) -> dict[str, Any]:
    """``agents.json`` of a run directory (WorkloadError naming the file when unreadable)."""
    from kvlab.errors import RunDirError

    p = Path(run_dir) / "agents.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{p}: not an agents run directory (no agents.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{p}: unreadable: {e}") from None
    if not isinstance(data, dict) or "strategy" not in data:
        raise RunDirError(f"{p}: not an agents report (no 'strategy')")
    return data


Progress = Callable[[str], None]
