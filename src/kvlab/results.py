"""RunResult: what every backend (simulator, live server, transformers) returns.

A run directory holds:

``summary.json``
    the summary (vLLM-named metrics, see :func:`summarize`), plus ``by_class``.
``requests.jsonl``
    one :class:`RequestRecord` per line, in request order.
``timeseries.csv``
    one row per sample; column ``t_s`` first, other columns per backend
    (``kv_cache_usage_perc``, ``num_requests_running``, ...).
``histograms.json``
    unsampled histograms: name -> {"unit", "edges", "counts"} (or raw values).
``run.json``
    the run configuration and provenance (kvlab version, seed, git sha).
``summary.md``
    a short human-readable summary.

Files are written atomically (temporary file + rename), and ``requests.jsonl``
can be appended incrementally with :class:`RecordWriter`, so an interrupted
run keeps the records it finished.

Time units are seconds (``*_s``) from the start of the run; token counts are
tokens. Definitions (REFERENCE section 3):

* TTFT = first token time - arrival (send) time.
* TPOT = (E2E - TTFT) / (output_tokens - 1), for requests with >= 2 tokens.
* E2E = finish time - arrival time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

#: Request statuses.
STATUS_OK = "ok"
STATUS_REJECTED = "rejected"  # refused before running (e.g. longer than max_model_len)
STATUS_FAILED = "failed"  # started or sent, but failed (live backends)
STATUS_UNFINISHED = "unfinished"  # the run ended (or was interrupted) first

#: Why a request did not hit more of its prompt in the prefix cache.
MISS_CAUSES: tuple[str, ...] = ("cold", "evicted", "below_block", "last_token", "none")


@dataclass(slots=True)
class RequestRecord:
    """The life of one request. Times are seconds from the start of the run.

    ``cached_tokens`` are prompt tokens served from the prefix cache at first
    admission (GPU tier plus ``offload_hit_tokens`` from lower tiers).
    ``computed_tokens`` are prompt tokens actually prefilled, summed over
    every admission (recomputation after preemption included).
    ``miss_cause`` says why the hit stopped where it did (see MISS_CAUSES);
    ``None`` when unknown (live servers).
    ``sent_s`` (live backends) is when the request actually left the client;
    ``arrival_s`` is when it was due, so ``sent_s - arrival_s`` is send lateness.
    """

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    session_id: str | None = None
    cls: str | None = None
    status: str = STATUS_OK
    admitted_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    cached_tokens: int = 0
    computed_tokens: int = 0
    offload_hit_tokens: int = 0
    num_preemptions: int = 0
    miss_cause: str | None = None
    error: str | None = None
    error_detail: str | None = None
    hit_tokens_by_retention: dict[str, int] | None = None
    chunk_times_s: list[float] | None = None
    sent_s: float | None = None

    @property
    def ttft_s(self) -> float | None:
        if self.first_token_s is None:
            return None
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        if self.finish_s is None:
            return None
        return self.finish_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        if self.finish_s is None or self.first_token_s is None or self.output_tokens < 2:
            return None
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RequestRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def dist(values: Iterable[float]) -> dict[str, float | None]:
    """mean / p50 / p90 / p99 / max of ``values`` (None when empty)."""
    a = np.fromiter((v for v in values if v is not None), dtype=float)
    if a.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "mean": float(a.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
    }


def summarize(
    records: Sequence[RequestRecord],
    *,
    duration_s: float | None = None,
    counters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Request-level summary shared by every backend.

    ``duration_s`` defaults to last finish - first arrival. ``counters`` are
    backend counters (prefix cache queries/hits, preemptions, evictions, usage,
    offload...) merged in as given; when absent, prefix-cache keys are derived
    from the records: queries = prompt tokens of admitted requests, hits =
    GPU-tier cached tokens, ``external_prefix_cache_hits`` = lower-tier ones.
    """
    done = [r for r in records if r.status == STATUS_OK and r.finish_s is not None]
    if duration_s is None:
        starts = [r.arrival_s for r in records]
        ends = [r.finish_s for r in done if r.finish_s is not None]
        duration_s = (max(ends) - min(starts)) if ends and starts else 0.0
    out_tokens = sum(r.output_tokens for r in done)
    prompt_tokens = sum(r.prompt_tokens for r in done)
    s: dict[str, Any] = {
        "num_requests": len(records),
        "num_completed": len(done),
        "num_rejected": sum(r.status == STATUS_REJECTED for r in records),
        "num_failed": sum(r.status == STATUS_FAILED for r in records),
        "num_unfinished": sum(r.status == STATUS_UNFINISHED for r in records),
        "prompt_tokens": prompt_tokens,
        "output_tokens": out_tokens,
        "ttft_s": dist(r.ttft_s for r in done if r.ttft_s is not None),
        "tpot_s": dist(r.tpot_s for r in done if r.tpot_s is not None),
        "e2e_s": dist(r.e2e_s for r in done if r.e2e_s is not None),
        "request_throughput_per_s": (len(done) / duration_s) if duration_s > 0 else None,
        "output_throughput_tok_per_s": (out_tokens / duration_s) if duration_s > 0 else None,
        "total_throughput_tok_per_s": (
            (out_tokens + prompt_tokens) / duration_s if duration_s > 0 else None
        ),
        "simulated_duration_s": duration_s,
    }
    # vLLM's split: prefix_cache_* counts the GPU tier, external_prefix_cache_* lower tiers.
    admitted = [r for r in records if r.admitted_s is not None]
    s["prefix_cache_queries"] = sum(r.prompt_tokens for r in admitted)
    s["prefix_cache_hits"] = sum(r.cached_tokens - r.offload_hit_tokens for r in admitted)
    s["external_prefix_cache_hits"] = sum(r.offload_hit_tokens for r in admitted)
    s["num_preemptions"] = sum(r.num_preemptions for r in records)
    if counters:
        s.update(counters)
    qq, hh = s.get("prefix_cache_queries"), s.get("prefix_cache_hits")
    s["prefix_cache_hit_rate"] = (hh / qq) if qq else 0.0
    return s


