"""Server-side KV metrics: Prometheus ``/metrics`` of vLLM, SGLang and llama.cpp.

:func:`parse_prometheus` reads the text exposition format into samples keyed
by *sample* name (counters keep their ``_total``; histogram ``_sum`` and
``_count`` are their own samples). A :class:`ServerProfile` maps kvlab's
names onto each server's sample names, with legacy names as fallbacks; values
are summed over labels (``engine``, ``model_name``...). Names are from
REFERENCE section 3 and the servers' metric definitions (vLLM
``v1/metrics/loggers.py``, SGLang ``metrics/collector.py``, llama.cpp
``tools/server/server.cpp``).

:class:`MetricsSampler` polls ``/metrics`` through the run's
:class:`~kvlab.backends.transport.Transport`, in the client's event loop (parsing
in a worker thread) and keeps a time series; :meth:`MetricsSampler.snapshot`
reads the counters so that a run can report before/after deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvlab.backends.transport import Transport

Samples = dict[str, list[tuple[dict[str, str], float]]]

_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> Samples:
    """Samples of a Prometheus text exposition: name -> [(labels, value)].

    Comment and blank lines are skipped, as are lines that do not parse.
    """
    out: Samples = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.find(" ")
        labels: dict[str, str] = {}
        if brace >= 0 and (space < 0 or brace < space):
            close = line.rfind("}")
            if close < brace:
                continue
            name = line[:brace]
            labels = {
                k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                for k, v in _LABEL_RE.findall(line[brace + 1 : close])
            }
            rest = line[close + 1 :].split()
        else:
            if space < 0:
                continue
            name = line[:space]
            rest = line[space + 1 :].split()
        if not rest:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        out.setdefault(name, []).append((labels, value))
    return out


def sample_sum(samples: Samples, name: str, where: Mapping[str, str] | None = None) -> float | None:
    """Sum of the samples called ``name`` whose labels match ``where``; None if absent."""
    rows = samples.get(name)
    if rows is None:
        return None
    total = 0.0
    found = False
    for labels, v in rows:
        if where and any(labels.get(k) != val for k, val in where.items()):
            continue
        if math.isnan(v):
            continue
        total += v
        found = True
    return total if found else None


def _spec(s: str) -> tuple[str, dict[str, str]]:
    """``name`` or ``name{k=v,...}`` -> (name, label filter)."""
    if "{" not in s:
        return s, {}
    name, _, rest = s.partition("{")
    pairs = (p.split("=", 1) for p in rest.rstrip("}").split(",") if p)
    return name, {k: v for k, v in pairs}


@dataclass(frozen=True)
class ServerProfile:
    """kvlab names -> candidate sample names (first present wins) for one server.

    ``gauges`` go into the time series; ``counters`` (monotonic, including
    histogram ``_sum``/``_count``) are snapshotted before and after a run and
    reported as deltas; ``reset_path`` is the POST endpoint that empties the
    prefix cache, if the server has one.
    """

    name: str
    prefix: str
    gauges: Mapping[str, tuple[str, ...]]
    counters: Mapping[str, tuple[str, ...]]
    reset_path: str | None = None
    info_metric: str | None = None
    #: The server's prompt-token counter leaves out the tokens it took from its cache
    #: (llama.cpp: "excluding cached tokens"); :meth:`read` adds them back, so that
    #: ``prompt_tokens`` is every prompt token on every server.
    prompt_tokens_exclude_cached: bool = False

    def read(self, samples: Samples, which: str) -> dict[str, float]:
        table = self.gauges if which == "gauges" else self.counters
        out: dict[str, float] = {}
        for key, candidates in table.items():
            for cand in candidates:
                name, where = _spec(cand)
                v = sample_sum(samples, name, where)
                if v is not None:
                    out[key] = v
                    break
        both = "prompt_tokens" in out and "prompt_tokens_cached" in out
        if which != "gauges" and self.prompt_tokens_exclude_cached and both:
            out["prompt_tokens"] += out["prompt_tokens_cached"]
        return out


VLLM = ServerProfile(
    name="vllm",
    prefix="vllm:",
    gauges={
        "kv_cache_usage_perc": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        "num_requests_running": ("vllm:num_requests_running",),
        "num_requests_waiting": ("vllm:num_requests_waiting",),
    },
    counters={
        "prefix_cache_queries": (
            "vllm:prefix_cache_queries_total",
            "vllm:gpu_prefix_cache_queries_total",
        ),
        "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
        "num_preemptions": ("vllm:num_preemptions_total",),
        "prompt_tokens_cached": (
            "vllm:prompt_tokens_cached_total",
            "vllm:prompt_tokens_by_source_total{source=local_cache_hit}",
        ),
        "external_prefix_cache_queries": ("vllm:external_prefix_cache_queries_total",),
        "external_prefix_cache_hits": ("vllm:external_prefix_cache_hits_total",),
        "prompt_tokens": ("vllm:prompt_tokens_total",),
        "generation_tokens": ("vllm:generation_tokens_total",),
        "ttft_sum_s": ("vllm:time_to_first_token_seconds_sum",),
        "ttft_count": ("vllm:time_to_first_token_seconds_count",),
        "e2e_sum_s": ("vllm:e2e_request_latency_seconds_sum",),
        "e2e_count": ("vllm:e2e_request_latency_seconds_count",),
        "queue_sum_s": ("vllm:request_queue_time_seconds_sum",),
        "queue_count": ("vllm:request_queue_time_seconds_count",),
        "itl_sum_s": (
            "vllm:inter_token_latency_seconds_sum",
            "vllm:time_per_output_token_seconds_sum",
        ),
        "itl_count": (
            "vllm:inter_token_latency_seconds_count",
            "vllm:time_per_output_token_seconds_count",
        ),
    },
    reset_path="/reset_prefix_cache",
    info_metric="vllm:cache_config_info",
)

SGLANG = ServerProfile(
    name="sglang",
    prefix="sglang:",
    gauges={
        "kv_cache_usage_perc": ("sglang:token_usage",),
        "num_used_tokens": ("sglang:num_used_tokens",),
        "max_total_num_tokens": ("sglang:max_total_num_tokens",),
        "num_requests_running": ("sglang:num_running_reqs",),
        "num_requests_waiting": ("sglang:num_queue_reqs",),
        "cache_hit_rate": ("sglang:cache_hit_rate",),
    },
    counters={
        "num_preemptions": ("sglang:num_retracted_requests_total", "sglang:num_retracted_reqs"),
        "prompt_tokens": ("sglang:prompt_tokens_total",),
        "prompt_tokens_cached": ("sglang:cached_tokens_total",),
        "generation_tokens": ("sglang:generation_tokens_total",),
        "ttft_sum_s": ("sglang:time_to_first_token_seconds_sum",),
        "ttft_count": ("sglang:time_to_first_token_seconds_count",),
        "e2e_sum_s": ("sglang:e2e_request_latency_seconds_sum",),
        "e2e_count": ("sglang:e2e_request_latency_seconds_count",),
    },
    reset_path="/flush_cache",
)

LLAMACPP = ServerProfile(
    name="llamacpp",
    prefix="llamacpp:",
    gauges={
        "kv_cache_usage_perc": ("llamacpp:kv_cache_usage_ratio",),
        "kv_cache_tokens": ("llamacpp:kv_cache_tokens",),
        "num_requests_running": ("llamacpp:requests_processing",),
        "num_requests_waiting": ("llamacpp:requests_deferred",),
        "n_tokens_max": ("llamacpp:n_tokens_max",),
    },
    counters={
        "prompt_tokens": ("llamacpp:prompt_tokens_total",),
        "prompt_tokens_cached": ("llamacpp:prompt_tokens_cached_total",),
        "generation_tokens": ("llamacpp:tokens_predicted_total",),
        "prompt_seconds": ("llamacpp:prompt_seconds_total",),
        "generation_seconds": ("llamacpp:tokens_predicted_seconds_total",),
        "num_decode_calls": ("llamacpp:n_decode_total",),
    },
    prompt_tokens_exclude_cached=True,
)

PROFILES: dict[str, ServerProfile] = {p.name: p for p in (VLLM, SGLANG, LLAMACPP)}

#: Counters whose delta goes into the summary under the same name.
SUMMARY_COUNTERS: tuple[str, ...] = (
    "prefix_cache_queries",
    "prefix_cache_hits",
    "num_preemptions",
    "prompt_tokens_cached",
    "external_prefix_cache_queries",
    "external_prefix_cache_hits",
)


def detect_profile(samples: Samples) -> ServerProfile | None:
    """The profile whose metric prefix most samples carry, or None."""
    best, best_n = None, 0
    for p in PROFILES.values():
        n = sum(1 for name in samples if name.startswith(p.prefix))
        if n > best_n:
            best, best_n = p, n
    return best


def cache_config_info(samples: Samples, profile: ServerProfile) -> dict[str, str]:
    """The labels of the server's cache info metric (vLLM ``cache_config_info``)."""
    if profile.info_metric is None:
        return {}
    rows = samples.get(profile.info_metric) or []
    return dict(rows[0][0]) if rows else {}


