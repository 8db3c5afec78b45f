"""RunResult and its run directory: save, load, atomic writes.

A run directory holds:

``summary.json``
    the summary (vLLM-named metrics, see :func:`kvlab.results.summary.summarize`),
    plus ``by_class``.
``requests.jsonl``
    one :class:`~kvlab.results.records.RequestRecord` per line, in request order.
``timeseries.csv``
    one row per sample; column ``t_s`` first, other columns per backend
    (``kv_cache_usage_perc``, ``num_requests_running``, ...).
``histograms.json``
    unsampled histograms: name -> {"unit", "edges", "counts"} (or raw values).
``run.json``
    the run configuration and provenance (kvlab version, seed, the wall time
    ``wall_s``: what differs between two runs of one seed is here only), and
    ``"status": "interrupted"`` when Ctrl-C stopped the run (the records then
    hold what finished; the rest are ``unfinished``).
``summary.md``
    a short human-readable summary.

Files are written atomically (temporary file + rename), ``summary.json``
last: a directory without it is not (yet) a run, whatever else it holds, so a
run cut short while saving is never read as complete. ``requests.jsonl`` can
be appended incrementally with :class:`RecordWriter`, so an interrupted run
keeps the records it finished. Everything is written in the calling
process: the library never forks (a host that wants a second process owns it).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path
from typing import Any

from kvlab.errors import KvlabError, OutputError, RunDirError
from kvlab.results.records import RequestRecord, records_to_jsonl


@dataclass
class RunResult:
    """Per-request records, time series, histograms and a summary of one run.

    Backends build it with :func:`kvlab.backends.base.build_result`, which
    fixes the summary's keys and the provenance's first ones.
    """

    records: list[RequestRecord]
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    timeseries: dict[str, list[float]] = field(default_factory=dict)
    histograms: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: ``"complete"``, or one of :data:`PARTIAL_STATUSES` (kept in ``run.json``).
    status: str = "complete"
    #: The records' latency samples (:func:`kvlab.results.summary.latency_samples`) that
    #: the summary was computed from, when known: the exports (``vllm_bench.json``,
    #: other percentiles) reuse them rather than sort every latency again. Not saved.
    latency: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        """Whether the run ended by itself (not stopped by Ctrl-C)."""
        return self.status == "complete"

    @property
    def backend(self) -> str | None:
        """The backend that made the run: ``provenance["backend"]``, or
        ``config["backend"]`` in run directories of live runs written before
        every backend recorded it in the provenance."""
        name = self.provenance.get("backend") or self.config.get("backend")
        return None if name is None else str(name)

    @property
    def wall_s(self) -> float | None:
        """The run's wall-clock seconds: ``provenance["wall_s"]``, or ``summary["wall_s"]``
        in run directories written before the wall time moved to ``run.json``; None when
        neither says."""
        for where in (self.provenance, self.summary):
            v = where.get("wall_s")
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        return None

    def save(self, out_dir: str | Path, *, records: bool = True) -> Path:
        """Write the run directory (atomically, file by file) and return it;
        ``records=False`` leaves ``requests.jsonl`` to the caller."""
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        if records:
            recs = self.records
            atomic_write_chunks(
                d / "requests.jsonl",
                (
                    records_to_jsonl(recs[i : i + RECORDS_PER_CHUNK])
                    for i in range(0, len(recs), RECORDS_PER_CHUNK)
                ),
            )
        atomic_write_text(d / "timeseries.csv", timeseries_to_csv(self.timeseries))
        atomic_write_text(d / "histograms.json", _dumps(self.histograms))
        run: dict[str, Any] = {"config": self.config, "provenance": self.provenance}
        if not self.complete:
            run["status"] = self.status
        atomic_write_text(d / "run.json", _dumps(run))
        atomic_write_text(d / "summary.json", _dumps(self.summary))  # last: see the module
        return d

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        """The run written to ``run_dir``; :class:`~kvlab.errors.RunDirError` naming the
        file (and line) when it is missing ``summary.json`` or a file is corrupt."""
        d = Path(run_dir)
        if not (d / "summary.json").is_file():
            if d.is_dir() and any((d / name).exists() for name in _RUN_FILES):
                raise RunDirError(
                    "not a run directory (no summary.json): an incomplete run, stopped "
                    "before it was saved",
                    path=d,
                )
            raise RunDirError(
                "not a run directory (no summary.json); run kvlab simulate or replay first",
                path=d,
            )
        summary = _json_object(d / "summary.json")
        check_summary(summary, d / "summary.json")
        records = []
        req = d / "requests.jsonl"
        if req.exists():
            for i, line in enumerate(_text(req).splitlines(), 1):
                if line.strip():
                    records.append(_record(req, i, line))
        ts: dict[str, list[float]] = {}
        tsp = d / "timeseries.csv"
        if tsp.exists():
            text = _text(tsp)
            try:
                ts = timeseries_from_csv(text)
            except (ValueError, IndexError) as e:
                raise RunDirError(f"not a kvlab time series: {e}", path=tsp) from None
        hist = _json_object(d / "histograms.json") if (d / "histograms.json").exists() else {}
        run = _json_object(d / "run.json") if (d / "run.json").exists() else {}
        for key in ("config", "provenance"):
            if not isinstance(run.get(key, {}), dict):
                raise RunDirError("must be a JSON object", path=d / "run.json", field=key)
        status = run.get("status", "complete")
        if status != "complete" and status not in PARTIAL_STATUSES:
            raise RunDirError(f"unknown status {status!r}", path=d / "run.json", field="status")
        return cls(
            records=records,
            summary=summary,
            config=run.get("config", {}),
            timeseries=ts,
            histograms=hist,
            provenance=run.get("provenance", {}),
            status=status,
        )


#: The files of a run directory besides ``summary.json`` (any one of them without it
#: marks a run stopped before it was saved).
_RUN_FILES: tuple[str, ...] = ("run.json", "requests.jsonl", "timeseries.csv", "histograms.json")

#: ``run.json`` statuses of a run that did not end by itself.
PARTIAL_STATUSES: tuple[str, ...] = ("interrupted",)

#: Summary counts, whole numbers; ``kvlab compare`` needs them there.
REQUIRED_SUMMARY_KEYS: tuple[str, ...] = ("num_requests", "num_completed")
#: Summary keys whose value is text (or null).
_TEXT_KEYS = frozenset({"stopped", "clock", "prefix_cache_source"})


def check_summary(summary: Mapping[str, Any], path: Path, *, required: Sequence[str] = ()) -> None:
    """Raise :class:`~kvlab.errors.RunDirError` naming ``path`` and the key when
    ``summary`` is not of a summary's shape: a key of ``required`` missing, a count
    (:data:`REQUIRED_SUMMARY_KEYS`) not a whole number, a number written as a string
    or not finite, text where text does not go, or a group (``by_class``) that is not
    an object of objects. Keys it does not know pass when their values are of a JSON
    kind a summary holds. :meth:`RunResult.load` checks the shape; ``kvlab compare``
    also requires :data:`REQUIRED_SUMMARY_KEYS` (what it compares)."""
    for key in required:
        if key not in summary:
            raise RunDirError("missing (not a kvlab summary)", path=path, field=key)
    for key in REQUIRED_SUMMARY_KEYS:
        v = summary.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise RunDirError(f"must be a whole number >= 0, got {v!r}", path=path, field=key)
    _check_values(summary, path, "")
    groups = summary.get("by_class", {})
    if groups is not None and not isinstance(groups, dict):
        raise RunDirError("must be a JSON object", path=path, field="by_class")
    for name, group in (groups or {}).items():
        if not isinstance(group, dict):
            raise RunDirError("must be a JSON object", path=path, field=f"by_class.{name}")


def _check_values(obj: Mapping[str, Any], path: Path, prefix: str) -> None:
    for key, v in obj.items():
        where = f"{prefix}{key}"
        if key in _TEXT_KEYS:
            if v is not None and not isinstance(v, str):
                raise RunDirError(f"must be text, got {v!r}", path=path, field=where)
        elif isinstance(v, str) and _numeric_text(v):
            raise RunDirError(f"a number written as text: {v!r}", path=path, field=where)
        elif isinstance(v, float) and not math.isfinite(v):
            raise RunDirError(f"not a finite number: {v!r}", path=path, field=where)
        elif isinstance(v, dict) and prefix.count(".") < 3:
            _check_values(v, path, where + ".")


def _numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RunDirError(f"not UTF-8 text (byte {e.start})", path=path) from None
    except OSError as e:
        raise RunDirError(f"cannot be read: {e.strerror or e}", path=path) from None


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; RunDirError when it is not one."""
    try:
        value = json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise RunDirError(f"not JSON: {e.msg}", path=path, line=e.lineno) from None
    except RecursionError:
        raise RunDirError("not JSON: nested too deeply", path=path) from None
    if not isinstance(value, dict):
        raise RunDirError("must be a JSON object", path=path)
    return value


