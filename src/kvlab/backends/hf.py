"""transformers in-process backend: a real, continuously refilled batched generate loop.

Requests genuinely share batches. The loop keeps one left-padded batch whose
KV lives in a single transformers ``DynamicCache`` (tensors
``[batch, kv_heads, columns, head_dim]`` per layer). Each iteration:

1. admit: requests that have arrived join, up to ``max_batch_size`` running;
   they are prefilled together (one left-padded forward) and their KV is
   merged into the running batch (both sides left-padded to the longer one);
2. decode: one forward over every running request, one token each;
3. retire: finished rows leave the batch and columns that are padding in
   every remaining row are cut.

Decoding is greedy and ignores EOS, so each request produces exactly its
``max_new_tokens`` (the tiny model's weights are random).

Measured per step (the ``timeseries`` of the result): the bytes of the cache
tensors (``numel * element_size`` summed over layers, K and V), the formula
bytes of the real tokens in the cache (``kvlab.models.spec.kv_bytes_per_token``
times tokens), their difference (padding waste), batch size, queue length and
process RSS. Summary counters: prefill vs decode time, peak KV bytes, peak
padding, peak RSS, and whether the cache bytes ever differed from the formula
for the allocated shape (``rows * columns * bytes_per_token``).

Accelerator memory (``HfConfig.device``): on a CUDA device the model, its inputs and
its cache live there, and after every step (prefill or decode) the backend reads
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` and resets the peak
(``reset_peak_memory_stats``), so each step's peak is its own; a request's peak is the
largest step peak while it was in the batch (with one request at a time: its own peak,
reset between requests). They go into the time series (``device_allocated_peak_bytes``,
``device_reserved_peak_bytes``) and into ``run.json``'s ``provenance["device_memory"]``:
the device, whether it was measured and why not, the run's peaks and the peak of each
request by id (``by_request``; the records' fields are shared with every backend and the
summary's keys with the simulator, so the per-request figures stay with the hf run's
provenance). On the CPU nothing is measured: the peaks are None and the note says why.

Timing: ``torch.set_num_threads(num_threads)`` for the run (restored after);
times are ``time.perf_counter`` seconds from the start of the run; TTFT is the
end of the prefill forward that produced a request's first token minus its
arrival.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kvlab.backends.base import build_result
from kvlab.errors import ConfigError, DependencyMissing
from kvlab.results import STATUS_OK, RequestRecord, RunResult
from kvlab.workload.records import Workload

#: Ids below this are the tiny model's special tokens; synthetic and workload
#: prompts avoid them.
FIRST_TEXT_TOKEN_ID = 6

_DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,3})?")

#: ``provenance["device_memory"]["note"]`` of a run on the CPU.
CPU_MEMORY_NOTE = (
    "not measured: the model ran on the CPU (torch.cuda peak-memory counters exist only "
    "on a CUDA device; process RSS is in peak_rss_bytes)"
)
#: ``provenance["device_memory"]["note"]`` of a run on a CUDA device.
CUDA_MEMORY_NOTE = (
    "measured: torch.cuda.max_memory_allocated/max_memory_reserved, reset after every "
    "step; a request's peak is the largest step peak while it was in the batch"
)


@dataclass(frozen=True, slots=True)
class GenRequest:
    """One generation request: prompt token ids, exact output length, arrival time.

    ``after`` names a request of the same session this one waits for; it then
    arrives ``think_time_s`` after that one finished (closed loop).
    """

    request_id: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    arrival_s: float = 0.0
    cls: str | None = None
    session_id: str | None = None
    after: str | None = None
    think_time_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ConfigError(f"request {self.request_id}: the prompt needs at least one token")
        if self.max_new_tokens < 1:
            raise ConfigError(f"request {self.request_id}: max_new_tokens must be >= 1")


@dataclass(frozen=True, slots=True)
class HfConfig:
    """Settings of one in-process run."""

    model_dir: str
    max_batch_size: int = 8
    num_threads: int = 1
    dtype: str = "bfloat16"
    #: ``cpu``, ``cuda`` or ``cuda:N``: where the model, its inputs and its cache live.
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ConfigError(f"dtype must be bfloat16, float16 or float32, got {self.dtype!r}")


def synthetic_requests(
    num_requests: int,
    prompt_tokens: int | Sequence[int],
    output_tokens: int | Sequence[int],
    vocab_size: int,
    rng: np.random.Generator,
    *,
    arrival_s: float | Sequence[float] = 0.0,
    cls: str | None = None,
    prefix: str = "r",
    shared_prefix_tokens: int = 0,
) -> list[GenRequest]:
    """Requests with random prompt ids (from ``rng``), all arriving at ``arrival_s``.

    Scalars apply to every request; sequences give one value per request.
    ``shared_prefix_tokens`` leading tokens are identical across requests.
    """

    def pick(v: Any, i: int) -> Any:
        return v[i] if isinstance(v, Sequence) else v

    shared = rng.integers(FIRST_TEXT_TOKEN_ID, vocab_size, size=shared_prefix_tokens)
    out = []
    for i in range(num_requests):
        n = int(pick(prompt_tokens, i))
        own = rng.integers(FIRST_TEXT_TOKEN_ID, vocab_size, size=max(0, n - shared_prefix_tokens))
        ids = np.concatenate([shared[:n], own])
        out.append(
            GenRequest(
                request_id=f"{prefix}{i}",
                prompt_ids=tuple(int(x) for x in ids),
                max_new_tokens=int(pick(output_tokens, i)),
                arrival_s=float(pick(arrival_s, i)),
                cls=cls,
            )
        )
    return out


def requests_from_workload(
    workload: Workload, vocab_size: int, tokenizer: Any | None = None
) -> list[GenRequest]:
    """GenRequests of a :class:`kvlab.workload.records.Workload`.

    With a ``tokenizer`` the prompt is the workload's text
    (``kvlab.workload.content.text`` of each segment, what a live server is
    sent) encoded without special tokens: exactly the file's token counts on
    the kvlab tiny model. Without one, the content's word indices
    (``kvlab.workload.content.token_ids``) are folded into the model's
    non-special ids. Closed-loop turns (``think_time_s``) wait for the
    previous turn of their session.
    """
    from kvlab.workload import content

    span = vocab_size - FIRST_TEXT_TOKEN_ID
    last_of_session: dict[str, str] = {}
    out = []
    for r in workload.requests:
        ids: list[int] = []
        for seg in r.segments:
            if tokenizer is not None:
                text = content.text(seg.content_id, seg.tokens)
                ids.extend(tokenizer.encode(text, add_special_tokens=False))
            else:
                raw = content.token_ids(seg.content_id, seg.tokens)
                ids.extend(FIRST_TEXT_TOKEN_ID + int(x) % span for x in raw)
        after = None
        if r.think_time_s is not None and r.session_id is not None:
            after = last_of_session.get(r.session_id)
        out.append(
            GenRequest(
                request_id=r.request_id,
                prompt_ids=tuple(ids),
                max_new_tokens=r.output_tokens,
                arrival_s=r.arrival_s or 0.0,
                cls=r.cls,
                session_id=r.session_id,
                after=after,
                think_time_s=r.think_time_s or 0.0,
            )
        )
        if r.session_id is not None:
            last_of_session[r.session_id] = r.request_id
    return out


def kv_bytes_per_token_formula(model_dir: str | Path, dtype: str) -> float:
    """Formula KV bytes per token (all layers, K and V) from the model's config.json."""
    from kvlab.models import get_model, kv_bytes_per_token

    return float(kv_bytes_per_token(get_model(str(model_dir)), kv_dtype=dtype))


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux /proc), else the peak so far
    (``resource``, Unix), else None (Windows has neither)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    """Peak memory of one CUDA device per step, through ``torch.cuda``.

    Invariant: after :meth:`start` and after every :meth:`step_peaks`, the device's
    peak counters are reset, so the next reading covers only what happened since."""

    torch: Any
    device: str

    def start(self) -> None:
        """Reset the peak counters before the first step."""
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def step_peaks(self) -> tuple[int, int]:
        """(allocated, reserved) peak bytes since the last reset; then reset."""
        cuda = self.torch.cuda
        cuda.synchronize(self.device)
        allocated = int(cuda.max_memory_allocated(self.device))
        reserved = int(cuda.max_memory_reserved(self.device))
        cuda.reset_peak_memory_stats(self.device)
        return allocated, reserved


