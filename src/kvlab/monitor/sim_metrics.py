"""The simulator as a vLLM ``/metrics`` endpoint: a run recorded event by event,
then replayed on a wall clock scaled by ``speed``.

:func:`record_run` runs the engine once (at full speed) with an observer
(:meth:`kvlab.sim.run_state.RunState.observe_with`) that keeps the engine's
state after every event: KV usage (vLLM's definition: referenced blocks over
``num_blocks - 1``), running and waiting requests, vLLM's prefix-cache counters
(tokens, at admission) and the preemptions so far. The per-request histograms
come from the run's records, each observed at the simulated instant vLLM
observes it: TTFT at the first token, E2E, queue time, time per output token
and ``request_success`` when the request finishes.

:class:`MetricsReplay` exposes that timeline with prometheus_client under
vLLM's names, types and histogram buckets (vLLM ``v1/metrics/loggers.py`` and
``v1/metrics/buckets.py``): at wall time ``w`` after the start, every event of
simulated time ``<= w * speed`` has been applied, so each value is the
engine's state at that simulated instant. Between two events the state holds
(the engine changes only at events; a decode window of many steps is one event,
so usage inside it is seen at its end).

Not exported, because the simulator does not keep them: per-token inter-token
latencies (``inter_token_latency_seconds``: decode windows advance many steps at
once) and the token counters (``prompt_tokens_total``, ``generation_tokens_total``:
a request's tokens are advanced lazily while it decodes in a cohort).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvlab.errors import DependencyMissing

if TYPE_CHECKING:
    from kvlab.results import RunResult
    from kvlab.sim.run_state import RunState

#: vLLM's default histogram buckets (vllm/v1/metrics/buckets.py).
TTFT_BUCKETS: tuple[float, ...] = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0),
    *(2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0),
)
ITL_BUCKETS: tuple[float, ...] = (
    *(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0),
    *(2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0),
)
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (
    *(0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0),
    *(40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0),
)

#: Request histogram kinds -> (vLLM name, buckets, help).
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...], str]] = {
    "ttft": (
        "vllm:time_to_first_token_seconds",
        TTFT_BUCKETS,
        "Histogram of time to first token in seconds.",
    ),
    "tpot": (
        "vllm:request_time_per_output_token_seconds",
        ITL_BUCKETS,
        "Histogram of time_per_output_token_seconds per request.",
    ),
    "e2e": (
        "vllm:e2e_request_latency_seconds",
        REQUEST_LATENCY_BUCKETS,
        "Histogram of e2e request latency in seconds.",
    ),
    "queue": (
        "vllm:request_queue_time_seconds",
        REQUEST_LATENCY_BUCKETS,
        "Histogram of time spent in WAITING phase for request.",
    ),
}


@dataclass
class Timeline:
    """The engine's state after each event (``t_s`` ascending, simulated seconds) and
    the request observations (``obs``: (t_s, kind, value), ascending)."""

    t_s: list[float] = field(default_factory=list)
    usage: list[float] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)
    preemptions: list[int] = field(default_factory=list)
    obs: list[tuple[float, str, float]] = field(default_factory=list)
    cache_config: dict[str, str] = field(default_factory=dict)
    model: str = "sim"

    @property
    def duration_s(self) -> float:
        return max(self.t_s[-1] if self.t_s else 0.0, self.obs[-1][0] if self.obs else 0.0)

    def state_at(self, t_s: float) -> int | None:
        """Index of the last event at or before ``t_s`` (None before the first)."""
        i = bisect.bisect_right(self.t_s, t_s) - 1
        return i if i >= 0 else None


def _observer(tl: Timeline, ticks_per_s: int) -> Callable[[RunState], None]:
    def see(st: RunState) -> None:
        t = st.now / ticks_per_s
        if tl.t_s and tl.t_s[-1] == t:  # same instant: keep the latest state only
            for col in (tl.t_s, tl.usage, tl.running, tl.waiting, tl.queries, tl.hits,
                        tl.preemptions):  # fmt: skip
                col.pop()
        tl.t_s.append(t)
        tl.usage.append(st.kv.usage())
        tl.running.append(len(st.sched.running))
        tl.waiting.append(st.sched.num_waiting())
        tl.queries.append(st.c["prefix_cache_queries"])
        tl.hits.append(st.c["prefix_cache_hits"])
        tl.preemptions.append(st.num_preemptions_seen)

    return see


def request_observations(result: RunResult) -> list[tuple[float, str, float]]:
    """(simulated instant, histogram kind, value) of every request event, in time order."""
    obs: list[tuple[float, str, float]] = []
    for r in result.records:
        if r.first_token_s is not None:
            obs.append((r.first_token_s, "ttft", r.first_token_s - r.arrival_s))
        if r.status == "ok" and r.finish_s is not None:
            obs.append((r.finish_s, "e2e", r.finish_s - r.arrival_s))
            if r.admitted_s is not None:
                obs.append((r.finish_s, "queue", r.admitted_s - r.arrival_s))
            if r.first_token_s is not None and r.output_tokens > 1:
                tpot = (r.finish_s - r.first_token_s) / (r.output_tokens - 1)
                obs.append((r.finish_s, "tpot", tpot))
            obs.append((r.finish_s, "success", 1.0))
    obs.sort(key=lambda o: o[0])
    return obs


def record_run(
    workload: Any, cfg: Any, progress: Callable[[int, int], None] | None = None
) -> tuple[RunResult, Timeline]:
    """Simulate ``workload`` under ``cfg`` once, keeping the state after every event."""
    from kvlab.sim.cost_model import TICKS_PER_S
    from kvlab.sim.engine import Engine

    engine = Engine(workload, cfg, progress)
    tl = Timeline(model=str(cfg.model))
    engine.loop.observe_with(_observer(tl, TICKS_PER_S))
    try:
        result = engine.run()
    finally:
        engine.close()
    tl.obs = request_observations(result)
    r = engine.r
    tl.cache_config = {
        "block_size": str(r.block_size),
        "num_gpu_blocks": str(r.num_blocks),
        "cache_dtype": str(r.kv_dtype),
        "enable_prefix_caching": str(bool(cfg.enable_prefix_caching)),
    }
    return result, tl


class MetricsReplay:
    """A :class:`Timeline` on a wall clock scaled by ``speed``, exposed under vLLM's names.

    Invariant: after :meth:`advance_to` ``(t)``, every gauge holds the state of the
    last event at or before simulated ``t`` and every counter and histogram holds
    the events up to ``t`` (counters are increased by the engine's own increments).
    """

    def __init__(self, tl: Timeline) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise DependencyMissing("prometheus-client", "live") from None
        self.tl = tl
        self.registry = reg = CollectorRegistry()
        labels = {"engine": "0", "model_name": tl.model}
        names = list(labels)

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, names, registry=reg).labels(**labels)

        def counter(name: str, doc: str) -> Any:
            return Counter(name, doc, names, registry=reg).labels(**labels)

        self.usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.running = gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches."
        )
        self.waiting = gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        )
        self.queries = counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        )
        self.hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        self.preempt = counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine."
        )
        self.success = Counter(
            "vllm:request_success", "Count of successfully processed requests.",
            [*names, "finished_reason"], registry=reg,
        ).labels(**labels, finished_reason="length")  # fmt: skip
        self.hist = {
            kind: Histogram(name, doc, names, buckets=b, registry=reg).labels(**labels)
            for kind, (name, b, doc) in HISTOGRAMS.items()
        }
        info_labels = {**tl.cache_config, "engine": "0"}
        Gauge(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
            list(info_labels), registry=reg,
        ).labels(**info_labels).set(1)  # fmt: skip
        self._i = -1  # last applied event
        self._j = 0  # next request observation
        self._lock = threading.Lock()
        self.sim_now_s = 0.0

    def advance_to(self, t_s: float) -> None:
        """Apply every event up to simulated ``t_s`` (monotonic)."""
        tl = self.tl
        with self._lock:
            i = tl.state_at(t_s)
            if i is not None and i > self._i:
                prev = self._i
                dq = tl.queries[i] - (tl.queries[prev] if prev >= 0 else 0)
                dh = tl.hits[i] - (tl.hits[prev] if prev >= 0 else 0)
                dp = tl.preemptions[i] - (tl.preemptions[prev] if prev >= 0 else 0)
                if dq:
                    self.queries.inc(dq)
                if dh:
                    self.hits.inc(dh)
                if dp:
                    self.preempt.inc(dp)
                self.usage.set(tl.usage[i])
                self.running.set(tl.running[i])
                self.waiting.set(tl.waiting[i])
                self._i = i
            obs = tl.obs
            while self._j < len(obs) and obs[self._j][0] <= t_s:
                _, kind, v = obs[self._j]
                if kind == "success":
                    self.success.inc()
                else:
                    self.hist[kind].observe(v)
                self._j += 1
            self.sim_now_s = max(self.sim_now_s, t_s)

    @property
    def done(self) -> bool:
        return self._i >= len(self.tl.t_s) - 1 and self._j >= len(self.tl.obs)

    def serve(self, port: int, addr: str = "127.0.0.1") -> tuple[Any, int]:
        """Start the HTTP endpoint (``GET /metrics``); returns (server, port)."""
        from prometheus_client import start_http_server

        try:
            server, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            from kvlab.errors import ConfigError

            raise ConfigError(
                f"--serve-metrics {port}: cannot listen on {addr}:{port}: {e}"
            ) from None
        return server, int(server.server_port)

    def replay(
        self,
        speed: float,
        *,
        tick_s: float = 0.05,
        on_tick: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        stopped: Callable[[], bool] | None = None,
    ) -> None:
        """Advance in wall time: simulated time = wall seconds since the start x ``speed``.
        Returns once every event has been applied, or once ``stopped()`` is true."""
        t0 = clock()
        while True:
            sim_t = (clock() - t0) * speed
            self.advance_to(sim_t)
            if on_tick is not None:
                on_tick(sim_t)
            if self.done or (stopped is not None and stopped()):
                return
            sleep(tick_s)


__all__ = [
    "HISTOGRAMS",
    "ITL_BUCKETS",
    "REQUEST_LATENCY_BUCKETS",
    "TTFT_BUCKETS",
    "MetricsReplay",
    "Timeline",
    "record_run",
    "request_observations",
]
