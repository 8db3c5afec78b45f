"""A ``kvlab monitor --record FILE.jsonl`` file read back: its samples and alert events
per server, and the figures of each server's recording.

The file is JSON lines, one object each, as :class:`~kvlab.monitor.watch.Monitor`
writes them: ``{"type": "sample", ...}`` (the fields of
:class:`~kvlab.monitor.sampler.Sample`) and ``{"type": "alert", ...}`` (those of
:class:`~kvlab.monitor.alerts.AlertEvent`). Several monitor runs may have appended
to one file.

:func:`read_record` validates at the boundary: a file that is not text, is empty,
has a line that is not a JSON object, or a field of the wrong type is one
:class:`~kvlab.errors.RunDirError` naming ``file:line`` and the field. The one
exception is the last line when it does not end in a newline and does not parse:
a monitor stopped mid-write leaves it, so it is dropped and
:attr:`Recording.truncated_line` says which line it was.

Figures (:func:`summarize`), per server, all from the samples:

* time is a step function: a sample's state holds until the next sample of the same
  server. A step longer than :data:`GAP_FACTOR` times the median step (at least
  :data:`MIN_GAP_S`) is a gap (no monitor was running) and counts in no time figure;
* ``usage_max`` / ``usage_mean`` are over the samples that report KV usage (a
  fraction 0-1); ``time_above_s`` sums the steps whose sample's usage is above
  ``usage_above`` (default: the stress SLO's KV usage ceiling,
  :data:`kvlab.stress.slo.DEFAULT_MAX_KV_USAGE`);
* ``preemptions`` sums the samples' interval increases; ``prefix_hit_rate`` is the
  hits over the queries of all intervals (tokens), not a mean of rates;
* ``unreachable_s`` sums the steps whose sample could not be read; ``restarts``
  counts the samples that saw counters go down.

A figure no sample reports is ``None`` (shown as ``-``), never 0.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.errors import RunDirError

#: A step this many times the median step (or longer than MIN_GAP_S) is a gap.
GAP_FACTOR = 5.0
MIN_GAP_S = 5.0

_NUM_FIELDS = (
    "interval_s",
    "unreachable_since_unix",
    "kv_cache_usage_perc",
    "num_requests_running",
    "num_requests_waiting",
    "prefix_hit_rate",
    "prefix_queries_tokens",
    "preemptions",
    "preemptions_per_s",
    "generation_tokens_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p99_s",
)
_STR_FIELDS = ("problem", "error", "server", "dialect", "itl_metric")
_EVENTS = ("firing", "resolved")


@dataclass(frozen=True)
class RecordSample:
    """One sample as recorded (fractions 0-1, seconds, per-second rates; None: unknown)."""

    line: int
    url: str
    t_unix: float
    up: bool
    counter_reset: bool
    values: dict[str, float | None]
    texts: dict[str, str | None]

    def get(self, name: str) -> float | None:
        return self.values.get(name)


@dataclass(frozen=True)
class RecordAlert:
    """One alert event as recorded."""

    line: int
    event: str
    rule: str
    url: str
    t_unix: float
    value: float | None
    threshold: float
    metric: str
    severity: str


@dataclass
class ServerRecording:
    """The samples and alert events of one server, in file order."""

    url: str
    samples: list[RecordSample] = field(default_factory=list)
    alerts: list[RecordAlert] = field(default_factory=list)


@dataclass
class Recording:
    """A record file: one :class:`ServerRecording` per URL, in order of first sample."""

    path: Path
    servers: dict[str, ServerRecording]
    num_lines: int
    truncated_line: int | None = None

    @property
    def note(self) -> str | None:
        if self.truncated_line is None:
            return None
        return (
            f"{self.path}:{self.truncated_line}: last line cut short (a monitor stopped "
            "mid-write); ignored"
        )


def _bad(path: Path, line: int, msg: str, fld: str | None = None) -> RunDirError:
    return RunDirError(msg, path=path, line=line, field=fld)


def _num(path: Path, line: int, obj: dict[str, Any], key: str) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(path, line, f"must be a number or null, got {str(v)[:40]!r}", key)
    try:
        x = float(v)
    except OverflowError:
        raise _bad(path, line, "must be a finite number, got a huge integer", key) from None
    if math.isnan(x):
        return None  # a gauge a server exposed as NaN: not known
    if math.isinf(x) or (x < 0 and key != "threshold"):
        raise _bad(path, line, f"must be a finite number >= 0, got {v!r}", key)
    return x


def _str(path: Path, line: int, obj: dict[str, Any], key: str, required: bool) -> str | None:
    v = obj.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or (required and not v):
        raise _bad(path, line, f"must be a non-empty string, got {v!r}"[:120], key)
    return v


def _time(path: Path, line: int, obj: dict[str, Any]) -> float:
    t = _num(path, line, obj, "t_unix")
    if t is None:
        raise _bad(path, line, "missing: every line needs its wall time (seconds)", "t_unix")
    return t


def _sample(path: Path, line: int, obj: dict[str, Any]) -> RecordSample:
    url = _str(path, line, obj, "url", True)
    assert url is not None
    t = _time(path, line, obj)
    up = obj.get("up")
    if not isinstance(up, bool):
        raise _bad(path, line, f"must be true or false, got {up!r}"[:120], "up")
    reset = obj.get("counter_reset", False)
    if not isinstance(reset, bool):
        raise _bad(path, line, f"must be true or false, got {reset!r}"[:120], "counter_reset")
    values = {k: _num(path, line, obj, k) for k in _NUM_FIELDS}
    u = values["kv_cache_usage_perc"]
    if u is not None and u > 1.0 + 1e-9:
        raise _bad(path, line, f"is a fraction 0-1, got {u:g}", "kv_cache_usage_perc")
    h = values["prefix_hit_rate"]
    if h is not None and h > 1.0 + 1e-9:
        raise _bad(path, line, f"is a fraction 0-1, got {h:g}", "prefix_hit_rate")
    texts = {k: _str(path, line, obj, k, False) for k in _STR_FIELDS}
    for k in ("totals", "cache_config"):
        if not isinstance(obj.get(k, {}), dict):
            raise _bad(path, line, f"must be an object, got {obj.get(k)!r}"[:120], k)
    return RecordSample(line, url, t, up, reset, values, texts)


def _alert(path: Path, line: int, obj: dict[str, Any]) -> RecordAlert:
    event = obj.get("event")
    if event not in _EVENTS:
        raise _bad(path, line, f"must be firing or resolved, got {event!r}"[:120], "event")
    names = {k: _str(path, line, obj, k, True) for k in ("rule", "url", "metric", "severity")}
    threshold = _num(path, line, obj, "threshold")
    if threshold is None:
        raise _bad(path, line, "missing", "threshold")
    return RecordAlert(
        line,
        str(event),
        str(names["rule"]),
        str(names["url"]),
        _time(path, line, obj),
        _num(path, line, obj, "value"),
        threshold,
        str(names["metric"]),
        str(names["severity"]),
    )


def is_record_file(path: Path) -> bool:
    """Whether ``path`` is meant as a record file (a file, not a run directory)."""
    return path.is_file()


def read_record(path: str | Path) -> Recording:
    """Read and validate one record file (see the module)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except IsADirectoryError:
        raise RunDirError("is a directory, not a monitor record file (JSONL)", path=p) from None
    except OSError as e:
        raise RunDirError(f"cannot read the record file: {e.strerror or e}", path=p) from None
    if b"\0" in raw[:65536]:
        raise RunDirError("binary file, not a monitor record (JSON lines)", path=p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise _bad(p, line, "not UTF-8 text: not a monitor record (JSON lines)") from None
    lines = text.split("\n")
    ends_cut = not text.endswith("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not any(x.strip() for x in lines):
        raise _bad(p, 1, "empty record file: no samples (write one with kvlab monitor --record)")
    servers: dict[str, ServerRecording] = {}
    truncated: int | None = None
    for i, text_line in enumerate(lines, 1):
        if not text_line.strip():
            continue
        try:
            obj = json.loads(text_line)
        except json.JSONDecodeError as e:
            if i == len(lines) and ends_cut:
                truncated = i
                break
            raise _bad(p, i, f"not JSON ({e.msg}, column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # a 5,000-digit number, deep nesting
            raise _bad(p, i, f"not JSON a monitor writes ({type(e).__name__})") from None
        if not isinstance(obj, dict):
            raise _bad(p, i, f"expected a JSON object, got {type(obj).__name__}")
        kind = obj.get("type")
        if kind == "sample":
            s = _sample(p, i, obj)
            servers.setdefault(s.url, ServerRecording(s.url)).samples.append(s)
        elif kind == "alert":
            a = _alert(p, i, obj)
            servers.setdefault(a.url, ServerRecording(a.url)).alerts.append(a)
        else:
            raise _bad(p, i, f"must be 'sample' or 'alert', got {kind!r}"[:120], "type")
    if not any(srv.samples for srv in servers.values()):
        raise _bad(p, 1, "no sample lines (only alert events): nothing to report")
    for srv in servers.values():
        srv.samples.sort(key=lambda x: x.t_unix)
        srv.alerts.sort(key=lambda x: x.t_unix)
    return Recording(p, servers, len(lines), truncated)


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Step:
    """The time from one sample to the next of the same server (not a gap)."""

    sample: RecordSample
    dt_s: float


def steps(samples: list[RecordSample]) -> tuple[list[Step], float]:
    """The steps between consecutive samples, and the seconds lost to gaps."""
    dts = [b.t_unix - a.t_unix for a, b in itertools.pairwise(samples)]
    pos = [d for d in dts if d > 0]
    if not pos:
        return [], 0.0
    limit = max(MIN_GAP_S, GAP_FACTOR * statistics.median(pos))
    out: list[Step] = []
    gaps = 0.0
    for s, d in zip(samples, dts, strict=False):
        if d > limit:
            gaps += d
        elif d > 0:
            out.append(Step(s, d))
    return out, gaps


#: Figures of one server's recording: (key, label with unit), in table order.
FIGURES: tuple[tuple[str, str], ...] = (
    ("server", "server"),
    ("start_utc", "start (UTC)"),
    ("duration_s", "duration s"),
    ("gaps_s", "gaps (no monitor) s"),
    ("samples", "samples"),
    ("samples_up", "samples read"),
    ("usage_max", "KV usage max (0-1)"),
    ("usage_mean", "KV usage mean of samples (0-1)"),
    ("time_above_s", "time above usage threshold s"),
    ("usage_above", "usage threshold (0-1)"),
    ("preemptions", "preemptions total"),
    ("preemptions_per_s_max", "preemptions/s max"),
    ("prefix_hit_rate", "prefix hit rate, whole recording (0-1)"),
    ("prefix_queries_tokens", "prefix query tokens"),
    ("waiting_max", "waiting requests max"),
    ("running_max", "running requests max"),
    ("ttft_p99_s_max", "TTFT p99 max s"),
    ("itl_p99_s_max", "ITL p99 max s"),
    ("unreachable_s", "unreachable s"),
    ("restarts", "restarts (counter resets)"),
    ("alerts_fired", "alerts fired"),
    ("alerts_resolved", "alerts resolved"),
)


def _max(xs: list[float | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return max(got) if got else None


def summarize(server: ServerRecording, usage_above: float | None = None) -> dict[str, Any]:
    """The figures of one server's recording (keys of :data:`FIGURES`; see the module)."""
    import datetime as dt

    from kvlab.stress.slo import DEFAULT_MAX_KV_USAGE

    above = DEFAULT_MAX_KV_USAGE if usage_above is None else usage_above
    ss = server.samples
    st, gaps = steps(ss)
    up = [s for s in ss if s.up]
    usage = [u for s in up if (u := s.get("kv_cache_usage_perc")) is not None]
    pre = [p for s in up if (p := s.get("preemptions")) is not None]
    q = h = 0.0
    seen_q = False
    for s in up:
        qs, rate = s.get("prefix_queries_tokens"), s.get("prefix_hit_rate")
        if qs is not None:
            seen_q = True
            q += qs
            h += (rate or 0.0) * qs
    usage_steps = [x for x in st if x.sample.up and x.sample.get("kv_cache_usage_perc") is not None]
    first = ss[0].t_unix if ss else None
    return {
        "url": server.url,
        "server": next((s.texts["dialect"] for s in up if s.texts["dialect"]), None),
        "start_utc": None
        if first is None
        else dt.datetime.fromtimestamp(first, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "duration_s": sum(x.dt_s for x in st) if ss else None,
        "gaps_s": gaps,
        "samples": len(ss),
        "samples_up": len(up),
        "usage_max": max(usage) if usage else None,
        "usage_mean": sum(usage) / len(usage) if usage else None,
        "time_above_s": float(
            sum(x.dt_s for x in usage_steps if (x.sample.get("kv_cache_usage_perc") or 0.0) > above)
        )
        if usage_steps
        else None,
        "usage_above": above,
        "preemptions": sum(pre) if pre else None,
        "preemptions_per_s_max": _max([s.get("preemptions_per_s") for s in up]),
        "prefix_hit_rate": (h / q if q > 0 else None) if seen_q else None,
        "prefix_queries_tokens": q if seen_q else None,
        "waiting_max": _max([s.get("num_requests_waiting") for s in up]),
        "running_max": _max([s.get("num_requests_running") for s in up]),
        "ttft_p99_s_max": _max([s.get("ttft_p99_s") for s in up]),
        "itl_p99_s_max": _max([s.get("itl_p99_s") for s in up]),
        "unreachable_s": float(sum(x.dt_s for x in st if not x.sample.up)),
        "restarts": sum(1 for s in up if s.counter_reset),
        "alerts_fired": sum(1 for a in server.alerts if a.event == "firing"),
        "alerts_resolved": sum(1 for a in server.alerts if a.event == "resolved"),
    }


def series(server: ServerRecording) -> dict[str, tuple[list[float], list[float | None]]]:
    """Per-sample series against seconds since the first sample (None where unknown)."""
    ss = server.samples
    if not ss:
        return {}
    t0 = ss[0].t_unix
    t = [s.t_unix - t0 for s in ss]
    out: dict[str, tuple[list[float], list[float | None]]] = {}
    for k in (
        "kv_cache_usage_perc",
        "prefix_hit_rate",
        "preemptions_per_s",
        "num_requests_running",
        "num_requests_waiting",
        "ttft_p99_s",
        "itl_p99_s",
    ):
        out[k] = (t, [s.get(k) if s.up else None for s in ss])
    return out


def format_figure(key: str, v: Any) -> str:
    """A figure for a table: ``-`` for unknown, fractions with 3 decimals, seconds with 1."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    x = float(v)
    if key.endswith("_s") and not key.startswith(("ttft", "itl")):
        return f"{x:,.1f}"
    if key.startswith(("ttft", "itl")):
        return f"{x:.4g}"
    if key in ("preemptions", "prefix_queries_tokens", "waiting_max", "running_max"):
        return f"{x:,.0f}" if x.is_integer() else f"{x:,.2f}"
    return f"{x:.3f}"


__all__ = [
    "FIGURES",
    "GAP_FACTOR",
    "MIN_GAP_S",
    "RecordAlert",
    "RecordSample",
    "Recording",
    "ServerRecording",
    "Step",
    "format_figure",
    "is_record_file",
    "read_record",
    "series",
    "steps",
    "summarize",
]