@dataclass
class _Row:
    req: GenRequest
    rec: RequestRecord
    generated: int = 0
    last_token: int = 0
    tokens: list[int] = field(default_factory=list)
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None


@dataclass
class _Stats:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    num_prefill_steps: int = 0
    num_decode_steps: int = 0
    kv_bytes_peak: int = 0
    kv_padding_bytes_peak: int = 0
    kv_token_bytes_peak: float = 0.0
    rss_bytes_peak: int | None = None
    device_allocated_peak: int | None = None
    device_reserved_peak: int | None = None
    request_peaks: dict[str, dict[str, int | None]] = field(default_factory=dict)
    formula_mismatch_steps: int = 0
    series: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.series.setdefault(k, []).append(float(v))


class HfBackend:
    """Runs requests through a transformers causal LM in one process (see module doc)."""

    name = "hf"

    def __init__(self, config: HfConfig) -> None:
        self.config = config
        try:
            self._torch = importlib.import_module("torch")
            self._tf = importlib.import_module("transformers")
        except ImportError as e:
            raise DependencyMissing(getattr(e, "name", None) or "transformers", "hf") from None
        if not (Path(config.model_dir) / "config.json").exists():
            raise ConfigError(
                f"{config.model_dir} has no config.json; give a transformers model directory "
                "(make one with: kvlab tiny-model DIR)"
            )
        torch = self._torch
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"device {config.device}: torch {torch.__version__} sees no CUDA device here "
                "(a CPU build, or no GPU); use device cpu"
            )
        self.device = torch.device(config.device)
        #: The CUDA peak-memory reader, or None on the CPU (nothing measured).
        self.memory: DeviceMemory | None = (
            DeviceMemory(torch, config.device) if config.device.startswith("cuda") else None
        )
        from kvlab.backends.tiny_model import quietly

        self.model = quietly(
            lambda: self._tf.AutoModelForCausalLM.from_pretrained(
                config.model_dir, dtype=getattr(torch, config.dtype)
            )
        ).eval()
        if self.device.type != "cpu":
            self.model = self.model.to(self.device)
        self.vocab_size = int(self.model.config.vocab_size)
        self.tokenizer = _load_tokenizer(self._tf, config.model_dir)
        self.pad_id = int(self.model.config.pad_token_id or 0)
        self.bytes_per_token = kv_bytes_per_token_formula(config.model_dir, config.dtype)
        self.weights_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())

    # -- public -----------------------------------------------------------

    def run(
        self,
        requests: Workload | Sequence[GenRequest],
        *,
        on_finish: Callable[[RequestRecord], None] | None = None,
        on_tokens: Callable[[str, list[int]], None] | None = None,
        max_batch_size: int | None = None,
    ) -> RunResult:
        """Generate every request; return records, per-step series and a summary.

        ``requests`` is a kvlab Workload (prompts from its content, see
        :func:`requests_from_workload`) or a list of :class:`GenRequest`.

        ``on_finish`` receives each record as its request finishes (for
        incremental writing); ``on_tokens`` its generated token ids.
        ``max_batch_size`` overrides the configured one for this run.
        """
        if max_batch_size is not None and max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        cap = max_batch_size or self.config.max_batch_size
        workload_name = None
        if isinstance(requests, Workload):
            workload_name = requests.name
            requests = requests_from_workload(requests, self.vocab_size, self.tokenizer)
        torch = self._torch
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.config.num_threads)
        try:
            with torch.inference_mode():
                return self._run(list(requests), cap, on_finish, on_tokens, workload_name)
        finally:
            torch.set_num_threads(old_threads)

    # -- loop ---------------------------------------------------------------

    def _run(
        self,
        requests: list[GenRequest],
        cap: int,
        on_finish: Callable[[RequestRecord], None] | None,
        on_tokens: Callable[[str, list[int]], None] | None,
        workload_name: str | None,
    ) -> RunResult:
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ConfigError("request ids must be unique")
        records = {
            r.request_id: RequestRecord(
                request_id=r.request_id,
                arrival_s=r.arrival_s,
                prompt_tokens=len(r.prompt_ids),
                output_tokens=0,
                session_id=r.session_id,
                cls=r.cls,
            )
            for r in requests
        }
        followers: dict[str, list[GenRequest]] = {}
        ready: list[GenRequest] = []
        for r in requests:
            (followers.setdefault(r.after, []) if r.after else ready).append(r)
        waiting = deque(sorted(ready, key=lambda r: r.arrival_s))
        rows: list[_Row] = []
        kv: list[tuple[Any, Any]] = []
        mask = None
        stats = _Stats()
        if self.memory is not None:
            self.memory.start()
        t0 = time.perf_counter()

        def done(row: _Row) -> None:
            if on_finish is not None:
                on_finish(row.rec)
            if on_tokens is not None:
                on_tokens(row.req.request_id, row.tokens)

        def now() -> float:
            return time.perf_counter() - t0

        while waiting or rows:
            admit: list[GenRequest] = []
            t = now()
            while waiting and waiting[0].arrival_s <= t and len(rows) + len(admit) < cap:
                admit.append(waiting.popleft())
            if not rows and not admit:
                time.sleep(max(0.0, waiting[0].arrival_s - t))
                continue
            if admit:
                new_rows, new_kv, new_mask = self._prefill(admit, records, now, stats)
                kv, mask = self._merge(kv, mask, new_kv, new_mask)
                rows.extend(new_rows)
                self._memory_step(rows, stats)
                self._sample(rows, kv, mask, len(waiting), now(), 0, stats)
                rows, kv, mask = self._retire(rows, kv, mask, now(), waiting, followers, done)
            if rows:
                kv, mask = self._decode(rows, kv, mask, now, stats)
                self._memory_step(rows, stats)
                self._sample(rows, kv, mask, len(waiting), now(), 1, stats)
                rows, kv, mask = self._retire(rows, kv, mask, now(), waiting, followers, done)

        duration_s = now()
        recs = [records[r.request_id] for r in requests]
        counters = {
            "prefill_time_s": stats.prefill_s,
            "decode_time_s": stats.decode_s,
            "num_prefill_steps": stats.num_prefill_steps,
            "num_decode_steps": stats.num_decode_steps,
            "kv_bytes_per_token_formula": self.bytes_per_token,
            "kv_cache_bytes_peak": stats.kv_bytes_peak,
            "kv_token_bytes_peak": stats.kv_token_bytes_peak,
            "kv_padding_bytes_peak": stats.kv_padding_bytes_peak,
            "kv_formula_mismatch_steps": stats.formula_mismatch_steps,
            "peak_rss_bytes": stats.rss_bytes_peak,
            "weights_bytes": self.weights_bytes,
        }
        result = build_result(
            self.name,
            recs,
            wall_s=duration_s,
            duration_s=duration_s,
            counters=counters,
            record_source="in_process",
            config={**asdict(self.config), "max_batch_size": cap},
            timeseries=stats.series,
            workload=workload_name,
            provenance={
                **_provenance(self._torch, self._tf),
                "device_memory": self._device_memory(requests, stats),
            },
        )
        return result

    def _device_memory(self, requests: list[GenRequest], stats: _Stats) -> dict[str, Any]:
        """``provenance["device_memory"]``: the device, whether measured (and why not), the
        run's peaks and each request's (None where nothing was measured)."""
        measured = self.memory is not None
        none: dict[str, int | None] = {"peak_allocated_bytes": None, "peak_reserved_bytes": None}
        return {
            "device": str(self.device),
            "measured": measured,
            "note": CUDA_MEMORY_NOTE if measured else CPU_MEMORY_NOTE,
            "peak_allocated_bytes": stats.device_allocated_peak,
            "peak_reserved_bytes": stats.device_reserved_peak,
            "by_request": {
                r.request_id: stats.request_peaks.get(r.request_id, none) for r in requests
            },
        }

    def _memory_step(self, rows: list[_Row], stats: _Stats) -> None:
        """After a step on a CUDA device: its peaks, into the run's, each running row's
        and the time series (nothing on the CPU)."""
        if self.memory is None:
            return
        allocated, reserved = self.memory.step_peaks()
        stats.device_allocated_peak = max(stats.device_allocated_peak or 0, allocated)
        stats.device_reserved_peak = max(stats.device_reserved_peak or 0, reserved)
        for row in rows:
            row.peak_allocated_bytes = max(row.peak_allocated_bytes or 0, allocated)
            row.peak_reserved_bytes = max(row.peak_reserved_bytes or 0, reserved)
            stats.request_peaks[row.req.request_id] = {
                "peak_allocated_bytes": row.peak_allocated_bytes,
                "peak_reserved_bytes": row.peak_reserved_bytes,
            }
        stats.add(device_allocated_peak_bytes=allocated, device_reserved_peak_bytes=reserved)

    def _prefill(
        self,
        admit: list[GenRequest],
        records: dict[str, RequestRecord],
        now: Callable[[], float],
        stats: _Stats,
    ) -> tuple[list[_Row], list[tuple[Any, Any]], Any]:
        torch = self._torch
        width = max(len(r.prompt_ids) for r in admit)
        dev = self.device
        ids = torch.full((len(admit), width), self.pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros((len(admit), width), dtype=torch.long, device=dev)
        for i, r in enumerate(admit):
            n = len(r.prompt_ids)
            ids[i, width - n :] = torch.tensor(r.prompt_ids, dtype=torch.long, device=dev)
            mask[i, width - n :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        admitted_s = now()
        cache = self._tf.DynamicCache()
        first, seconds = self._forward(ids, mask, positions, cache)
        stats.prefill_s += seconds
        stats.num_prefill_steps += 1
        t = now()
        rows = []
        for r, tok in zip(admit, first, strict=True):
            rec = records[r.request_id]
            rec.arrival_s = r.arrival_s
            rec.admitted_s = admitted_s
            rec.first_token_s = t
            rec.computed_tokens = len(r.prompt_ids)
            rows.append(_Row(req=r, rec=rec, generated=1, last_token=int(tok), tokens=[int(tok)]))
        return rows, _cache_tensors(cache), mask

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any) -> tuple[list[int], float]:
        """One forward pass extending ``cache``: greedy next token per row, seconds taken."""
        start = time.perf_counter()
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        tokens = out.logits[:, -1, :].argmax(-1).tolist()
        return tokens, time.perf_counter() - start

    def _decode(
        self,
        rows: list[_Row],
        kv: list[tuple[Any, Any]],
        mask: Any,
        now: Callable[[], float],
        stats: _Stats,
    ) -> tuple[list[tuple[Any, Any]], Any]:
        torch = self._torch
        dev = self.device
        ids = torch.tensor([[row.last_token] for row in rows], dtype=torch.long, device=dev)
        positions = mask.sum(-1, keepdim=True)
        ones = torch.ones((len(rows), 1), dtype=torch.long, device=dev)
        mask = torch.cat([mask, ones], dim=1)
        cache = self._tf.DynamicCache(ddp_cache_data=kv)
        nxt, seconds = self._forward(ids, mask, positions, cache)
        stats.decode_s += seconds
        stats.num_decode_steps += 1
        t = now()
        for row, tok in zip(rows, nxt, strict=True):
            if row.generated < row.req.max_new_tokens:
                row.generated += 1
                row.last_token = int(tok)
                row.tokens.append(int(tok))
                if row.generated == row.req.max_new_tokens:
                    row.rec.finish_s = t
        return _cache_tensors(cache), mask

    def _merge(
        self, kv: list[tuple[Any, Any]], mask: Any, new_kv: list[tuple[Any, Any]], new_mask: Any
    ) -> tuple[list[tuple[Any, Any]], Any]:
        """Concatenate two left-padded batches along the batch dimension."""
        torch = self._torch
        if mask is None:
            return new_kv, new_mask
        width = max(mask.shape[1], new_mask.shape[1])
        merged = []
        for (k, v), (nk, nv) in zip(kv, new_kv, strict=True):
            merged.append(
                (
                    torch.cat([_left_pad(torch, k, width), _left_pad(torch, nk, width)], dim=0),
                    torch.cat([_left_pad(torch, v, width), _left_pad(torch, nv, width)], dim=0),
                )
            )
        m = torch.cat([_left_pad_mask(torch, mask, width), _left_pad_mask(torch, new_mask, width)])
        return merged, m

    def _retire(
        self,
        rows: list[_Row],
        kv: list[tuple[Any, Any]],
        mask: Any,
        t: float,
        waiting: deque[GenRequest],
        followers: dict[str, list[GenRequest]],
        done: Callable[[_Row], None],
    ) -> tuple[list[_Row], list[tuple[Any, Any]], Any]:
        keep = []
        for i, row in enumerate(rows):
            if row.generated < row.req.max_new_tokens:
                keep.append(i)
                continue
            row.rec.output_tokens = row.generated
            row.rec.status = STATUS_OK
            if row.rec.finish_s is None:
                row.rec.finish_s = row.rec.first_token_s
            done(row)
            for nxt in followers.pop(row.req.request_id, []):
                arrival = t + nxt.think_time_s
                nxt = _with_arrival(nxt, arrival)
                _insert_by_arrival(waiting, nxt)
        if len(keep) == len(rows):
            return rows, kv, mask
        if not keep:
            return [], [], None
        torch = self._torch
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = mask.index_select(0, idx)
        used = mask.any(dim=0).nonzero()
        start = int(used[0].item()) if used.numel() else mask.shape[1]
        kv = [
            (k.index_select(0, idx)[:, :, start:, :], v.index_select(0, idx)[:, :, start:, :])
            for k, v in kv
        ]
        return [rows[i] for i in keep], kv, mask[:, start:]

    def _sample(
        self,
        rows: list[_Row],
        kv: list[tuple[Any, Any]],
        mask: Any,
        num_waiting: int,
        t: float,
        phase: int,
        stats: _Stats,
    ) -> None:
        measured = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        num_rows, num_cols = (0, 0) if mask is None else (int(mask.shape[0]), int(mask.shape[1]))
        real_tokens = 0 if mask is None else int(mask.sum().item())
        token_bytes = real_tokens * self.bytes_per_token
        if measured != num_rows * num_cols * self.bytes_per_token:
            stats.formula_mismatch_steps += 1
        rss = current_rss_bytes()
        stats.kv_bytes_peak = max(stats.kv_bytes_peak, measured)
        stats.kv_token_bytes_peak = max(stats.kv_token_bytes_peak, token_bytes)
        stats.kv_padding_bytes_peak = max(stats.kv_padding_bytes_peak, int(measured - token_bytes))
        if rss is not None:
            stats.rss_bytes_peak = max(stats.rss_bytes_peak or 0, rss)
        stats.add(
            t_s=t,
            phase_decode=phase,
            num_requests_running=len(rows),
            num_requests_waiting=num_waiting,
            kv_cache_bytes=measured,
            kv_token_bytes=token_bytes,
            kv_padding_bytes=measured - token_bytes,
            kv_cache_tokens=real_tokens,
            batch_columns=num_cols,
            rss_bytes=math.nan if rss is None else rss,
        )


def _load_tokenizer(tf: Any, model_dir: str) -> Any | None:
    """The model directory's tokenizer, or None when it has none."""
    d = Path(model_dir)
    if not ((d / "tokenizer.json").exists() or (d / "tokenizer_config.json").exists()):
        return None
    return tf.AutoTokenizer.from_pretrained(model_dir)


def _cache_tensors(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_pad(torch: Any, x: Any, width: int) -> Any:
    missing = width - x.shape[2]
    if missing == 0:
        return x
    pad = torch.zeros((x.shape[0], x.shape[1], missing, x.shape[3]), dtype=x.dtype, device=x.device)
    return torch.cat([pad, x], dim=2)


def _left_pad_mask(torch: Any, m: Any, width: int) -> Any:
    missing = width - m.shape[1]
    if missing == 0:
        return m
    pad = torch.zeros((m.shape[0], missing), dtype=m.dtype, device=m.device)
    return torch.cat([pad, m], dim=1)


def _with_arrival(r: GenRequest, arrival_s: float) -> GenRequest:
    from dataclasses import replace

    return replace(r, arrival_s=arrival_s)


def _insert_by_arrival(q: deque[GenRequest], r: GenRequest) -> None:
    for i, x in enumerate(q):
        if x.arrival_s > r.arrival_s:
            q.insert(i, r)
            return
    q.append(r)


def _provenance(torch: Any, tf: Any) -> dict[str, Any]:
    return {
        "torch_version": str(torch.__version__),
        "transformers_version": str(tf.__version__),
        "num_threads": torch.get_num_threads(),
    }


__all__ = [
    "CPU_MEMORY_NOTE",
    "CUDA_MEMORY_NOTE",
    "FIRST_TEXT_TOKEN_ID",
    "DeviceMemory",
    "GenRequest",
    "HfBackend",
    "HfConfig",
    "current_rss_bytes",
    "kv_bytes_per_token_formula",
    "requests_from_workload",
    "synthetic_requests",
]