def group_summaries(
    records: Sequence[RequestRecord], key: str = "cls", *, duration_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """:func:`summarize` per value of a record attribute (``cls`` or ``session_id``)."""
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        groups.setdefault(str(getattr(r, key)), []).append(r)
    return {k: summarize(v, duration_s=duration_s) for k, v in sorted(groups.items())}


@dataclass
class RunResult:
    """Per-request records, time series, histograms and a summary of one run."""

    records: list[RequestRecord]
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    timeseries: dict[str, list[float]] = field(default_factory=dict)
    histograms: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        """Write the run directory (atomically, file by file) and return it."""
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "summary.json", _dumps(self.summary))
        atomic_write_text(
            d / "requests.jsonl",
            "".join(json.dumps(r.to_dict(), allow_nan=False) + "\n" for r in self.records),
        )
        atomic_write_text(d / "timeseries.csv", timeseries_to_csv(self.timeseries))
        atomic_write_text(d / "histograms.json", _dumps(self.histograms))
        atomic_write_text(
            d / "run.json", _dumps({"config": self.config, "provenance": self.provenance})
        )
        return d

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        d = Path(run_dir)
        summary = json.loads((d / "summary.json").read_text())
        records = []
        req = d / "requests.jsonl"
        if req.exists():
            for line in req.read_text().splitlines():
                if line.strip():
                    records.append(RequestRecord.from_dict(json.loads(line)))
        ts: dict[str, list[float]] = {}
        tsp = d / "timeseries.csv"
        if tsp.exists():
            ts = timeseries_from_csv(tsp.read_text())
        hist = {}
        if (d / "histograms.json").exists():
            hist = json.loads((d / "histograms.json").read_text())
        run: dict[str, Any] = {}
        if (d / "run.json").exists():
            run = json.loads((d / "run.json").read_text())
        return cls(
            records=records,
            summary=summary,
            config=run.get("config", {}),
            timeseries=ts,
            histograms=hist,
            provenance=run.get("provenance", {}),
        )


class RecordWriter:
    """Appends records to ``requests.jsonl`` as they finish (flushed per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("w", encoding="utf-8")

    def write(self, rec: RequestRecord) -> None:
        self._f.write(json.dumps(rec.to_dict()) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def timeseries_to_csv(ts: Mapping[str, Sequence[float]]) -> str:
    if not ts:
        return ""
    cols = list(ts)
    n = max(len(v) for v in ts.values())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for i in range(n):
        w.writerow([_fmt(ts[c][i]) if i < len(ts[c]) else "" for c in cols])
    return buf.getvalue()


def timeseries_from_csv(text: str) -> dict[str, list[float]]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {}
    cols = rows[0]
    out: dict[str, list[float]] = {c: [] for c in cols}
    for row in rows[1:]:
        for c, v in zip(cols, row, strict=False):
            if v != "":
                out[c].append(float(v))
    return out


def _fmt(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def _dumps(o: Any) -> str:
    return json.dumps(_clean(o), indent=2, sort_keys=False, allow_nan=False) + "\n"


__all__ = [
    "MISS_CAUSES",
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_REJECTED",
    "STATUS_UNFINISHED",
    "RecordWriter",
    "RequestRecord",
    "RunResult",
    "atomic_write_text",
    "dist",
    "group_summaries",
    "summarize",
]
