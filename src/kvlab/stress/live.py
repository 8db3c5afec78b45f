"""The stress matrix against a live server: scaled to it, replayed, simulated beside it.

``kvlab stress --endpoint URL`` reads the server's limits (:func:`probe_limits`: the
context from ``/v1/models`` ``max_model_len``, the KV cache from ``/metrics``
``cache_config_info``: ``block_size`` and ``num_gpu_blocks``), scales every scenario
of the matrix to that server (:func:`scale_scenario`), sends it through the replay
path (:class:`kvlab.backends.openai.OpenAIBackend`, the client ``kvlab replay`` uses,
which samples the server's ``/metrics`` during the run), and simulates the same scaled
scenario with the server's block size and block count (:func:`run_live`).

The scaling rule (:data:`SCALING_RULE`, quoted in the output and docs/stress.md) keeps
two fractions of each scenario:

* the **fraction of the context**: prompt and generation lengths are multiplied by
  ``server max_model_len / original max_model_len`` (rounded; a prompt at least
  :data:`MIN_PROMPT_TOKENS`, a generation at least 1 token, generation capped so that
  prompt + generation fits the server's context when the original fitted its own; a
  prompt at or beyond the original context stays beyond the server's: rejected there
  too);
* the **fraction of the KV cache**: the requests in flight together (batch x
  concurrency) hold, at full length, ``d`` = their blocks / the usable blocks of the
  original cache (kvlab plan's pool for the scenario's model and GPU); the scaled
  scenario has ``round(d x usable server blocks / blocks of one scaled sequence)``
  of them (at least 1), split as batch x concurrency in the original's proportion
  (concurrency x sqrt(new count / old count), rounded, the batch takes the rest; a
  scenario of one client or batches of one keeps that).

Everything else (rounds, arrival process, rate, ramp, shared-prefix fraction, seed) is
kept; engine settings (KV dtype, max_num_seqs, max_num_batched_tokens, TP, offload) are
the server's own, not the scenario's.

Verdicts of the live scenarios come from the measured figures (the replay's summary
against the matrix's SLOs); the simulator's from its own. Latencies are not comparable
unless the simulator's clock was calibrated on that server (``--calibration``).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.errors import BackendUnavailable, CapacityError, ConfigError
from kvlab.stress.matrix import MAX_SCENARIO_REQUESTS, Matrix, Scenario
from kvlab.stress.slo import Slo

#: The shortest prompt sent to a server (vLLM's CPU worker fails on prompts of 5
#: tokens or fewer; a 16-token floor keeps every prompt well above that).
MIN_PROMPT_TOKENS = 16

SCALING_RULE = (
    "prompt and generation lengths x (server max_model_len / original max_model_len), "
    f"prompt >= {MIN_PROMPT_TOKENS} tokens, generation >= 1 and capped to fit the context; "
    "requests in flight together (batch x concurrency) = the original's KV demand at full "
    "length as a fraction of its usable blocks, times the server's usable blocks, divided "
    "by the blocks of one scaled sequence (>= 1), split in the original batch:concurrency "
    "proportion (one client or batches of one kept); rounds, arrival, rate and "
    "shared-prefix fraction kept; engine settings are the server's"
)
LATENCY_NOTE = (
    "latencies differ: the real ones are measured on the server, the simulated ones come "
    "from the simulator's roofline clock of the scenario's GPU, uncalibrated for this "
    "server (pass --calibration FILE from `kvlab calibrate` to use a fitted clock)"
)

#: Metrics compared side by side: (key, label, kind) with kind pct, int, s or rate.
COMPARED: tuple[tuple[str, str, str], ...] = (
    ("kv_peak_usage", "KV peak", "pct"),
    ("num_preemptions", "preemptions", "int"),
    ("prefix_cache_hit_rate", "prefix hit rate", "pct"),
    ("ttft_p50_s", "TTFT p50", "s"),
    ("ttft_p99_s", "TTFT p99", "s"),
    ("tpot_p50_s", "TPOT p50", "s"),
    ("tpot_p99_s", "TPOT p99", "s"),
    ("e2e_p50_s", "E2E p50", "s"),
    ("e2e_p99_s", "E2E p99", "s"),
    ("output_throughput_tok_per_s", "output tok/s", "rate"),
)


# ------------------------------------------------------------------ server limits


@dataclass(frozen=True)
class ServerLimits:
    """What a server says about itself: the served model, its context and its KV cache.

    ``num_gpu_blocks`` counts vLLM's null block; ``usable_blocks`` does not."""

    endpoint: str
    model: str
    max_model_len: int
    block_size: int
    num_gpu_blocks: int
    enable_prefix_caching: bool = True
    kind: str = "vllm"
    cache_config: dict[str, str] = field(default_factory=dict)

    @property
    def usable_blocks(self) -> int:
        return self.num_gpu_blocks - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "kind": self.kind,
            "model": self.model,
            "max_model_len": self.max_model_len,
            "block_size": self.block_size,
            "num_gpu_blocks": self.num_gpu_blocks,
            "usable_blocks": self.usable_blocks,
            "kv_tokens": self.usable_blocks * self.block_size,
            "enable_prefix_caching": self.enable_prefix_caching,
        }


