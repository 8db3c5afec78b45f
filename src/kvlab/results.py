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
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter, sub
from pathlib import Path
from typing import Any

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
        out: dict[str, Any] = {}
        for k in _RECORD_FIELDS:
            v = getattr(self, k)
            if v is not None:
                out[k] = dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RequestRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
_ARRIVAL = attrgetter("arrival_s")
_FIRST = attrgetter("first_token_s")
_FINISH = attrgetter("finish_s")
_OUTPUT = attrgetter("output_tokens")
_PROMPT = attrgetter("prompt_tokens")
_STATUS = attrgetter("status")
_CACHED = attrgetter("cached_tokens")
_OFFLOAD_HIT = attrgetter("offload_hit_tokens")
_PREEMPTIONS = attrgetter("num_preemptions")


def dist(values: Iterable[float]) -> dict[str, float | None]:
    """mean / p50 / p90 / p99 / max of ``values`` (None when empty).

    The numbers are numpy's (``mean``, ``percentile`` with linear
    interpolation, ``max``) to the last bit. Finite samples without zeros are
    computed in pure Python by the same arithmetic (:func:`_pairwise_sum` and
    :func:`_linear_percentile`), which spares importing numpy; any other sample
    goes through numpy itself.
    """
    a = [float(v) for v in values if v is not None]
    if not a:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    total = _pairwise_sum(a, 0, len(a))
    # A finite total means every value is finite (inf and nan never cancel out).
    # Zeros are excluded because the sign of a zero picked by numpy's partition
    # and max is an implementation detail.
    if not math.isfinite(total) or 0.0 in a:
        return _dist_numpy(a)
    a.sort()
    return {
        "mean": total / len(a),
        "p50": _linear_percentile(a, 0.5),
        "p90": _linear_percentile(a, 0.9),
        "p99": _linear_percentile(a, 0.99),
        "max": a[-1],
    }