def _record(path: Path, line_no: int, line: str) -> RequestRecord:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise RunDirError(f"not JSON: {e.msg}", path=path, line=line_no) from None
    except RecursionError:
        raise RunDirError("not JSON: nested too deeply", path=path, line=line_no) from None
    if not isinstance(value, dict):
        raise RunDirError("a record must be a JSON object", path=path, line=line_no)
    try:
        return RequestRecord.from_dict(value)
    except (TypeError, ValueError) as e:
        raise RunDirError(f"not a request record: {e}", path=path, line=line_no) from None


class RecordWriter(contextlib.ExitStack):
    """Appends records to ``requests.jsonl`` as they finish (flushed per line). The
    file is created by the first record: a run that stops before any request
    ended leaves none behind (never an empty one beside no summary).

    A context manager (an :class:`contextlib.ExitStack` holding the file once it is
    open): ``close()`` or leaving the ``with`` block closes it.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: Any = None

    def write(self, rec: RequestRecord) -> None:
        if self._f is None:
            self._f = self.enter_context(self.path.open("w", encoding="utf-8"))
        self._f.write(json.dumps(rec.to_dict()) + "\n")
        self._f.flush()


#: Records encoded at a time for ``requests.jsonl``: memory for the text stays
#: bounded (some 20 MB) whatever the run's size; the bytes are the same.
RECORDS_PER_CHUNK = 50_000


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    atomic_write_chunks(path, (text,))


def atomic_write_chunks(path: str | Path, chunks: Iterable[str]) -> None:
    """Write the concatenated ``chunks`` to ``path`` via a temporary file in the same
    directory and an atomic rename. The file gets the permissions a plain ``open``
    would (0666 less the umask), so teammates can read shared run directories."""
    p = Path(path)
    tmp = p.parent / f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, p)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, KvlabError):
            why = e.strerror or type(e).__name__
            raise OutputError(f"cannot write {p}: {why}") from None
        raise


def timeseries_to_csv(ts: Mapping[str, Sequence[float]]) -> str:
    if not ts:
        return ""
    cols = list(ts)
    n = max(len(v) for v in ts.values())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    kinds = [set(map(type, v)) for v in ts.values()]
    if all(k <= {float, int} for k in kinds):
        # numbers never need CSV quoting, and a row always has a cell of the longest column
        cells = [
            _fmt_column(v, k) + [""] * (n - len(v)) for v, k in zip(ts.values(), kinds, strict=True)
        ]
        buf.write("".join(map("%s\n".__mod__, map(",".join, zip(*cells, strict=True)))))
        return buf.getvalue()
    for i in range(n):
        w.writerow([_fmt(ts[c][i]) if i < len(ts[c]) else "" for c in cols])
    return buf.getvalue()


def _fmt_column(values: Sequence[float], kinds: set[type]) -> list[str]:
    """:func:`_fmt` of each value (exact floats or ints; ``kinds``: their types): a
    float column at once, as ``repr`` but whole numbers under 1e15 as ints."""
    if kinds != {float}:
        return [_fmt_number(x) for x in values]
    if all(map(float.is_integer, values)) and min(values) > -1e15 and max(values) < 1e15:
        return list(map(str, map(int, values)))
    out = list(map(float.__repr__, values))
    for i in compress(range(len(values)), map(float.is_integer, values)):
        if abs(values[i]) < 1e15:
            out[i] = str(int(values[i]))
    return out


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
    "PARTIAL_STATUSES",
    "REQUIRED_SUMMARY_KEYS",
    "RecordWriter",
    "RunResult",
    "atomic_write_text",
    "check_summary",
    "timeseries_from_csv",
    "timeseries_to_csv",
]