def limits_from(
    endpoint: str, models_status: int, models_body: bytes, metrics: tuple[int, str] | None,
    model: str | None,
) -> ServerLimits:  # fmt: skip
    """:class:`ServerLimits` from the answers of ``GET /v1/models`` and ``GET /metrics``
    (None when it did not answer); ConfigError (one line) when they do not say enough."""
    import json

    from kvlab.backends import metrics as m
    from kvlab.backends.openai import served_max_model_len

    if models_status != 200:
        raise ConfigError(
            f"{endpoint}/v1/models answered HTTP {models_status}: not an OpenAI-compatible "
            "server (kvlab stress --endpoint needs one)"
        )
    try:
        doc = json.loads(models_body)
        ids = [d["id"] for d in doc["data"] if isinstance(d, dict) and isinstance(d.get("id"), str)]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ConfigError(
            f"{endpoint}/v1/models is not an OpenAI model list: not an OpenAI-compatible server"
        ) from None
    if model is None:
        if len(ids) != 1:
            raise ConfigError(
                f"{endpoint} serves {len(ids)} models ({', '.join(ids) or 'none'}); "
                "choose one with --served-model"
            )
        model = ids[0]
    elif model not in ids:
        raise ConfigError(
            f"{endpoint} does not serve {model!r} (it serves {', '.join(ids) or 'nothing'})"
        )
    max_len = served_max_model_len(models_body, model)
    if max_len is None:
        raise ConfigError(
            f"{endpoint}/v1/models reports no max_model_len for {model!r}: the matrix cannot "
            "be scaled to this server (vLLM reports it)"
        )
    if metrics is None or metrics[0] != 200:
        why = "did not answer" if metrics is None else f"answered HTTP {metrics[0]}"
        raise ConfigError(
            f"{endpoint}/metrics {why}: kvlab stress --endpoint needs the server's KV "
            "metrics (vLLM's /metrics)"
        )
    samples = m.parse_prometheus(metrics[1])
    prof = m.detect_profile(samples)
    info = m.cache_config_info(samples, prof) if prof is not None else {}
    try:
        block_size = int(info["block_size"])
        num_blocks = int(info["num_gpu_blocks"])
    except (KeyError, ValueError):
        raise ConfigError(
            f"{endpoint}/metrics has no cache_config_info with block_size and num_gpu_blocks "
            "(vLLM's vllm:cache_config_info): the KV cache size is unknown"
        ) from None
    if block_size < 1 or num_blocks < 2:
        raise ConfigError(
            f"{endpoint}/metrics cache_config_info: block_size {block_size}, num_gpu_blocks "
            f"{num_blocks}: no usable KV block"
        )
    return ServerLimits(
        endpoint=endpoint,
        model=model,
        max_model_len=max_len,
        block_size=block_size,
        num_gpu_blocks=num_blocks,
        enable_prefix_caching=info.get("enable_prefix_caching", "True") != "False",
        kind=prof.name if prof is not None else "openai",
        cache_config=dict(info),
    )


