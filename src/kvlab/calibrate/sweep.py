"""The designed calibration sweep: workloads whose step times pin each coefficient down.

A fit can only tell terms apart that the observations vary independently. Replayed
traffic of one shape does not: prompts of one length make the per-token cost
indistinguishable from the fixed overheads, and a steady rate gives one batch size.
The sweep (:func:`design`) therefore has two parts:

* **lone**: one request at a time (a session whose turns each wait for the previous
  answer), prompt lengths spread from ``prompt_lengths[0]`` to ``prompt_lengths[-1]``:
  each time to first token is one prefill step of a known size plus the request
  overhead (the prefill observations), and its decode steps are batch-1 steps.
* **bursts**: ``B`` requests sent together for each batch size ``B`` and each prompt
  length of ``burst_prompt_lengths`` (one replay each, so bursts never overlap): after
  their prefills they decode together, so the decode gaps have batch ``B`` at a context
  set by the prompt length (batch size and KV read vary independently). The whole set
  is repeated ``repeats`` times, round by round, so that a stretch of time when the
  machine is busy with something else slows one copy of a part, which the robust fit
  then weighs down, not every copy.

A warm-up part goes first and is not kept: ``warmup_batch`` short requests sent
together whose outputs are 1 to ``warmup_batch`` tokens long, so that the server runs a
decode step of every batch size up to ``warmup_batch`` once (vLLM's CPU build, measured:
the first replay of 24 concurrent chat requests decoded at 4.5-6.2 ms a step, its
repeats at 2.9-3.2 ms: the first step of each new batch size is slow; a GPU build
captures its CUDA graphs at start-up for the same reason).
Every request has content of its own (no prefix-cache hits), and every repeat of a
part shortens its prompts by :data:`REPEAT_SHIFT` tokens a round (:func:`fresh_length`):
a server may keep per-shape state (vLLM's CPU build, measured: a lone prefill of a
token count it has not run before costs about 2 ms more, 11.5 against 9.6 ms at about
100 tokens, 15.0 against 12.4 ms at about 300, medians of 40), and real traffic
seldom repeats a step's token count, so a sweep of repeated lengths would measure a
faster server than the traffic it is fitted for. :func:`run_sweep` replays
the parts against an OpenAI-compatible endpoint one after another and, where the server
is vLLM, reads its own timing histograms (``vllm:request_prefill_time_seconds``,
``vllm:request_time_per_output_token_seconds``, ...) before and after each part
(:data:`VLLM_TIMINGS`), so a fit can be checked against the engine's own clock
(:func:`kvlab.calibrate.check.server_check`).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: kvlab key -> vLLM histogram samples whose deltas a sweep part records (sums in s)
VLLM_TIMINGS = {
    "prefill_sum_s": "vllm:request_prefill_time_seconds_sum",
    "prefill_count": "vllm:request_prefill_time_seconds_count",
    "decode_sum_s": "vllm:request_decode_time_seconds_sum",
    "decode_count": "vllm:request_decode_time_seconds_count",
    "tpot_sum_s": "vllm:request_time_per_output_token_seconds_sum",
    "tpot_count": "vllm:request_time_per_output_token_seconds_count",
    "queue_sum_s": "vllm:request_queue_time_seconds_sum",
    "queue_count": "vllm:request_queue_time_seconds_count",
    "ttft_sum_s": "vllm:time_to_first_token_seconds_sum",
    "ttft_count": "vllm:time_to_first_token_seconds_count",
    "iterations": "vllm:iteration_tokens_total_count",
    "iteration_tokens": "vllm:iteration_tokens_total_sum",
}
#: the file a sweep part's vLLM timing deltas are saved in, next to its run
TIMINGS_FILE = "server_timings.json"
#: the part replayed first and not kept
WARMUP = "warmup"
#: the prompt of each warm-up request
WARMUP_PROMPT_TOKENS = 16
#: tokens a prompt of the sweep is shortened by in each repeat after the first
REPEAT_SHIFT = 3


def fresh_length(tokens: int, repeat: int) -> int:
    """The prompt length of a part's ``repeat``-th copy (0: ``tokens``): never one an
    earlier copy ran (see the module docstring), at least 1."""
    return max(1, tokens - REPEAT_SHIFT * repeat)


@dataclass(frozen=True)
class SweepDesign:
    """The sweep's sizes (see the module docstring); every length is in tokens."""

    prompt_lengths: tuple[int, ...] = (32, 96, 192, 320, 480, 672, 896)
    repeats: int = 3
    lone_output_tokens: int = 12
    lone_think_s: float = 0.2
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    burst_prompt_lengths: tuple[int, ...] = (48, 400)
    burst_output_tokens: int = 40
    warmup_batch: int = 64

    def fitted_to(self, max_model_len: int) -> SweepDesign:
        """The design with every prompt plus output kept under ``max_model_len``."""
        cap = max_model_len - max(self.lone_output_tokens, self.burst_output_tokens) - 8
        if cap < 16:
            from kvlab.errors import ConfigError

            raise ConfigError(f"max_model_len {max_model_len} is too small for a sweep")

        def fit(xs: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(sorted({min(x, cap) for x in xs}))

        return SweepDesign(
            fit(self.prompt_lengths),
            self.repeats,
            self.lone_output_tokens,
            self.lone_think_s,
            self.batch_sizes,
            fit(self.burst_prompt_lengths),
            self.burst_output_tokens,
            min(self.warmup_batch, max(1, max_model_len - WARMUP_PROMPT_TOKENS - 8)),
        )


#: the small sweep (``--quick``; the CI test): 8 lone requests, bursts of 1, 4 and 16 twice
QUICK = SweepDesign(
    prompt_lengths=(32, 192, 480, 896),
    repeats=2,
    batch_sizes=(1, 4, 16),
    burst_prompt_lengths=(48, 320),
)


def warmup(batch: int = SweepDesign.warmup_batch) -> Any:
    """The warm-up workload (module docstring): ``batch`` requests of 16 prompt tokens
    (:data:`WARMUP_PROMPT_TOKENS`) sent together, request ``j`` asking ``j + 1`` output
    tokens, so the decode batch shrinks one at a time from ``batch`` to 1. Replay it on
    a fresh server before measuring it."""
    from kvlab.workload.records import Request, Segment, Workload

    reqs = tuple(
        Request(
            f"warmup-{j}",
            (Segment("user", WARMUP_PROMPT_TOKENS, f"calib-warmup-{j}"),),
            j + 1,
            arrival_s=0.0,
        )
        for j in range(max(1, batch))
    )
    return Workload(reqs, name="calibration-warmup", meta={"part": "warmup"})


def design(spec: SweepDesign = SweepDesign()) -> dict[str, Any]:
    """name -> workload of each sweep part, in the order to replay them."""
    from kvlab.workload.records import Request, Segment, Workload

    out: dict[str, Any] = {WARMUP: warmup(spec.warmup_batch)}
    lone = []
    lengths = [fresh_length(n, k) for k in range(spec.repeats) for n in spec.prompt_lengths]
    for i, n in enumerate(lengths):
        lone.append(
            Request(
                f"lone-{i:03d}-{n}",
                (Segment("user", n, f"calib-lone-{i}"),),
                spec.lone_output_tokens,
                arrival_s=0.0 if i == 0 else None,
                think_time_s=None if i == 0 else spec.lone_think_s,
                session_id="lone",
                turn=i,
            )
        )
    out["lone"] = Workload(tuple(lone), name="calibration-lone", meta={"part": "lone"})
    for k in range(spec.repeats):
        for n, b in ((n, b) for n in spec.burst_prompt_lengths for b in spec.batch_sizes):
            name = f"burst-{b}x{n}" + (f"-{k + 1}" if k else "")
            reqs = tuple(
                Request(
                    f"{name}-{j}",
                    (Segment("user", fresh_length(n, k), f"calib-{name}-{j}"),),
                    spec.burst_output_tokens,
                    arrival_s=0.0,
                )
                for j in range(b)
            )
            out[name] = Workload(reqs, name=f"calibration-{name}", meta={"part": "burst"})
    return out


def read_timings(endpoint: str, timeout_s: float = 10.0) -> dict[str, float] | None:
    """vLLM's timing histograms (:data:`VLLM_TIMINGS`) now; None when ``/metrics`` does
    not answer or has none of them (not vLLM)."""
    from kvlab.backends.metrics import parse_prometheus, sample_sum

    url = endpoint.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    samples = parse_prometheus(text)
    out = {}
    for key, name in VLLM_TIMINGS.items():
        v = sample_sum(samples, name)
        if v is not None:
            out[key] = v
    return out or None


def served_model(endpoint: str, timeout_s: float = 10.0) -> tuple[str, int | None]:
    """The first model ``endpoint`` serves (``/v1/models``) and its ``max_model_len``
    when the server reports one; BackendUnavailable when it does not answer."""
    from kvlab.backends.openai import served_max_model_len
    from kvlab.errors import BackendUnavailable

    url = endpoint.rstrip("/").removesuffix("/v1") + "/v1/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read()
        data = json.loads(body).get("data")
        name = str(data[0]["id"])
    except (OSError, ValueError, AttributeError, LookupError, TypeError) as e:
        raise BackendUnavailable(
            f"cannot list the models of {endpoint} ({type(e).__name__}): start the server "
            "or fix --endpoint"
        ) from None
    return name, served_max_model_len(body, name)


def run_sweep(
    endpoint: str,
    model: str,
    out_dir: Path,
    spec: SweepDesign = SweepDesign(),
    *,
    progress: Callable[[str], None] = lambda m: print(m, flush=True),
    api_key: str | None = None,
    token_ids: bool = False,
) -> list[Path]:
    """Replay the sweep's parts against ``endpoint`` (served model name ``model``), one
    after another, saving each run (and the server's timing deltas, when it has them)
    under ``out_dir``; the run directories, in order. A part already saved there is
    kept (an interrupted sweep resumes). ``token_ids``: every request asks for token
    ids, as ``--history server`` replays do (see
    :class:`~kvlab.backends.openai.OpenAIConfig`)."""
    from kvlab.backends.openai import OpenAIBackend, OpenAIConfig

    parts = design(spec)
    dirs = [out_dir / name for name in parts if name != WARMUP]
    todo = [
        name for name in parts if name != WARMUP and not (out_dir / name / "summary.json").exists()
    ]
    if len(todo) < len(dirs):
        progress(f"{len(dirs) - len(todo)} of {len(dirs)} parts kept from {out_dir}")
    if not todo:
        return dirs

    def config() -> Any:
        return OpenAIConfig(
            endpoint=endpoint,
            model=model,
            cache_mode="cold",
            metrics_interval_s=0,
            api_key=api_key,
            token_ids=token_ids,
        )

    warm = parts[WARMUP]
    progress(f"warm-up: {len(warm.requests)} requests, every decode batch size once (not kept)")
    OpenAIBackend(config()).run(warm)  # not kept: a server's first steps are slow
    for i, name in enumerate(todo, 1):
        d = out_dir / name
        before = read_timings(endpoint)
        run = OpenAIBackend(config()).run(parts[name])
        after = read_timings(endpoint)
        run.save(d)
        if before and after:
            delta = {k: after[k] - before[k] for k in after if k in before}
            (d / TIMINGS_FILE).write_text(json.dumps(delta, indent=2) + "\n")
        done = sum(r.finish_s is not None for r in run.records)
        progress(f"[{i}/{len(todo)}] {name}: {done}/{len(run.records)} requests")
    return dirs


def load_timings(run_dir: Path) -> dict[str, float] | None:
    """The server timing deltas saved with a sweep part, if any."""
    p = Path(run_dir) / TIMINGS_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float)}


__all__ = [
    "QUICK",
    "TIMINGS_FILE",
    "VLLM_TIMINGS",
    "SweepDesign",
    "design",
    "load_timings",
    "read_timings",
    "run_sweep",
    "served_model",
    "warmup",
]