def counter_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """after - before for counters present in both (a negative delta means a restart: dropped)."""
    out: dict[str, float] = {}
    for k, v in after.items():
        if k in before and v - before[k] >= 0:
            out[k] = v - before[k]
    return out


def server_summary(deltas: Mapping[str, float]) -> dict[str, Any]:
    """Summary keys from counter deltas: the counters plus server-side histogram means.

    A server without a prefix-cache query counter but with prompt and cached-token
    counters (SGLang's ``cached_tokens_total``, llama.cpp's ``prompt_tokens_cached``)
    gets its queries and hits from those: queries = prompt tokens, hits = cached tokens.
    """
    s: dict[str, Any] = {}
    for k in SUMMARY_COUNTERS:
        if k in deltas:
            s[k] = round(deltas[k])
    for k in ("prompt_tokens", "generation_tokens"):
        if k in deltas:
            s[f"server_{k}"] = round(deltas[k])
    known = "prompt_tokens" in deltas and "prompt_tokens_cached" in s
    if "prefix_cache_queries" not in s and known:
        # SGLang and llama.cpp count no queries: every prompt token queries the cache, and
        # their cached-token counter (sglang:cached_tokens_total) counts the hits.
        s["prefix_cache_queries"] = round(deltas["prompt_tokens"])
        s["prefix_cache_hits"] = s["prompt_tokens_cached"]
    for stem in ("ttft", "e2e", "queue", "itl"):
        n = deltas.get(f"{stem}_count")
        tot = deltas.get(f"{stem}_sum_s")
        if n and tot is not None:
            s[f"server_{stem}_mean_s"] = tot / n
            s[f"server_{stem}_count"] = int(n)
    return s