def probe_limits(
    endpoint: str, model: str | None = None, *, api_key: str | None = None, transport: Any = None
) -> ServerLimits:
    """The limits of the server at ``endpoint`` (see :func:`limits_from`);
    BackendUnavailable when it cannot be reached."""
    from kvlab.backends.transport import HttpTransport

    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
    base = endpoint.rstrip("/")
    base = base[:-3] if base.endswith("/v1") else base

    async def ask() -> ServerLimits:
        t = transport or HttpTransport(
            base, headers={"Authorization": f"Bearer {api_key}"} if api_key else {}
        )
        try:
            try:
                models = await t.request("GET", "/v1/models", timeout_s=10)
            except (TimeoutError, OSError) as e:
                raise BackendUnavailable(
                    f"cannot reach {base} ({type(e).__name__}): start the server or fix --endpoint"
                ) from None
            try:
                got = await t.request("GET", "/metrics", timeout_s=10)
                metrics: tuple[int, str] | None = (got.status, got.text)
            except (TimeoutError, OSError):
                metrics = None
            return limits_from(base, models.status, models.body, metrics, model)
        finally:
            if transport is None:
                await t.aclose()

    return asyncio.run(ask())


# ------------------------------------------------------------------ scaling


@dataclass(frozen=True)
class Scaled:
    """A scenario and what it became on the server (``scenario`` None when it cannot run
    there: ``reason`` says why). ``line`` is the one-line account of the change."""

    original: Scenario
    scenario: Scenario | None
    line: str
    reason: str | None = None
    context_fraction: float | None = None
    kv_fraction: float | None = None
    kv_fraction_scaled: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "reason": self.reason,
            "context_fraction": self.context_fraction,
            "kv_fraction": self.kv_fraction,
            "kv_fraction_scaled": self.kv_fraction_scaled,
        }


def check_scalable(limits: ServerLimits) -> None:
    """ConfigError when no scenario can be scaled to ``limits`` at all."""
    if limits.max_model_len < MIN_PROMPT_TOKENS + 1:
        raise ConfigError(
            f"the server's max_model_len {limits.max_model_len} is smaller than the shortest "
            f"prompt kvlab sends ({MIN_PROMPT_TOKENS} tokens) plus one output token: the "
            "matrix cannot be scaled to it"
        )


