"""The backend seam: what a backend is, and the one builder of its RunResult.

A backend runs a :class:`~kvlab.workload.records.Workload` and returns a
:class:`~kvlab.results.RunResult`: the simulator (:mod:`kvlab.backends.sim`),
a live OpenAI-compatible server (:mod:`kvlab.backends.openai`) and
transformers in process (:mod:`kvlab.backends.hf`). Each of them hands its
records and figures to :func:`build_result`, the only place where a run's
summary and provenance are put together, so that every run directory has the
same keys in the same places:

* ``summary.json`` holds exactly :data:`SUMMARY_KEYS`, in that order, with
  None wherever the backend cannot know a figure (a live client knows no
  evicted blocks; the simulator has no client CPU). The offload keys
  (:data:`OFFLOAD_KEYS`) and ``sessions`` are the exceptions
  (:data:`OPTIONAL_KEYS`): present only when the run had an offload tier, and
  a session of two turns or more (:mod:`kvlab.report.sessions`).
* ``by_class`` is :func:`~kvlab.results.group_summaries` by request class
  for every backend; each class holds :data:`GROUP_KEYS`.
* ``wall_s``, the run's wall-clock time in seconds, is in ``run.json``'s
  provenance (:attr:`~kvlab.results.RunResult.wall_s`), not in the summary, so
  that one seed gives byte-identical ``summary.json`` files.
* ``prefix_cache_source`` says where the prefix-cache figures come from, one
  of :data:`PREFIX_SOURCES`, or None when they are unknown (then they are
  None too, never 0).
* ``run.json``'s provenance starts with ``backend``, ``kvlab_version``,
  ``seed`` and ``workload``; the configuration is the backend's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kvlab.results import RequestRecord, RunResult, summary_with_groups
from kvlab.results.summary import count_errors, latency_figures, latency_samples

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kvlab.workload.records import Request, Workload

#: Where prefix-cache figures come from (``prefix_cache_source``; None: unknown).
#: ``simulated``: the simulator's own counts; ``in_process``: counted by the
#: in-process backend, which prefills every prompt in full (no prefix cache, so
#: hits are 0); ``usage.prompt_tokens_details``: the cached tokens a live server
#: reported per request; ``server_metrics``: the server's ``/metrics`` counters
#: (whole run only: they cannot be split by class).
PREFIX_SOURCES: tuple[str, ...] = (
    "simulated",
    "in_process",
    "usage.prompt_tokens_details",
    "server_metrics",
)

#: Keys of every group summary in ``by_class`` (:func:`kvlab.results.summarize`).
GROUP_KEYS: tuple[str, ...] = (
    "num_requests",
    "num_completed",
    "num_rejected",
    "num_failed",
    "num_unfinished",
    "prompt_tokens",
    "output_tokens",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "request_throughput_per_s",
    "output_throughput_tok_per_s",
    "total_throughput_tok_per_s",
    "simulated_duration_s",
    "prefix_cache_queries",
    "prefix_cache_hits",
    "external_prefix_cache_hits",
    "num_preemptions",
    "prefix_cache_hit_rate",
    "prefix_cache_source",
)

#: The offload tier's figures (the simulator's ``--mode offload``).
OFFLOAD_KEYS: tuple[str, ...] = (
    "offload_capacity_blocks",
    "offload_stored_blocks",
    "offload_loaded_blocks",
    "offload_evicted_blocks",
    "offload_load_s",
)

#: Summary keys of :func:`kvlab.results.summary.latency_figures`: the ITL distribution,
#: standard deviations, the chosen percentiles, goodput under SLOs and miss causes.
LATENCY_KEYS: tuple[str, ...] = (
    "itl_s",
    "latency_std_s",
    "latency_percentiles_s",
    "goodput",
    "miss_causes",
)

#: Keys of ``summary.json``, in order. After the group keys (see GROUP_KEYS):
#: engine figures (vLLM's names; the simulator's, or a server's where it
#: reports them); the server's own request figures from ``/metrics``; the live
#: client's health; the in-process backend's measurements; then
#: ``errors_by_kind``, ``stopped`` (why a live run stopped early) and ``by_class``.
SUMMARY_KEYS: tuple[str, ...] = (
    *GROUP_KEYS[: GROUP_KEYS.index("prefix_cache_hit_rate")],
    # engine
    "preempted_prefix_cache_queries",
    "preempted_prefix_cache_hits",
    "external_prefix_cache_queries",
    "num_steps",
    "num_evicted_blocks",
    "kv_cache_usage_perc_max",
    "kv_cache_usage_perc_mean",
    "num_gpu_blocks",
    "block_size",
    "clock",
    *OFFLOAD_KEYS,
    "prefix_cache_hit_rate",
    "prefix_cache_source",
    # a live server's /metrics
    "prompt_tokens_cached",
    "server_prompt_tokens",
    "server_generation_tokens",
    "server_ttft_mean_s",
    "server_ttft_count",
    "server_e2e_mean_s",
    "server_e2e_count",
    "server_queue_mean_s",
    "server_queue_count",
    "server_itl_mean_s",
    "server_itl_count",
    # a live client
    "achieved_concurrency_mean",
    "achieved_concurrency_max",
    "send_lateness_s",
    "client_cpu_s",
    "client_cpu_per_request_ms",
    "client_cpu_fraction",
    "client_saturated",
    # transformers in process
    "prefill_time_s",
    "decode_time_s",
    "num_prefill_steps",
    "num_decode_steps",
    "kv_bytes_per_token_formula",
    "kv_cache_bytes_peak",
    "kv_token_bytes_peak",
    "kv_padding_bytes_peak",
    "kv_formula_mismatch_steps",
    "peak_rss_bytes",
    "weights_bytes",
    # every backend
    "errors_by_kind",
    "stopped",
    "by_class",
    # every backend, from the records (kvlab.results.summary.latency_figures)
    *LATENCY_KEYS,
    "sessions",
)

#: Bounds of a live backend's options: its time options (seconds: a day) and its
#: arrival process. NaN and infinity fail every comparison with them, so they are
#: refused with the rest.
MAX_SECONDS = 86_400.0
MAX_RATE_PER_S = 1e6
MAX_BURSTINESS = 1e6

#: Summary keys :func:`build_result` computes itself (a backend never passes them).
_BUILT = frozenset(
    {"prefix_cache_source", "errors_by_kind", "by_class", "sessions", "wall_s", *LATENCY_KEYS}
)

#: Summary keys present only when the run has them: an offload tier's, and
#: ``sessions`` (:func:`kvlab.report.sessions.session_continuity`) when the
#: workload has a session of two turns or more.
OPTIONAL_KEYS: tuple[str, ...] = (*OFFLOAD_KEYS, "sessions")


@runtime_checkable
class Backend(Protocol):
    """Runs a workload and returns its RunResult (built by :func:`build_result`).

    ``name`` is the ``backend`` of the run's provenance. Backends take their
    settings at construction; ``run`` may take backend-specific keyword options
    (progress hooks, incremental record writers).
    """

    @property
    def name(self) -> str: ...

    def run(self, workload: Workload, /) -> RunResult: ...


def build_result(
    backend: str,
    records: list[RequestRecord],
    *,
    wall_s: float,
    record_source: str | None,
    duration_s: float | None = None,
    counters: Mapping[str, Any] | None = None,
    counter_source: str | None = None,
    config: Mapping[str, Any] | None = None,
    timeseries: Mapping[str, list[float]] | None = None,
    histograms: Mapping[str, Any] | None = None,
    seed: int | None = None,
    workload: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> RunResult:
    """The RunResult of one run of ``backend`` (see the module docstring).

    ``records`` are the requests in workload order; ``wall_s`` the run's
    wall-clock seconds (the provenance's last key); ``duration_s`` the span
    throughputs divide by (default: first arrival to last finish). ``counters``
    are the backend's figures, by summary key (:data:`SUMMARY_KEYS`): they
    replace what the records say (:func:`kvlab.results.summarize`).
    ``record_source`` is where the records' ``cached_tokens`` come from and
    ``counter_source`` where the counters' prefix-cache figures come from, when
    they have any (both among :data:`PREFIX_SOURCES`). ``seed``, ``workload``
    and ``provenance`` (further backend pieces: versions, clock, start time)
    make the provenance.
    """
    figures = dict(counters or {})
    bad = sorted(k for k in figures if k not in SUMMARY_KEYS or k in _BUILT)
    if bad:
        raise ValueError(f"{backend}: not backend figures of a summary: {', '.join(bad)}")
    for source in (record_source, counter_source):
        if source is not None and source not in PREFIX_SOURCES:
            raise ValueError(f"{backend}: unknown prefix_cache_source {source!r}")
    samples = latency_samples(records)  # once, for the summary and the latency figures
    s = summary_with_groups(records, duration_s=duration_s, counters=figures, samples=samples)
    groups = s.pop("by_class")
    for g in groups.values():
        g["prefix_cache_source"] = _source(g, record_source)
    from_counters = "prefix_cache_queries" in figures
    s["prefix_cache_source"] = _source(s, counter_source if from_counters else record_source)
    s["errors_by_kind"] = count_errors(records)
    s["by_class"] = groups
    s.update(latency_figures(records, duration_s=s["simulated_duration_s"], samples=samples))
    usage = (timeseries or {}).get("kv_cache_usage_perc")
    if s.get("kv_cache_usage_perc_max") is None and usage:
        # a live server's sampled /metrics (the simulator counts its own)
        s["kv_cache_usage_perc_max"] = max(usage)
        s["kv_cache_usage_perc_mean"] = math.fsum(usage) / len(usage)
    from kvlab.report.sessions import session_continuity

    sessions = session_continuity(records, block_size=figures.get("block_size"))
    if sessions is not None:
        s["sessions"] = sessions
    summary = {k: s.get(k) for k in SUMMARY_KEYS if k in s or k not in OPTIONAL_KEYS}
    from kvlab import __version__

    prov: dict[str, Any] = {
        "backend": backend,
        "kvlab_version": __version__,
        "seed": seed,
        "workload": workload,
    }
    prov.update(provenance or {})
    prov["wall_s"] = wall_s
    return RunResult(
        records=records,
        summary=summary,
        config=dict(config or {}),
        timeseries=dict(timeseries or {}),
        histograms=dict(histograms or {}),
        provenance=prov,
        latency=samples,
    )


def unfinished_record(req: Request, detail: str, *, counts_known: bool = False) -> RequestRecord:
    """The record of a request that never finished (``unfinished``, error ``cancelled``
    with ``detail``): its counts are 0 for a backend that counts them itself
    (``counts_known``), else unknown (None)."""
    from kvlab.results import STATUS_UNFINISHED

    count = 0 if counts_known else None
    return RequestRecord(
        request_id=req.request_id,
        arrival_s=req.arrival_s or 0.0,
        prompt_tokens=req.prompt_tokens,
        output_tokens=req.output_tokens,
        session_id=req.session_id,
        cls=req.cls,
        status=STATUS_UNFINISHED,
        error="cancelled",
        error_detail=detail,
        cached_tokens=count,
        computed_tokens=count,
        offload_hit_tokens=count,
        num_preemptions=count,
    )


def interrupted_result(
    backend: str,
    requests: Sequence[Request],
    done: Sequence[RequestRecord] = (),
    *,
    wall_s: float,
    record_source: str | None,
    counts_known: bool = False,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    workload: str | None = None,
) -> RunResult:
    """The RunResult of a run that Ctrl-C stopped: the records in ``done`` (finished
    requests, by request id), every other request of ``requests`` unfinished
    (:func:`unfinished_record`), summary ``stopped: interrupted`` and status
    ``interrupted``. ``requests`` is empty when the workload was not loaded yet."""
    by_id = {r.request_id: r for r in done}
    records = [
        by_id.get(q.request_id) or unfinished_record(q, "interrupted", counts_known=counts_known)
        for q in requests
    ]
    result = build_result(
        backend,
        records,
        wall_s=wall_s,
        record_source=record_source,
        counters={"stopped": "interrupted"},
        config=config,
        seed=seed,
        workload=workload,
    )
    result.status = "interrupted"
    return result


def _source(summary: Mapping[str, Any], source: str | None) -> str | None:
    """``source`` when the summary's prefix-cache figures are known, else None."""
    known = summary.get("prefix_cache_queries") is not None
    return source if known else None


__all__ = [
    "GROUP_KEYS",
    "LATENCY_KEYS",
    "MAX_BURSTINESS",
    "MAX_RATE_PER_S",
    "MAX_SECONDS",
    "OFFLOAD_KEYS",
    "OPTIONAL_KEYS",
    "PREFIX_SOURCES",
    "SUMMARY_KEYS",
    "Backend",
    "build_result",
    "interrupted_result",
    "unfinished_record",
]
