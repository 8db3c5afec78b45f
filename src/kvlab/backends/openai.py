"""Live backend: replay a workload against an OpenAI-compatible streaming server.

One asyncio event loop (uvloop when installed) drives every request. All HTTP
goes through a :class:`~kvlab.backends.transport.Transport`, given to the
backend or made from the configuration (:class:`~kvlab.backends.transport.HttpTransport`:
the streaming POSTs through kvlab's own keep-alive HTTP/1.1 client,
:mod:`kvlab.backends.http`, chosen by measurement, aiohttp's as an option;
probes and ``/metrics`` through aiohttp); unit tests give it a
:class:`~kvlab.backends.transport.MockTransport`. Nothing blocks inside the
loop (``/metrics`` text is parsed in a worker thread). Each request streams ``/v1/completions`` (or
``/v1/chat/completions``) with ``stream_options.include_usage`` and
``max_tokens = output_tokens`` plus ``ignore_eos`` (a vLLM and llama.cpp
extension) so that output lengths match the workload.

Per request the record keeps: ``arrival_s`` (when it was due), ``sent_s``
(when it left), the arrival of the first content chunk (``first_token_s``),
of every content chunk (``chunk_times_s``) and of the last byte
(``finish_s``), all in seconds from the start of the run; token counts from
the server's ``usage``: cached prompt tokens from
``usage.prompt_tokens_details.cached_tokens`` when reported, else None
(unknown, and so are the computed tokens); preemptions and offload-tier hits
per request are never known (None). Failures carry a kind from
:mod:`kvlab.backends.failures`. The RunResult is made by
:func:`kvlab.backends.base.build_result`.

With ``OpenAIConfig(history="server")`` (``kvlab replay --history server``) a session's
turns re-send the answers the server produced and the run keeps a transcript of what was
sent (:mod:`kvlab.backends.transcript`).

The API key is sent as a bearer token and never stored: :meth:`OpenAIConfig.to_dict`
leaves it out and error details are scrubbed of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from kvlab.backends.base import (
    MAX_BURSTINESS,
    MAX_RATE_PER_S,
    MAX_SECONDS,
    build_result,
    interrupted_result,
    unfinished_record,
)
from kvlab.backends.failures import Failure, classify_exception, classify_status
from kvlab.backends.live_summary import client_figures
from kvlab.backends.loadgen import LOAD_MODES, Job, build_jobs
from kvlab.backends.prompt import prompt_builder, salt_prefix, segment_text
from kvlab.backends.stream import StreamReader, usage_tokens
from kvlab.backends.transcript import HISTORIES, Answer, Transcript
from kvlab.backends.transport import HttpTransport, Sink, Transport
from kvlab.errors import BackendUnavailable, ConfigError, WorkloadError
from kvlab.results import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
    RunResult,
)
from kvlab.workload.records import Request, Workload

CACHE_MODES: tuple[str, ...] = ("warm", "cold", "primed")
APIS: tuple[str, ...] = ("completions", "chat")
#: Streaming HTTP clients: kvlab's own (kvlab.backends.http, the default) or aiohttp's.
HTTP_CLIENTS: tuple[str, ...] = ("kvlab", "aiohttp")

#: What to do with a request that does not fit the server's context (OpenAIConfig.too_long).
TOO_LONG: tuple[str, ...] = ("refuse", "skip", "send")

#: The most tokens (prompt + max_tokens) of one request kvlab builds and sends, whatever
#: limit is known: the longest context any served model has today (10M tokens, about
#: 70 MB of prompt text). It is the limit itself when nothing better is known: the
#: server reports no ``max_model_len`` (SGLang, llama.cpp, Ollama), none is given,
#: and kvlab does not know the model's config. A prompt's text is built only when
#: it is sent, so memory follows what is sent, never a number in a workload file.
MAX_REQUEST_TOKENS = 10_000_000
_CEILING = f"kvlab's ceiling of {MAX_REQUEST_TOKENS:,} tokens per request"


@dataclass(frozen=True, slots=True)
class ContextLimit:
    """The context a request must fit (prompt + max_tokens <= ``tokens``), and where
    the figure comes from, as the refusal names it (``the server's max_model_len
    4,096``)."""

    tokens: int
    source: str

    def __str__(self) -> str:
        return self.source


def context_limit(given: int | None, served: int | None, model: str | None) -> ContextLimit:
    """The best context limit known, at most :data:`MAX_REQUEST_TOKENS`: ``given``
    (``--max-model-len``), else ``served`` (the server's ``/v1/models``), else the
    ``max_position_embeddings`` of ``model``'s config when kvlab resolves it
    (a catalog name or a config.json path; never a download), else the ceiling."""
    ceiling = ContextLimit(MAX_REQUEST_TOKENS, _CEILING)
    if given is not None:
        found = ContextLimit(given, f"--max-model-len max_model_len {given:,}")
    elif served is not None:
        found = ContextLimit(served, f"the server's max_model_len {served:,}")
    else:
        known = _model_context(model)
        if known is None:
            return ContextLimit(
                ceiling.tokens,
                f"{ceiling.source} (the server reports no max_model_len and kvlab does not "
                f"know model {model!r}: pass --max-model-len)",
            )
        found = ContextLimit(
            known,
            f"max_position_embeddings {known:,} of {model}'s config (the server reports no "
            "max_model_len: pass --max-model-len for the served one)",
        )
    return found if found.tokens <= ceiling.tokens else ceiling


def _model_context(model: str | None) -> int | None:
    """``max_position_embeddings`` of a model kvlab knows (catalog name or config.json
    path), None for any other name (a server's alias, an Ollama tag...)."""
    if not model:
        return None
    from kvlab.errors import KvlabError
    from kvlab.models import get_model

    try:
        n = get_model(model).max_context
    except (KvlabError, OSError, ValueError):
        return None
    return n if isinstance(n, int) and n > 0 else None


OnRecord = Callable[[RequestRecord], None]
_T = TypeVar("_T")
#: A streaming POST: (request body, sink for body bytes) -> (status, error body).
Post = Callable[[bytes, Sink], Awaitable[tuple[int, bytes]]]


@dataclass(frozen=True)
class OpenAIConfig:
    """How to drive one OpenAI-compatible server.

    ``endpoint`` is the server's base URL (a trailing ``/v1`` is accepted).
    ``mode`` is a load mode of :mod:`kvlab.backends.loadgen`; ``concurrency``
    is the number of closed-loop workers, or the in-flight cap in other modes.
    Timeouts: ``connect_timeout_s`` to connect, ``read_timeout_s`` between
    two reads, ``timeout_s`` for the whole request.

    ``max_model_len`` is the server's context limit in tokens; when None, the
    limit the server reports in ``/v1/models`` (vLLM's ``max_model_len``) is
    used; when the server reports none, the ``max_position_embeddings`` of
    ``model_config`` (a catalog name or config.json; default: ``model`` when kvlab
    knows that name), else :data:`MAX_REQUEST_TOKENS` (see :func:`context_limit`).
    Before anything is sent (and before any prompt text is built), every request's
    prompt plus ``max_tokens`` is checked against it: with ``too_long="refuse"``
    one that does not fit (or asks for no output) stops the run before it starts
    (:class:`~kvlab.errors.WorkloadError`); with ``"skip"`` it is recorded as
    ``rejected`` (error ``context_overflow``, not sent) and the rest run; with
    ``"send"`` only :data:`MAX_REQUEST_TOKENS` is checked (to see how a server
    answers an overflow). The check counts the workload's tokens, so a prompt whose
    text the server's tokenizer makes a little longer can still overflow there (then it fails as
    ``context_overflow``, as before).

    ``history`` is where a session's next turn gets the answers it re-sends:
    ``"scripted"`` (the workload's segments, as they are) or ``"server"`` (the answers
    the server produced, :mod:`kvlab.backends.transcript`): then each turn waits for the
    previous one (``mode="trace"`` replays as ``"sessions"``: a later turn's own
    ``arrival_s`` is ignored), a failed turn ends its session, every request asks for
    token ids (``return_token_ids``) and the run keeps a transcript. It needs
    ``api="completions"`` (a chat template adds tokens the transcript cannot place) and
    a cache mode other than ``"primed"`` (which would send the scripted prompts).

    ``token_ids`` asks for token ids with every request whatever the history (vLLM's
    ``return_token_ids``, which ``history="server"`` turns on by itself). Serializing
    them costs the server time per output token (on vLLM's CPU build, measured: 3.2 ms a
    token becomes 7-8 ms), so a calibration sweep for ``--history server`` replays
    should ask for them too (``kvlab calibrate --token-ids``).
    """

    endpoint: str
    model: str
    api: str = "completions"
    mode: str = "trace"
    concurrency: int | None = None
    rate_per_s: float | None = None
    burstiness: float = 1.0
    seed: int = 0
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0
    max_errors: int | None = None
    cache_mode: str = "warm"
    metrics_interval_s: float = 0.25
    ignore_eos: bool = True
    keep_chunk_times: bool = True
    preflight: bool = True
    http_client: str = "kvlab"
    max_model_len: int | None = None
    too_long: str = "refuse"
    model_config: str | None = None
    duration_s: float | None = None
    history: str = "scripted"
    token_ids: bool = False
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"--endpoint must be an http(s) URL, got {self.endpoint!r}")
        if self.api not in APIS:
            raise ConfigError(f"--api must be one of {', '.join(APIS)}")
        if self.mode not in LOAD_MODES:
            raise ConfigError(f"--mode must be one of {', '.join(LOAD_MODES)}")
        if self.mode == "closed" and not self.concurrency:
            raise ConfigError("--mode closed needs --concurrency N")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("--concurrency must be >= 1")
        if self.http_client not in HTTP_CLIENTS:
            raise ConfigError(f"http_client must be one of {', '.join(HTTP_CLIENTS)}")
        if self.cache_mode not in CACHE_MODES:
            raise ConfigError(f"--cache-mode must be one of {', '.join(CACHE_MODES)}")
        if not 0 <= self.metrics_interval_s <= MAX_SECONDS:
            raise ConfigError(
                f"--metrics-interval must be a number of seconds in [0, {MAX_SECONDS:g}] "
                f"(0 turns sampling off), got {self.metrics_interval_s!r}"
            )
        if self.duration_s is not None and not 0 < self.duration_s <= MAX_SECONDS:
            raise ConfigError(
                f"--duration must be a number of seconds in (0, {MAX_SECONDS:g}], "
                f"got {self.duration_s!r}"
            )
        for name in ("timeout_s", "connect_timeout_s", "read_timeout_s"):
            if not 0 < getattr(self, name) <= MAX_SECONDS:
                raise ConfigError(
                    f"{name} must be a number of seconds in (0, {MAX_SECONDS:g}], "
                    f"got {getattr(self, name)!r}"
                )
        if self.rate_per_s is not None and not 0 < self.rate_per_s <= MAX_RATE_PER_S:
            raise ConfigError(
                f"--rate must be a number of requests per second in (0, {MAX_RATE_PER_S:g}], "
                f"got {self.rate_per_s!r}"
            )
        if not 0 < self.burstiness <= MAX_BURSTINESS:
            raise ConfigError(
                f"--burstiness must be in (0, {MAX_BURSTINESS:g}] (1 = Poisson), "
                f"got {self.burstiness!r}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ConfigError(f"--max-model-len must be >= 1, got {self.max_model_len}")
        if self.too_long not in TOO_LONG:
            raise ConfigError(f"too_long must be one of {', '.join(TOO_LONG)}")
        if self.history not in HISTORIES:
            raise ConfigError(f"--history must be one of {', '.join(HISTORIES)}")
        if self.history == "server" and self.api != "completions":
            raise ConfigError(
                "--history server needs --api completions: kvlab sends a session's history "
                "as one prompt text, and a chat template would add tokens the transcript "
                "cannot place"
            )
        if self.history == "server" and self.cache_mode == "primed":
            raise ConfigError(
                "--history server cannot use --cache-mode primed: priming sends the scripted "
                "prompts, which this run does not send; use warm or cold"
            )

    @property
    def base_url(self) -> str:
        u = self.endpoint.rstrip("/")
        return u[:-3] if u.endswith("/v1") else u

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def to_dict(self) -> dict[str, Any]:
        """The configuration for ``run.json``: everything but the key."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "api_key"}
        if self.history == "scripted":
            del d["history"]  # the default: run.json stays as it was before the option
        if not self.token_ids:
            del d["token_ids"]  # the same
        d["api_key_set"] = self.api_key is not None
        d["endpoint"] = _without_userinfo(self.endpoint)
        return d


def _without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` removed (credentials never go to outputs)."""
    u = urlsplit(url)
    if "@" not in u.netloc:
        return url
    return urlunsplit(u._replace(netloc=u.netloc.rsplit("@", 1)[1]))


#: How ``summary["stopped"]`` starts when ``duration_s`` ended the run.
DURATION_STOP = "duration reached"


class _Run:
    """State of one run: records by workload index, counters, stop flag."""

    def __init__(self, requests: Sequence[Request], cfg: OpenAIConfig, on_record: OnRecord | None):
        self.requests = requests
        self.cfg = cfg
        self.on_record = on_record
        self.index = {id(r): i for i, r in enumerate(requests)}
        self.records: list[RequestRecord | None] = [None] * len(requests)
        self.num_errors = 0
        self.stop = asyncio.Event()
        self.stop_reason: str | None = None
        self.timer_lateness_s: list[float] = []
        self.t0_ns = 0
        self.inflight: set[asyncio.Task[Any]] = set()
        self.transcript: Transcript | None = None
        self.prefix = ""
        self.seg_text: Callable[[str, int], str] | None = None

    def done(self, req: Request, rec: RequestRecord) -> None:
        self.records[self.index[id(req)]] = rec
        if rec.status == STATUS_FAILED:
            self.num_errors += 1
            me = self.cfg.max_errors
            if me is not None and self.num_errors >= me and not self.stop.is_set():
                self.stop_reason = f"stopped after {self.num_errors} failed requests (--max-errors)"
                self.stop.set()
        if self.on_record is not None:
            self.on_record(rec)

    def now_s(self) -> float:
        return (time.perf_counter_ns() - self.t0_ns) / 1e9


class OpenAIBackend:
    """Runs a :class:`Workload` against a live server and returns a :class:`RunResult`.

    ``transport`` carries every HTTP request (see :mod:`kvlab.backends.transport`);
    by default an :class:`~kvlab.backends.transport.HttpTransport` to
    ``config.endpoint`` is opened for each run and closed after it. A given
    transport is the caller's: the backend never closes it.
    """

    name = "openai"

    def __init__(self, config: OpenAIConfig, transport: Transport | None = None) -> None:
        self.config = config
        self.transport = transport
        #: The transcript of the last run with ``history="server"`` (None otherwise).
        self.transcript: Transcript | None = None

    # ---- public entry points -------------------------------------------------

    def run(self, workload: Workload, *, on_record: OnRecord | None = None) -> RunResult:
        """Run in a fresh event loop (uvloop when available); Ctrl-C stops the run
        gracefully: finished records are kept, the rest are ``unfinished``."""
        try:
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
        except ImportError:
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(self.run_async(workload, on_record=on_record, handle_sigint=True))

    async def run_async(
        self,
        workload: Workload,
        *,
        on_record: OnRecord | None = None,
        handle_sigint: bool = False,
    ) -> RunResult:
        cfg = self.config
        state = _Run(workload.requests, cfg, on_record)
        if cfg.history == "server":
            state.transcript = self.transcript = Transcript(workload.name)
        t0_ns = time.perf_counter_ns()
        transport = self._http_transport() if self.transport is None else self.transport
        remove = None
        if handle_sigint and threading.current_thread() is threading.main_thread():
            remove = _on_sigint(asyncio.get_running_loop(), lambda: self._interrupt(state))
        try:
            return await self._run_session(transport, workload, state)
        except _StoppedEarly:
            return interrupted_result(
                self.name,
                workload.requests,
                [r for r in state.records if r is not None],
                wall_s=(time.perf_counter_ns() - t0_ns) / 1e9,
                record_source="usage.prompt_tokens_details",
                config=cfg.to_dict(),
                seed=cfg.seed,
                workload=workload.name,
            )
        finally:
            if remove is not None:
                remove()
            if transport is not self.transport:
                await transport.aclose()

    def _http_transport(self) -> HttpTransport:
        cfg = self.config
        return HttpTransport(
            cfg.base_url,
            headers={"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {},
            connect_timeout_s=cfg.connect_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            timeout_s=cfg.timeout_s,
            stream_client=cfg.http_client,
        )

    @staticmethod
    def _time_up(state: _Run, duration_s: float) -> None:
        """``--duration`` reached: stop sending; requests in flight are cut off and,
        with those never sent, recorded unfinished."""
        if not state.stop.is_set():
            state.stop_reason = f"{DURATION_STOP} ({duration_s:g} s)"
            state.stop.set()

    @staticmethod
    def _interrupt(state: _Run) -> None:
        if not state.stop.is_set():
            state.stop_reason = "interrupted"
            state.stop.set()

    # ---- the run ---------------------------------------------------------------

    async def _run_session(
        self, transport: Transport, workload: Workload, state: _Run
    ) -> RunResult:
        from kvlab.backends import metrics as m

        cfg = self.config
        server_limit = (
            await _unless_stopped(self._preflight(transport), state) if cfg.preflight else None
        )
        # every size is checked before any prompt text is built
        limit = context_limit(cfg.max_model_len, server_limit, cfg.model_config or cfg.model)
        skipped = self._check_sizes(workload.requests, limit)
        for req, rec in skipped:
            state.done(req, rec)
        sent = [r for r in workload.requests if state.records[state.index[id(r)]] is None]
        info = await _unless_stopped(m.probe_server(transport), state)
        salt, cache_note = await _unless_stopped(self._prepare_cache(transport, sent, info), state)
        prompt = prompt_builder(salt)
        state.prefix, state.seg_text = salt_prefix(salt), segment_text()
        sampler = None
        before: dict[str, float] | None = None
        if info.profile is not None:
            sampler = m.MetricsSampler(
                transport, info.profile, interval_s=cfg.metrics_interval_s or 1.0
            )
            before = await _unless_stopped(sampler.snapshot(), state)
        jobs = build_jobs(
            sent,
            "sessions" if cfg.history == "server" and cfg.mode == "trace" else cfg.mode,
            rate_per_s=cfg.rate_per_s,
            burstiness=cfg.burstiness,
            seed=cfg.seed,
        )
        path = cfg.path

        def post(data: bytes, sink: Sink) -> Awaitable[tuple[int, bytes]]:
            return transport.stream(path, data, sink)

        cpu0 = time.process_time()
        state.t0_ns = time.perf_counter_ns()
        if sampler is not None and cfg.metrics_interval_s > 0:
            sampler.start(state.t0_ns)
        timer = None
        if cfg.duration_s is not None:
            timer = asyncio.get_running_loop().call_later(
                cfg.duration_s, self._time_up, state, cfg.duration_s
            )
        try:
            await self._drive(post, jobs, state, prompt)
        finally:
            if timer is not None:
                timer.cancel()
            wall_s = state.now_s()
            cpu_s = time.process_time() - cpu0
            if sampler is not None:
                await sampler.stop()
        after = await sampler.snapshot() if sampler is not None else None
        deltas = m.counter_deltas(before, after) if before and after else {}
        records = self._complete_records(state)
        return self._result(
            workload, records, state, info, deltas, sampler, wall_s, cpu_s, (cache_note, salt)
        )

    def _check_sizes(
        self, requests: Sequence[Request], limit: ContextLimit
    ) -> list[tuple[Request, RequestRecord]]:
        """Requests that cannot be served whole: no output asked (``max_tokens`` 0), or
        prompt plus output over ``limit``. With ``too_long="refuse"`` the first one
        raises :class:`~kvlab.errors.WorkloadError` (with the count); with ``"skip"``
        each gets a ``rejected`` record (returned with its request) and is not sent.
        ``"send"`` checks only :data:`MAX_REQUEST_TOKENS` (kvlab never builds a bigger
        prompt), refusing as ``"refuse"`` does."""
        out: list[tuple[Request, RequestRecord]] = []
        bad: list[tuple[Request, str]] = []
        send = self.config.too_long == "send"
        if send:
            limit = ContextLimit(MAX_REQUEST_TOKENS, _CEILING)
        for r in requests:
            if r.output_tokens < 1 and not send:
                why = f"asks for {r.output_tokens} output tokens (max_tokens must be >= 1)"
            elif r.prompt_tokens + r.output_tokens > limit.tokens:
                why = (
                    f"prompt {r.prompt_tokens:,} + max_tokens {r.output_tokens:,} tokens > {limit}"
                )
            else:
                continue
            bad.append((r, why))
        if bad and self.config.too_long in ("refuse", "send"):
            r, why = bad[0]
            more = f" ({len(bad):,} requests do not fit)" if len(bad) > 1 else ""
            raise WorkloadError(
                f"request {r.request_id!r}: {why}{more}; nothing was sent. Shorten them, "
                "or pass --skip-too-long to run the rest and mark these as not sent",
            )
        for r, why in bad:
            rec = unfinished_record(r, f"not sent: {why}")
            rec.status = STATUS_REJECTED
            rec.error = "context_overflow"
            out.append((r, rec))
        return out

    async def _preflight(self, transport: Transport) -> int | None:
        """Check that the server answers ``/v1/models``; the served model's
        ``max_model_len`` when it reports one (vLLM does)."""
        url = self.config.base_url + "/v1/models"
        try:
            resp = await transport.request("GET", "/v1/models", timeout_s=10)
        except (TimeoutError, OSError) as e:
            raise BackendUnavailable(
                f"cannot reach {self.config.base_url} ({type(e).__name__}): start the server "
                "or fix --endpoint"
            ) from e
        if resp.status in (401, 403):
            raise BackendUnavailable(
                f"{url} answered HTTP {resp.status}: pass the API key with --api-key-env"
            )
        return served_max_model_len(resp.body, self.config.model) if resp.status == 200 else None

    async def _prepare_cache(
        self, transport: Transport, requests: Sequence[Request], info: Any
    ) -> tuple[str | None, str]:
        """Apply --cache-mode; returns (prompt salt or None, what was done)."""
        from kvlab.backends import metrics as m

        mode = self.config.cache_mode
        if mode == "warm":
            return None, "warm: server cache left as found"
        salt: str | None = None
        if await m.reset_prefix_cache(transport, info):
            note = f"{mode}: prefix cache reset via the server's endpoint"
        else:
            salt = f"kvlab-{os.getpid()}-{time.time_ns() % 10**12}"
            note = f"{mode}: no reset endpoint; prompts salted with a run-unique prefix"
        if mode == "primed":
            await self._prime(transport, requests, prompt_builder(salt))
            note += "; each distinct prompt sent once (max_tokens=1) before the run"
        return salt, note

    async def _prime(
        self, transport: Transport, requests: Sequence[Request], prompt: Callable[[Request], str]
    ) -> None:
        """Send each distinct prompt of ``requests`` once (max_tokens 1). A prompt's text
        is built only when its turn comes (at most 8 at a time): memory follows the
        prompts in flight, not the workload."""
        sem = asyncio.Semaphore(8)
        cfg = self.config

        async def one(req: Request) -> None:
            async with sem:
                try:
                    body = self._body(prompt(req), 1)
                    await transport.request("POST", cfg.path, body=body, timeout_s=cfg.timeout_s)
                except Exception:  # priming is best effort; the run reports failures
                    pass

        seen: set[tuple[tuple[str, int], ...]] = set()
        distinct: list[Request] = []
        for r in requests:
            key = tuple((seg.content_id, seg.tokens) for seg in r.segments)
            if key not in seen:
                seen.add(key)
                distinct.append(r)
        await asyncio.gather(*(one(r) for r in distinct))

    # ---- load modes --------------------------------------------------------------

    async def _drive(
        self, post: Post, jobs: list[Job], state: _Run, prompt: Callable[[Request], str]
    ) -> None:
        cfg = self.config
        cap = (
            asyncio.Semaphore(cfg.concurrency) if cfg.concurrency and cfg.mode != "closed" else None
        )
        stop_wait = asyncio.create_task(state.stop.wait())
        try:
            if cfg.mode == "closed":
                assert cfg.concurrency is not None
                it = iter(jobs)
                workers = [
                    asyncio.create_task(self._worker(post, it, state, prompt))
                    for _ in range(cfg.concurrency)
                ]
                await self._until_stopped(workers, stop_wait)
            else:
                dispatcher = asyncio.create_task(self._dispatch(post, jobs, state, prompt, cap))
                await self._until_stopped([dispatcher], stop_wait)
                if not state.stop.is_set() and state.inflight:
                    await self._until_stopped(list(state.inflight), stop_wait)
        finally:
            stop_wait.cancel()
            for t in list(state.inflight):
                t.cancel()
            if state.inflight:
                await asyncio.gather(*state.inflight, return_exceptions=True)

    @staticmethod
    async def _until_stopped(tasks: list[asyncio.Task[Any]], stop_wait: asyncio.Task[Any]) -> None:
        pending = set(tasks)
        while pending and not stop_wait.done():
            done, pending = await asyncio.wait(
                pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(stop_wait)
            for t in done:
                if t is not stop_wait and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _worker(
        self,
        post: Post,
        jobs: Iterator[Job],
        state: _Run,
        prompt: Callable[[Request], str],
    ) -> None:
        for job in jobs:
            if state.stop.is_set():
                return
            await self._job(post, job, state, prompt, None, state.now_s())

    async def _dispatch(
        self,
        post: Post,
        jobs: list[Job],
        state: _Run,
        prompt: Callable[[Request], str],
        cap: asyncio.Semaphore | None,
    ) -> None:
        for job in jobs:
            start = job.start_s or 0.0
            delay = start - state.now_s()
            if delay > 0:
                await asyncio.sleep(delay)
            if state.stop.is_set():
                return
            t = asyncio.create_task(self._job(post, job, state, prompt, cap, start))
            state.inflight.add(t)
            t.add_done_callback(state.inflight.discard)

    async def _job(
        self,
        post: Post,
        job: Job,
        state: _Run,
        prompt: Callable[[Request], str],
        cap: asyncio.Semaphore | None,
        start_s: float,
    ) -> None:
        if state.transcript is not None:
            await self._job_with_answers(post, job, state, cap, start_s)
            return
        for k, req in enumerate(job.requests):
            due = await _turn_due(state, req, start_s if k == 0 else None)
            if state.stop.is_set():
                return
            state.timer_lateness_s.append(state.now_s() - due)
            if cap is not None:
                async with cap:
                    rec = await self._send(post, req, prompt(req), due, state)
            else:
                rec = await self._send(post, req, prompt(req), due, state)
            # A failed turn does not end its session: the next prompt does not
            # depend on the answer's text, so later turns are still sent.
            state.done(req, rec)

    async def _job_with_answers(
        self,
        post: Post,
        job: Job,
        state: _Run,
        cap: asyncio.Semaphore | None,
        start_s: float,
    ) -> None:
        """``_job`` with the server's answers as history (``history="server"``): each turn
        is built from the answers before it, its answer is kept for the next one and the
        turn goes to the transcript; a failed turn ends the session."""
        transcript, seg_text = state.transcript, state.seg_text
        assert transcript is not None and seg_text is not None
        for k, req in enumerate(job.requests):
            due = await _turn_due(state, req, start_s if k == 0 else None)
            if state.stop.is_set():
                return
            state.timer_lateness_s.append(state.now_s() - due)
            history = transcript.session(req)
            text = history.prompt(req, seg_text, state.prefix)
            kept: list[StreamReader] = []
            if cap is not None:
                async with cap:
                    rec = await self._send(post, req, text, due, state, kept)
            else:
                rec = await self._send(post, req, text, due, state, kept)
            state.done(req, rec)
            if rec.status != STATUS_OK:
                why = (
                    f"not sent: turn {req.request_id!r} of its session failed, and with "
                    "--history server the next turn needs its answer"
                )
                for later in job.requests[k + 1 :]:
                    state.done(later, unfinished_record(later, why))
                return
            reader = kept[0]
            p, _, _ = usage_tokens(reader.usage)
            answer = Answer(
                text=reader.text,
                tokens=rec.output_tokens,
                prompt_tokens=p,
                prompt_token_ids=_tuple(reader.prompt_token_ids),
                token_ids=_tuple(reader.token_ids),
            )
            transcript.add(req, rec, answer)

    # ---- one request -------------------------------------------------------------

    def _body(self, text: str, max_tokens: int) -> bytes:
        cfg = self.config
        body: dict[str, Any] = {"model": cfg.model, "max_tokens": max_tokens, "stream": True}
        if cfg.api == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        body["stream_options"] = {"include_usage": True}
        if cfg.ignore_eos:
            body["ignore_eos"] = True
        if cfg.history == "server" or cfg.token_ids:
            body["return_token_ids"] = True
        return json.dumps(body).encode()

    async def _send(
        self,
        post: Post,
        req: Request,
        text: str,
        due_s: float,
        state: _Run,
        kept: list[StreamReader] | None = None,
    ) -> RequestRecord:
        """Send one request; its stream's reader is appended to ``kept`` when given
        (it then keeps the answer's text and token ids)."""
        cfg = self.config
        data = self._body(text, req.output_tokens)
        reader = StreamReader(chat=cfg.api == "chat", collect=kept is not None)
        if kept is not None:
            kept.append(reader)
        t0 = state.t0_ns
        sent_ns = time.perf_counter_ns()
        failure: Failure | None = None
        try:
            status, err = await post(data, reader.feed)
            if status >= 400:
                failure = classify_status(status, err.decode("utf-8", "replace"))
            else:
                reader.finish()
        except asyncio.CancelledError:
            failure = Failure("cancelled", state.stop_reason or "cancelled")
            rec = self._record(req, due_s, sent_ns, t0, reader, failure)
            rec.status = STATUS_UNFINISHED
            state.done(req, rec)
            raise
        except Exception as e:
            failure = classify_exception(e)
        if failure is None:
            if reader.error_text is not None:
                failure = classify_status(400, reader.error_text)
                if failure.kind != "context_overflow":
                    failure = Failure("stream_error", failure.detail)
            elif reader.first_token_ns is None:
                failure = Failure("empty_stream", "HTTP 200 without any content chunk")
        return self._record(req, due_s, sent_ns, t0, reader, failure)

    def _record(
        self,
        req: Request,
        due_s: float,
        sent_ns: int,
        t0_ns: int,
        reader: StreamReader,
        failure: Failure | None,
    ) -> RequestRecord:
        p, c, cached = usage_tokens(reader.usage)
        rec = RequestRecord(
            request_id=req.request_id,
            arrival_s=due_s,
            prompt_tokens=p if p is not None else req.prompt_tokens,
            output_tokens=c if c is not None else req.output_tokens,
            session_id=req.session_id,
            cls=req.cls,
            sent_s=(sent_ns - t0_ns) / 1e9,
            cached_tokens=cached,
            **_UNKNOWN_COUNTS,
        )
        if failure is None:
            rec.status = STATUS_OK
            if c is None:
                rec.output_tokens = len(reader.chunk_times_ns)
            assert reader.first_token_ns is not None and reader.last_byte_ns is not None
            rec.first_token_s = (reader.first_token_ns - t0_ns) / 1e9
            rec.finish_s = (reader.last_byte_ns - t0_ns) / 1e9
            if cached is not None:
                rec.computed_tokens = rec.prompt_tokens - cached
        else:
            rec.status = STATUS_FAILED
            rec.error = failure.kind
            key = self.config.api_key
            rec.error_detail = failure.detail.replace(key, "***") if key else failure.detail
        if self.config.keep_chunk_times and reader.chunk_times_ns:
            rec.chunk_times_s = [(t - t0_ns) / 1e9 for t in reader.chunk_times_ns]
        return rec

    # ---- results -------------------------------------------------------------------

    def _complete_records(self, state: _Run) -> list[RequestRecord]:
        out = []
        for req, rec in zip(state.requests, state.records, strict=True):
            if rec is None:
                rec = unfinished_record(req, state.stop_reason or "not sent")
            out.append(rec)
        return out

    def _result(
        self,
        workload: Workload,
        records: list[RequestRecord],
        state: _Run,
        info: Any,
        deltas: dict[str, float],
        sampler: Any,
        wall_s: float,
        cpu_s: float,
        cache: tuple[str, str | None],
    ) -> RunResult:
        from kvlab.backends import metrics as m

        cfg = self.config
        counters: dict[str, Any] = m.server_summary(deltas)
        counters.update(client_figures(records, state.timer_lateness_s, wall_s, cpu_s))
        if state.stop_reason:
            counters["stopped"] = state.stop_reason
        timeseries = sampler.timeseries if sampler is not None else {}
        if timeseries and not timeseries.get("t_s"):
            timeseries = {}
        return build_result(
            self.name,
            records,
            wall_s=wall_s,
            counters=counters,
            counter_source="server_metrics",
            record_source="usage.prompt_tokens_details",
            config={
                **cfg.to_dict(),
                "server": info.to_dict(),
                "cache_mode_applied": cache[0],
                "cache_salt": cache[1],
                **(
                    {
                        "transcript": state.transcript.summary(),
                        "mode_applied": "sessions" if cfg.mode == "trace" else cfg.mode,
                    }
                    if state.transcript is not None
                    else {}
                ),
            },
            timeseries=timeseries,
            seed=cfg.seed,
            workload=workload.name,
            provenance={"started_unix_s": time.time() - wall_s},
        )


#: Counts a live client does not know when it makes a record (kvlab.results.RequestRecord);
#: computed_tokens follows once usage reports the cached tokens.
_UNKNOWN_COUNTS: dict[str, Any] = {
    "computed_tokens": None,
    "offload_hit_tokens": None,
    "num_preemptions": None,
}


async def _turn_due(state: _Run, req: Request, first_due: float | None) -> float:
    """When ``req`` is due, having waited for it: ``first_due`` for a job's first turn,
    else its think time after now (the previous turn has just ended)."""
    if first_due is not None:
        return first_due
    due = state.now_s() + (req.think_time_s or 0.0)
    delay = due - state.now_s()
    if delay > 0:
        await asyncio.sleep(delay)
    return due


def _tuple(ids: list[int] | None) -> tuple[int, ...] | None:
    return None if ids is None else tuple(ids)


class _StoppedEarly(Exception):
    """Ctrl-C came while the run was still setting up (probing the server, priming)."""


async def _unless_stopped(aw: Awaitable[_T], state: _Run) -> _T:
    """``await aw``, unless the run is stopped first: then ``aw`` is cancelled and
    :class:`_StoppedEarly` raised (a probe of a server that never answers must not
    hold Ctrl-C for its whole timeout)."""
    task = asyncio.ensure_future(aw)
    if not state.stop.is_set():
        stop = asyncio.ensure_future(state.stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise _StoppedEarly


def served_max_model_len(body: bytes, model: str) -> int | None:
    """``max_model_len`` of ``model`` in a ``/v1/models`` answer (vLLM reports it per
    model; others do not: None). A single listed model counts when the id differs
    (a server started with ``--served-model-name`` aliases)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        return None
    entries = [d for d in data if isinstance(d, dict)]
    mine = [d for d in entries if d.get("id") == model] or (entries if len(entries) == 1 else [])
    for d in mine:
        n = d.get("max_model_len")
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    return None


def _on_sigint(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> Callable[[], object]:
    """Call ``stop`` in ``loop`` on Ctrl-C; returns the function that undoes it.

    The loop's own signal handler where it has one; else (Windows' event loops
    raise NotImplementedError) a plain ``signal.signal`` handler that hands the
    call to the loop. Where neither can be set, Ctrl-C keeps its default.
    """
    try:
        loop.add_signal_handler(signal.SIGINT, stop)
    except (NotImplementedError, AttributeError, RuntimeError):
        pass
    else:
        return lambda: loop.remove_signal_handler(signal.SIGINT)
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: loop.call_soon_threadsafe(stop))
    except (ValueError, OSError, AttributeError):
        return lambda: None
    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


__all__ = [
    "APIS",
    "CACHE_MODES",
    "HTTP_CLIENTS",
    "MAX_REQUEST_TOKENS",
    "TOO_LONG",
    "ContextLimit",
    "OpenAIBackend",
    "OpenAIConfig",
    "context_limit",
    "served_max_model_len",
]