def parse_slots(body: str) -> dict[str, Any]:
    """llama-server ``GET /slots``: number of slots, context per slot, busy slots."""
    try:
        slots = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(slots, list):
        return {}
    n_ctx = {s.get("n_ctx") for s in slots if isinstance(s, dict)}
    return {
        "num_slots": len(slots),
        "n_ctx_per_slot": next(iter(n_ctx)) if len(n_ctx) == 1 else sorted(n_ctx - {None}),
        "num_busy_slots": sum(
            1 for s in slots if isinstance(s, dict) and (s.get("is_processing") or s.get("state"))
        ),
        "slot_ids": [s.get("id") for s in slots if isinstance(s, dict)],
    }


@dataclass
class ServerInfo:
    """What a probe learned about a server before a run."""

    kind: str  # vllm | sglang | llamacpp | ollama | openai (unknown)
    profile: ServerProfile | None = None
    cache_config: dict[str, str] = field(default_factory=dict)
    slots: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "metrics": self.profile is not None}
        if self.cache_config:
            d["cache_config"] = self.cache_config
        if self.slots:
            d["slots"] = {k: v for k, v in self.slots.items() if k != "slot_ids"}
        return d


async def _get(transport: Transport, path: str) -> tuple[int, str] | None:
    """(status, text) of ``GET path``, or None when the server did not answer."""
    try:
        resp = await transport.request("GET", path, timeout_s=5)
    except (TimeoutError, OSError):
        return None
    return resp.status, resp.text


async def _post(transport: Transport, path: str) -> int | None:
    """The status of an empty ``POST path``, or None when the server did not answer."""
    try:
        resp = await transport.request("POST", path, timeout_s=30)
    except (TimeoutError, OSError):
        return None
    return resp.status


async def probe_server(transport: Transport) -> ServerInfo:
    """Detect the server kind from ``/metrics``, ``/slots`` and ``/api/version``."""
    got = await _get(transport, "/metrics")
    slots_got = await _get(transport, "/slots")
    slots = parse_slots(slots_got[1]) if slots_got and slots_got[0] == 200 else {}
    if got and got[0] == 200:
        samples = await asyncio.to_thread(parse_prometheus, got[1])
        prof = detect_profile(samples)
        if prof is not None:
            return ServerInfo(prof.name, prof, cache_config_info(samples, prof), slots)
    if slots:
        return ServerInfo("llamacpp", None, {}, slots)
    ol = await _get(transport, "/api/version")
    if ol and ol[0] == 200 and '"version"' in ol[1]:
        return ServerInfo("ollama")
    return ServerInfo("openai")