def scale_scenario(
    s: Scenario,
    limits: ServerLimits,
    *,
    context_tokens: int,
    kv_blocks: int,
    block_size: int,
    max_num_seqs: int | None = None,
) -> Scaled:
    """``s`` scaled to ``limits`` by :data:`SCALING_RULE`; ``context_tokens``,
    ``kv_blocks`` (usable) and ``block_size`` are the original's (kvlab plan)."""
    if context_tokens < 1 or kv_blocks < 1 or block_size < 1:
        raise ValueError("the original context, blocks and block size must be >= 1")
    ls, bs = limits.max_model_len, limits.block_size
    f = ls / context_tokens
    beyond = s.seq_len >= context_tokens
    notes: list[str] = []
    seq = max(MIN_PROMPT_TOKENS, round(s.seq_len * f))
    if seq > round(s.seq_len * f):
        notes.append(f"prompt raised to the {MIN_PROMPT_TOKENS}-token floor")
    gen = max(1, round(s.gen_len * f))
    if beyond:
        seq = max(seq, ls)
        notes.append("prompt beyond the context: rejected here as on the original")
    elif seq >= ls:
        seq = ls - 1
    if not beyond and seq + gen > ls:
        gen = ls - seq
        notes.append("generation capped to fit the context")
    full_o = min(s.seq_len + s.gen_len, context_tokens)
    n = s.batch * s.concurrency
    d = n * math.ceil(full_o / block_size) / kv_blocks
    per_seq = math.ceil(min(seq + gen, ls) / bs)
    n2 = max(1, round(d * limits.usable_blocks / per_seq))
    n2 = min(n2, max(1, MAX_SCENARIO_REQUESTS // s.rounds))
    if s.concurrency == 1:
        batch, conc = n2, 1
    elif s.batch == 1:
        batch, conc = 1, n2
    else:  # both scaled by sqrt(n2 / n): the batch:concurrency proportion is kept
        conc = max(1, round(s.concurrency * math.sqrt(n2 / n)))
        batch = max(1, round(n2 / conc))
    d2 = batch * conc * per_seq / limits.usable_blocks
    scaled = s.with_changes(
        batch=batch,
        concurrency=conc,
        seq_len=seq,
        gen_len=gen,
        max_model_len=ls,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=None,
        kv_dtype=None,
        tp=1,
        offload_gb=None,
        enable_prefix_caching=limits.enable_prefix_caching,
        claimed={},
    )
    line = (
        f"{s.name}: {s.batch}x{s.concurrency} x ({s.seq_len:,}+{s.gen_len:,}) of a "
        f"{context_tokens:,}-token context and {kv_blocks:,} blocks of {block_size} -> "
        f"{batch}x{conc} x ({seq:,}+{gen:,}) of {ls:,} and {limits.usable_blocks:,} blocks of "
        f"{bs}: prompt {s.seq_len / context_tokens:.1%} of the context (now {seq / ls:.1%}), "
        f"KV demand {d:.1%} of the cache (now {d2:.1%})"
        + (f"; {'; '.join(notes)}" if notes else "")
    )
    return Scaled(s, scaled, line, None, s.seq_len / context_tokens, d, d2)


def scale_matrix(
    matrix: Matrix, limits: ServerLimits, *, max_num_seqs: int | None = None
) -> list[Scaled]:
    """Every scenario of ``matrix`` scaled to ``limits``; one that vLLM would not start
    on its own GPU (kvlab plan) has no KV fraction to keep: not scaled, with the reason."""
    from kvlab.models.catalog import get_model
    from kvlab.stress.evaluate import plan_for

    check_scalable(limits)
    out: list[Scaled] = []
    for s in matrix.scenarios:
        try:
            p = plan_for(s)
        except ConfigError as e:
            out.append(Scaled(s, None, f"{s.name}: not scaled: plan: {e}", f"plan: {e}"))
            continue
        if not p.vllm_starts or p.num_gpu_blocks < 2:
            why = "; ".join(p.reasons) or "no KV block fits"
            reason = (
                f"not scaled: on {s.gpu} vLLM would not start (plan: {why}), so the scenario "
                "has no KV fraction to keep"
            )
            out.append(Scaled(s, None, f"{s.name}: {reason}", reason))
            continue
        ctx = s.max_model_len or get_model(s.model).max_context
        out.append(
            scale_scenario(
                s,
                limits,
                context_tokens=ctx,
                kv_blocks=p.num_gpu_blocks - 1,
                block_size=p.block_size,
                max_num_seqs=max_num_seqs,
            )
        )
    return out


# ------------------------------------------------------------------ one scenario


@dataclass(frozen=True)
class LiveTarget:
    """How to drive the server: its limits, client settings and the simulator's side."""

    limits: ServerLimits
    api_key: str | None = None
    metrics_interval_s: float = 0.1
    cache_mode: str = "cold"
    timeout_s: float = 600.0
    max_num_seqs: int | None = None
    sim_model: str | None = None
    cost_model: Any = None
    calibration: str | None = None


def real_figures(summary: dict[str, Any], timeseries: dict[str, Any]) -> dict[str, Any]:
    """The compared figures of a replay's summary (measured), plus the server's own
    /metrics over the scenario: KV usage max and mean, preemption and prefix-cache
    counter deltas, waiting requests max and mean, and the number of samples."""
    waiting = [
        v for v in timeseries.get("num_requests_waiting", []) if isinstance(v, float | int)
        and not math.isnan(v)
    ]  # fmt: skip
    n_samples = len(timeseries.get("t_s", []))
    return {
        **_latency(summary),
        "num_requests": summary.get("num_requests"),
        "num_completed": summary.get("num_completed"),
        "num_failed": summary.get("num_failed"),
        "num_rejected": summary.get("num_rejected"),
        "num_unfinished": summary.get("num_unfinished"),
        "kv_peak_usage": summary.get("kv_cache_usage_perc_max"),
        "kv_mean_usage": summary.get("kv_cache_usage_perc_mean"),
        "num_preemptions": summary.get("num_preemptions"),
        "prefix_cache_queries": summary.get("prefix_cache_queries"),
        "prefix_cache_hits": summary.get("prefix_cache_hits"),
        "prefix_cache_hit_rate": summary.get("prefix_cache_hit_rate"),
        "num_waiting_max": max(waiting) if waiting else None,
        "num_waiting_mean": math.fsum(waiting) / len(waiting) if waiting else None,
        "num_metrics_samples": n_samples,
        "errors_by_kind": summary.get("errors_by_kind") or {},
    }


def sim_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The compared figures of a simulated run's summary."""
    return {
        **_latency(summary),
        "num_requests": summary.get("num_requests"),
        "num_completed": summary.get("num_completed"),
        "num_rejected": summary.get("num_rejected"),
        "kv_peak_usage": summary.get("kv_cache_usage_perc_max"),
        "kv_mean_usage": summary.get("kv_cache_usage_perc_mean"),
        "num_preemptions": summary.get("num_preemptions"),
        "prefix_cache_queries": summary.get("prefix_cache_queries"),
        "prefix_cache_hits": summary.get("prefix_cache_hits"),
        "prefix_cache_hit_rate": summary.get("prefix_cache_hit_rate"),
        "num_evicted_blocks": summary.get("num_evicted_blocks"),
    }


def _latency(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stem in ("ttft", "tpot", "e2e"):
        d = summary.get(f"{stem}_s") or {}
        out[f"{stem}_p50_s"] = d.get("p50")
        out[f"{stem}_p99_s"] = d.get("p99")
    out["output_throughput_tok_per_s"] = summary.get("output_throughput_tok_per_s")
    out["request_throughput_per_s"] = summary.get("request_throughput_per_s")
    return out


def judge(summary: dict[str, Any], slo: Slo) -> tuple[str, list[str]]:
    """(verdict, reasons) of a run's summary against ``slo``."""
    bad, warn = slo.check(summary)
    if bad:
        return "fail", bad
    if warn:
        return "warn", warn
    return "pass", ["meets every SLO"]


@dataclass
class LiveScenario:
    """One scenario's live result: what it became, the real and simulated figures and
    verdicts. ``status``: ``ran``, ``not_scaled`` (cannot run on this server) or
    ``failed`` (the server could not be used: ``reason``)."""

    scaled: Scaled
    status: str
    verdict: str
    reasons: list[str]
    real: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    sim_verdict: str | None = None
    sim_reasons: list[str] = field(default_factory=list)
    run_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        sc = self.scaled.scenario
        return {
            "name": self.scaled.original.name,
            "status": self.status,
            "original": self.scaled.original.to_dict(),
            "scaled": None if sc is None else sc.to_dict(),
            "scaling": self.scaled.to_dict(),
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "real": self.real,
            "sim": self.sim,
            "sim_verdict": self.sim_verdict,
            "sim_reasons": list(self.sim_reasons),
            "run_dir": self.run_dir,
        }


def _failed(sc: Scaled, status: str, reason: str) -> LiveScenario:
    return LiveScenario(sc, status, "fail", [reason])


class ServerDown(Exception):
    """The server could not be used for a scenario; the rest are not tried."""


def run_real(sc: Scaled, target: LiveTarget) -> Any:
    """The replay of ``sc``'s workload against the server (``RunResult``): requests
    sent at the scenario's arrival times, the server's /metrics sampled meanwhile.
    Raises ServerDown when the server cannot be reached."""
    from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
    from kvlab.stress.scenario import build_workload

    assert sc.scenario is not None
    lim = target.limits
    cfg = OpenAIConfig(
        endpoint=lim.endpoint,
        model=lim.model,
        mode="trace",
        metrics_interval_s=target.metrics_interval_s,
        cache_mode=target.cache_mode,
        timeout_s=target.timeout_s,
        read_timeout_s=min(target.timeout_s, 300.0),
        max_model_len=lim.max_model_len,
        too_long="skip",
        api_key=target.api_key,
    )
    try:
        return OpenAIBackend(cfg).run(build_workload(sc.scenario))
    except BackendUnavailable as e:
        raise ServerDown(str(e)) from None


def run_sim(sc: Scaled, target: LiveTarget) -> Any:
    """The simulation of ``sc`` with the server's block size, block count, context and
    prefix caching (``RunResult``)."""
    from kvlab.sim.config import SimConfig
    from kvlab.sim.engine import simulate
    from kvlab.stress.scenario import build_workload

    s = sc.scenario
    assert s is not None
    lim = target.limits
    cfg = SimConfig(
        model=target.sim_model or s.model,
        gpu=s.gpu,
        block_size=lim.block_size,
        num_blocks=lim.num_gpu_blocks,
        max_model_len=lim.max_model_len,
        max_num_seqs=target.max_num_seqs,
        enable_prefix_caching=lim.enable_prefix_caching,
        seed=s.seed,
        cost_model=target.cost_model,
    )
    return simulate(build_workload(s), cfg)


def live_scenario(
    sc: Scaled, target: LiveTarget, slo: Slo, *, run_dir: Path | None = None
) -> tuple[LiveScenario, bool]:
    """Run one scaled scenario for real and in the simulator; (result, interrupted).

    An interrupted replay (Ctrl-C) is not a result: (a failed placeholder, True)."""
    if sc.scenario is None:
        return _failed(sc, "not_scaled", sc.reason or "not scaled"), False
    real = run_real(sc, target)
    if real.status == "interrupted" or real.summary.get("stopped") == "interrupted":
        return _failed(sc, "failed", "interrupted"), True
    if run_dir is not None:
        real.save(run_dir / "real")
    verdict, reasons = judge(real.summary, slo)
    out = LiveScenario(
        sc, "ran", verdict, reasons, real_figures(real.summary, dict(real.timeseries))
    )
    errors = out.real.get("errors_by_kind") or {}
    if errors:
        out.reasons.append("errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    try:
        sim = run_sim(sc, target)
    except (CapacityError, ConfigError) as e:
        out.sim_verdict = "fail"
        out.sim_reasons = [f"simulator: {e}"]
    else:
        if run_dir is not None:
            sim.save(run_dir / "sim")
        out.sim = sim_figures(sim.summary)
        out.sim_verdict, out.sim_reasons = judge(sim.summary, slo)
    out.run_dir = None if run_dir is None else str(run_dir)
    return out, False


# ------------------------------------------------------------------ the matrix


@dataclass
class LiveResult:
    """A live stress run; ``to_dict()`` is its ``stress.json``."""

    matrix: Matrix
    target: LiveTarget
    scenarios: list[LiveScenario] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    interrupted: bool = False
    server_down: str | None = None
    wall_s: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in ("pass", "warn", "fail")}
        for r in self.scenarios:
            out[r.verdict] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        from kvlab import __version__

        t = self.target
        return {
            "kind": "stress",
            "mode": "live",
            "kvlab_version": __version__,
            "matrix": self.matrix.source,
            "slo": self.matrix.slo.to_dict(),
            "interrupted": self.interrupted,
            "num_sim_runs": sum(1 for r in self.scenarios if r.sim),
            "verdicts": self.counts(),
            "errors": [] if self.server_down is None else [self.server_down],
            "scenarios": [],
            "ranges": [],
            "curves": [],
            "whatifs": [],
            "presets": [],
            "live": {
                "server": t.limits.to_dict(),
                "max_num_seqs": t.max_num_seqs,
                "cache_mode": t.cache_mode,
                "metrics_interval_s": t.metrics_interval_s,
                "sim_model": t.sim_model,
                "calibration": t.calibration,
                "scaling_rule": SCALING_RULE,
                "latency_note": LATENCY_NOTE
                if t.calibration is None
                else f"simulated latencies use the clock fitted in {t.calibration}",
                "server_down": self.server_down,
                "not_run": list(self.not_run),
                "scenarios": [r.to_dict() for r in self.scenarios],
            },
        }


def slug(i: int, name: str) -> str:
    return f"{i + 1:02d}-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "scenario")


def run_live(
    matrix: Matrix,
    target: LiveTarget,
    *,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    save_runs: bool = True,
) -> LiveResult:
    """Every scenario of ``matrix``, scaled to ``target``'s server, replayed and simulated.

    A server that cannot be reached marks that scenario and the rest failed with the
    reason (``server_down``). Ctrl-C stops: finished scenarios are kept, the rest listed
    in ``not_run``, ``interrupted`` set. Writes ``stress.json``/``stress.md`` to ``out``."""
    say = progress or (lambda _msg: None)
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    res = LiveResult(matrix, target)
    t0 = time.perf_counter()
    scaled = scale_matrix(matrix, target.limits, max_num_seqs=target.max_num_seqs)
    n = len(scaled)
    for sc in scaled:
        say(f"scaled {sc.line}")
    i = 0
    try:
        while i < n:
            sc = scaled[i]
            name = sc.original.name
            if res.server_down is not None:
                res.scenarios.append(_failed(sc, "failed", res.server_down))
                say(f"live {i + 1}/{n} {name}: FAIL ({res.server_down})")
                i += 1
                continue
            rd = None
            if out_dir is not None and save_runs and sc.scenario is not None:
                rd = out_dir / "scenarios" / slug(i, name)
            num = 0 if sc.scenario is None else sc.scenario.num_requests
            say(f"live {i + 1}/{n} {name}: {num} requests")
            try:
                r, stopped = live_scenario(sc, target, matrix.slo, run_dir=rd)
            except ServerDown as e:
                res.server_down = f"server unreachable from scenario {i + 1} on: {e}"
                continue  # this scenario is marked failed by the branch above
            if stopped:
                raise KeyboardInterrupt
            res.scenarios.append(r)
            sim = f"; sim {r.sim_verdict.upper()}" if r.sim_verdict else ""
            say(f"live {i + 1}/{n} {name}: real {r.verdict.upper()} ({r.reasons[0]}){sim}")
            i += 1
    except KeyboardInterrupt:
        res.interrupted = True
        res.not_run = [s.original.name for s in scaled[len(res.scenarios) :]]
        say("interrupted: no new scenario started; keeping the finished ones")
    res.wall_s = time.perf_counter() - t0
    if out_dir is not None:
        write(res, out_dir)
    return res


def write(res: LiveResult, out: Path) -> None:
    import json

    from kvlab.results import atomic_write_text
    from kvlab.stress.render import markdown

    d = res.to_dict()
    atomic_write_text(out / "stress.json", json.dumps(d, indent=1) + "\n")
    atomic_write_text(out / "stress.md", markdown(d))
    atomic_write_text(
        out / "stress_timing.json", json.dumps({"mode": "live", "wall_s": res.wall_s}) + "\n"
    )