def _dist_numpy(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    a = np.array(values, dtype=float)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "mean": float(a.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
    }


def _pairwise_sum(a: list[float], lo: int, n: int) -> float:
    """``a[lo:lo + n]`` summed in the order of numpy's float64 ``add.reduce``.

    numpy (loops_utils.h, ``pairwise_sum``): under 8 values a plain loop; up to
    128 eight interleaved partial sums combined as ((0+1)+(2+3))+((4+5)+(6+7)),
    then the remainder; above that, the two halves (the first a multiple of 8
    long) summed recursively.
    """
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[lo : lo + 8]
        end = lo + n - n % 8
        for j in range(lo + 8, end, 8):
            r0 += a[j]
            r1 += a[j + 1]
            r2 += a[j + 2]
            r3 += a[j + 3]
            r4 += a[j + 4]
            r5 += a[j + 5]
            r6 += a[j + 6]
            r7 += a[j + 7]
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for i in range(end, lo + n):
            res += a[i]
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


def _linear_percentile(ordered: list[float], q: float) -> float:
    """numpy's ``percentile(..., method="linear")`` of sorted finite values, ``q`` in [0, 1].

    The virtual index is (n - 1) q; at or beyond the last index both neighbours
    are the last value and the weight is taken from index -1, as numpy does;
    the interpolation is numpy's ``_lerp`` (from the nearer end when the weight
    is >= 0.5).
    """
    n = len(ordered)
    virtual = (n - 1) * q
    if virtual >= n - 1:
        lo = hi = -1
    else:
        lo = math.floor(virtual)
        hi = lo + 1
    t = virtual - lo
    a, b = ordered[lo], ordered[hi]
    diff = b - a
    if t >= 0.5:
        return b - diff * (1 - t)
    return a + diff * t


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
        starts = list(map(_ARRIVAL, records))
        ends = [e for e in map(_FINISH, done) if e is not None]
        duration_s = (max(ends) - min(starts)) if ends and starts else 0.0
    out_tokens = sum(map(_OUTPUT, done))
    prompt_tokens = sum(map(_PROMPT, done))
    statuses = list(map(_STATUS, records))
    # TTFT, TPOT and E2E exactly as the RequestRecord properties define them
    arrivals = list(map(_ARRIVAL, done))
    firsts = list(map(_FIRST, done))
    finishes = list(map(_FINISH, done))
    outputs = list(map(_OUTPUT, done))
    ttft = [f - a for f, a in zip(firsts, arrivals, strict=True) if f is not None]
    tpot = [
        (e - f) / (n - 1)
        for e, f, n in zip(finishes, firsts, outputs, strict=True)
        if f is not None and n >= 2
    ]
    e2e = [e - a for e, a in zip(finishes, arrivals, strict=True)]
    s: dict[str, Any] = {
        "num_requests": len(records),
        "num_completed": len(done),
        "num_rejected": statuses.count(STATUS_REJECTED),
        "num_failed": statuses.count(STATUS_FAILED),
        "num_unfinished": statuses.count(STATUS_UNFINISHED),
        "prompt_tokens": prompt_tokens,
        "output_tokens": out_tokens,
        "ttft_s": dist(ttft),
        "tpot_s": dist(tpot),
        "e2e_s": dist(e2e),
        "request_throughput_per_s": (len(done) / duration_s) if duration_s > 0 else None,
        "output_throughput_tok_per_s": (out_tokens / duration_s) if duration_s > 0 else None,
        "total_throughput_tok_per_s": (
            (out_tokens + prompt_tokens) / duration_s if duration_s > 0 else None
        ),
        "simulated_duration_s": duration_s,
    }
    # vLLM's split: prefix_cache_* counts the GPU tier, external_prefix_cache_* lower tiers.
    admitted = [r for r in records if r.admitted_s is not None]
    offloaded = list(map(_OFFLOAD_HIT, admitted))
    s["prefix_cache_queries"] = sum(map(_PROMPT, admitted))
    s["prefix_cache_hits"] = sum(map(sub, map(_CACHED, admitted), offloaded))
    s["external_prefix_cache_hits"] = sum(offloaded)
    s["num_preemptions"] = sum(map(_PREEMPTIONS, records))
    return with_counters(s, counters)


def with_counters(summary: dict[str, Any], counters: Mapping[str, Any] | None) -> dict[str, Any]:
    """``summary`` with backend ``counters`` merged in (as :func:`summarize` does), its
    prefix-cache hit rate recomputed; the input's own keys are not changed."""
    s = dict(summary)
    s.pop("prefix_cache_hit_rate", None)  # recomputed last, as summarize orders it
    if counters:
        s.update(counters)
    qq, hh = s.get("prefix_cache_queries"), s.get("prefix_cache_hits")
    s["prefix_cache_hit_rate"] = (hh / qq) if qq else 0.0
    return s


def group_summaries(
    records: Sequence[RequestRecord], key: str = "cls", *, duration_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """:func:`summarize` per value of a record attribute (``cls`` or ``session_id``)."""
    groups = _groups(records, key)
    return {k: summarize(v, duration_s=duration_s) for k, v in sorted(groups.items())}


def _groups(records: Sequence[RequestRecord], key: str) -> dict[str, list[RequestRecord]]:
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        groups.setdefault(str(getattr(r, key)), []).append(r)
    return groups


def summary_with_groups(
    records: Sequence[RequestRecord],
    *,
    duration_s: float,
    counters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``summarize(records, duration_s=..., counters=...)`` plus ``by_class``:
    :func:`group_summaries` by ``cls`` (computed once when all records share one)."""
    groups = _groups(records, "cls")
    if len(groups) == 1:
        whole = summarize(records, duration_s=duration_s)
        s = with_counters(whole, counters)
        s["by_class"] = {k: whole for k in groups}
        return s
    s = summarize(records, duration_s=duration_s, counters=counters)
    s["by_class"] = group_summaries(records, duration_s=duration_s)
    return s


@dataclass
class RunResult:
    """Per-request records, time series, histograms and a summary of one run."""

    records: list[RequestRecord]
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    timeseries: dict[str, list[float]] = field(default_factory=dict)
    histograms: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path, *, records: bool = True) -> Path:
        """Write the run directory (atomically, file by file) and return it;
        ``records=False`` leaves ``requests.jsonl`` to the caller."""
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "summary.json", _dumps(self.summary))
        if records:
            atomic_write_text(d / "requests.jsonl", records_to_jsonl(self.records))
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


class ForkedWrite:
    """``atomic_write_text(path, make_text())`` in a forked child process, so the
    caller goes on meanwhile (where ``os.fork`` exists; otherwise at once).

    :meth:`wait` returns once the file is written. If the child failed for any
    reason, the text is made and written again in this process, so any error
    is raised here, as a plain write would raise it. Fork only from a process
    without other threads (the child runs Python code).
    """

    def __init__(self, path: str | Path, make_text: Callable[[], str]) -> None:
        self.path = Path(path)
        self.make_text = make_text
        from kvlab._fork import fork_call

        self.pid = fork_call(lambda: atomic_write_text(self.path, make_text()))
        if self.pid is None:
            atomic_write_text(self.path, make_text())

    def wait(self) -> None:
        if self.pid is None:
            return
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if status != 0:
            atomic_write_text(self.path, self.make_text())


def records_to_jsonl(records: Sequence[RequestRecord]) -> str:
    """The text of ``requests.jsonl``: ``json.dumps(r.to_dict(), allow_nan=False)`` per line.

    Built column by column: each field of every record is encoded once (strings
    by json's own encoder, numbers by ``repr`` as json does). When every
    column is either always or never null, each line is one ``%`` format of a
    template holding the keys; otherwise each line joins its non-null fields.
    A column whose values (None aside) are not all of one type among str, int,
    finite float, dict and list falls back to ``json.dumps`` per record, so the
    bytes and the errors are json's.
    """
    if not records:
        return ""
    columns = list(zip(*map(_ALL_FIELDS, records), strict=True))
    template: list[str] = []
    cells: list[Sequence[Any]] = []
    for name, values in zip(_RECORD_FIELDS, columns, strict=True):
        kind = _column_kind(values)
        if kind is None:
            return "".join(json.dumps(r.to_dict(), allow_nan=False) + "\n" for r in records)
        if kind is type(None):
            continue
        if None in values:
            return _jsonl_with_gaps(records)
        constant = _constant_json(kind, values)
        if constant is not None:  # the same in every line: part of the template
            template.append(f'"{name}": ' + constant.replace("%", "%%"))
        elif kind is float or kind is int:  # repr, as json writes numbers
            template.append(f'"{name}": %r')
            cells.append(values)
        elif kind is str and _plain_ascii("".join(values)):  # json adds only the quotes
            template.append(f'"{name}": "%s"')
            cells.append(values)
        else:
            template.append(f'"{name}": %s')
            cells.append(list(map(_ENCODERS[kind], values)))
    line = "{" + ", ".join(template) + "}\n"
    if not cells:
        return line * len(records)
    return "".join(map(line.__mod__, zip(*cells, strict=True)))


_ALL_FIELDS = attrgetter(*_RECORD_FIELDS)


def _column_kind(values: Sequence[Any]) -> type | None:
    """The one type of a column's non-null values (NoneType if all are null), or None
    when the column needs json's general path (mixed or other types, non-finite floats)."""
    types = set(map(type, values))
    if len(types) > 1:
        types.discard(type(None))
    if len(types) != 1:
        return None
    kind = types.pop()
    if kind not in _ENCODERS and kind is not type(None):
        return None
    if kind is float:
        present = values if None not in values else [v for v in values if v is not None]
        # a finite sum means every value is finite (inf and nan never cancel out)
        if not math.isfinite(sum(present)) and not all(map(math.isfinite, present)):
            return None
    return kind


def _constant_json(kind: type, values: Sequence[Any]) -> str | None:
    """The JSON of a column of ints or strs that holds one value only, or of empty dicts."""
    if kind is dict:
        return None if any(values) else "{}"
    if kind is not int and kind is not str:
        return None
    first = values[0]
    if values.count(first) != len(values):
        return None
    return _ENCODERS[kind](first)


def _plain_ascii(text: str) -> bool:
    """Whether json writes ``text`` as is between quotes (printable ASCII, no ``"`` or ``\\``)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _jsonl_with_gaps(records: Sequence[RequestRecord]) -> str:
    """:func:`records_to_jsonl` when some column is null in some records only."""
    cols: list[list[str]] = []
    for name in _RECORD_FIELDS:
        col = _jsonl_column(name, list(map(attrgetter(name), records)))
        if col is None:
            return "".join(json.dumps(r.to_dict(), allow_nan=False) + "\n" for r in records)
        if col:
            cols.append(col)
    lines = map(", ".join, map(_non_empty, zip(*cols, strict=True)))
    return "{" + "}\n{".join(lines) + "}\n"


def _non_empty(cells: tuple[str, ...]) -> filter[str]:
    return filter(None, cells)


def _jsonl_column(name: str, values: list[Any]) -> list[str] | None:
    """``"name": value`` per record ("" where the value is None); [] if all are None;
    None if a value needs json's general path."""
    types = set(map(type, values))
    types.discard(type(None))
    if not types:
        return []
    if len(types) > 1 or not types <= {str, int, float, dict, list}:
        return None
    kind = types.pop()
    present = values if None not in values else [v for v in values if v is not None]
    if kind is float and not all(map(math.isfinite, present)):
        return None
    encode = _ENCODERS[kind]
    key = f'"{name}": '
    if present is values:
        return list(map(key.__add__, map(encode, values)))
    return ["" if v is None else key + encode(v) for v in values]


def _json_dict(d: dict[Any, Any]) -> str:
    """``json.dumps(dict(d), allow_nan=False)``; str -> int mappings built directly."""
    if not d:
        return "{}"
    from json.encoder import encode_basestring_ascii

    if all(type(k) is str and type(v) is int for k, v in d.items()):
        items = [encode_basestring_ascii(k) + ": " + int.__repr__(v) for k, v in d.items()]
        return "{" + ", ".join(items) + "}"
    return json.dumps(dict(d), allow_nan=False)


def _json_list(v: list[Any]) -> str:
    """``json.dumps(list(v), allow_nan=False)``."""
    return json.dumps(list(v), allow_nan=False)


def _json_str(v: str) -> str:
    from json.encoder import encode_basestring_ascii

    return str(encode_basestring_ascii(v))


_ENCODERS: dict[type, Callable[[Any], str]] = {
    float: float.__repr__,
    int: int.__repr__,
    str: _json_str,
    dict: _json_dict,
    list: _json_list,
}


def timeseries_to_csv(ts: Mapping[str, Sequence[float]]) -> str:
    if not ts:
        return ""
    cols = list(ts)
    n = max(len(v) for v in ts.values())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    if all(_plain_numbers(v) for v in ts.values()):
        # numbers never need CSV quoting, and a row always has a cell of the longest column
        cells = [_fmt_column(v) + [""] * (n - len(v)) for v in ts.values()]
        buf.write("".join(map("%s\n".__mod__, map(",".join, zip(*cells, strict=True)))))
        return buf.getvalue()
    for i in range(n):
        w.writerow([_fmt(ts[c][i]) if i < len(ts[c]) else "" for c in cols])
    return buf.getvalue()


def _plain_numbers(values: Sequence[Any]) -> bool:
    return set(map(type, values)) <= {float, int}


def _fmt_column(values: Sequence[float]) -> list[str]:
    """:func:`_fmt` of each value (exact floats or ints); whole-number float columns at once."""
    if (
        values
        and set(map(type, values)) == {float}
        and all(map(float.is_integer, values))
        and min(values) > -1e15
        and max(values) < 1e15
    ):
        return list(map(str, map(int, values)))
    return [_fmt_number(x) for x in values]


def _fmt_number(v: float) -> str:
    """:func:`_fmt` of an exact float or int."""
    if type(v) is int:
        return int.__repr__(v)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return float.__repr__(v)


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
    np = sys.modules.get("numpy")  # a numpy scalar exists only once numpy is imported
    if np is not None and isinstance(o, np.generic):
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
    "ForkedWrite",
    "RecordWriter",
    "RequestRecord",
    "RunResult",
    "atomic_write_text",
    "dist",
    "group_summaries",
    "records_to_jsonl",
    "summarize",
    "summary_with_groups",
    "with_counters",
]