async def reset_prefix_cache(transport: Transport, info: ServerInfo) -> bool:
    """Empty the server's prefix cache; False when it has no (enabled) reset endpoint.

    vLLM: ``POST /reset_prefix_cache`` (needs ``VLLM_SERVER_DEV_MODE=1``);
    SGLang: ``POST /flush_cache``; llama-server: ``POST /slots/ID?action=erase``
    for every slot.
    """
    if info.kind == "llamacpp" and info.slots.get("slot_ids"):
        codes = [await _post(transport, f"/slots/{i}?action=erase") for i in info.slots["slot_ids"]]
        return all(c == 200 for c in codes)
    path = info.profile.reset_path if info.profile else None
    if path is None:
        return False
    return await _post(transport, path) == 200


class MetricsSampler:
    """Polls ``/metrics`` every ``interval_s`` and keeps a time series of gauges.

    ``timeseries`` columns: ``t_s`` (seconds since the run's start), each gauge of
    the profile, and each counter as its increase since the first sample.
    Sampling never raises: a failed poll is skipped and counted in
    ``num_failed_polls``.
    """

    def __init__(self, transport: Transport, profile: ServerProfile, *, interval_s: float) -> None:
        self._transport = transport
        self.profile = profile
        self.interval_s = interval_s
        self._t0_ns = 0
        self._task: asyncio.Task[None] | None = None
        self._first: dict[str, float] | None = None
        self.timeseries: dict[str, list[float]] = {"t_s": []}
        self.num_failed_polls = 0

    async def read(self) -> tuple[dict[str, float], dict[str, float]] | None:
        """(gauges, counters) now, or None when the endpoint did not answer."""
        got = await _get(self._transport, "/metrics")
        if not got or got[0] != 200:
            self.num_failed_polls += 1
            return None
        samples = await asyncio.to_thread(parse_prometheus, got[1])
        return self.profile.read(samples, "gauges"), self.profile.read(samples, "counters")

    async def snapshot(self) -> dict[str, float] | None:
        """The profile's counters now (None when the endpoint did not answer)."""
        r = await self.read()
        return None if r is None else r[1]

    def _append(
        self, t_s: float, gauges: Mapping[str, float], counters: Mapping[str, float]
    ) -> None:
        if self._first is None:
            self._first = dict(counters)
        row: dict[str, float] = dict(gauges)
        for k in ("prefix_cache_queries", "prefix_cache_hits", "num_preemptions"):
            if k in counters and k in self._first:
                row[k] = counters[k] - self._first[k]
        n = len(self.timeseries["t_s"])
        self.timeseries["t_s"].append(t_s)
        for k, v in row.items():
            col = self.timeseries.setdefault(k, [math.nan] * n)
            col.append(v)
        for col in self.timeseries.values():
            if len(col) < n + 1:
                col.append(math.nan)

    async def _loop(self) -> None:
        while True:
            t = time.perf_counter_ns()
            r = await self.read()
            if r is not None:
                self._append((t - self._t0_ns) / 1e9, r[0], r[1])
            await asyncio.sleep(max(0.0, self.interval_s - (time.perf_counter_ns() - t) / 1e9))

    def start(self, t0_ns: int) -> None:
        """Start polling; sample times are seconds since ``t0_ns`` (perf_counter_ns)."""
        self._t0_ns = t0_ns
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop polling and take one last sample, so that even a run shorter than
        one interval has the server's state at its end in the time series."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        t = time.perf_counter_ns()
        r = await self.read()
        if r is not None:
            self._append((t - self._t0_ns) / 1e9, r[0], r[1])


__all__ = [
    "LLAMACPP",
    "PROFILES",
    "SGLANG",
    "SUMMARY_COUNTERS",
    "VLLM",
    "MetricsSampler",
    "ServerInfo",
    "ServerProfile",
    "cache_config_info",
    "counter_deltas",
    "detect_profile",
    "parse_prometheus",
    "parse_slots",
    "probe_server",
    "reset_prefix_cache",
    "sample_sum",
    "server_summary",
]
