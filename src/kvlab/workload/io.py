"""Read and write kvlab workload files (JSONL, format version 1).

A file is an optional header line followed by one request per line::

    {"kvlab_workload": 1, "name": "chat", "generator": "chat", "params": {...}, "seed": 0}
    {"id": "r0", "session": "u0", "turn": 0, "arrival_s": 0.0, "class": "chat",
     "segments": [{"kind": "system", "tokens": 512, "content": "sys", "retention": "system"},
                  {"kind": "user", "tokens": 40, "content": "u0.t0", "retention": "context"}],
     "output_tokens": 128}

The format is described by ``schema.json`` next to this module (JSON Schema
2020-12) and in ``docs/workloads.md``. Loading validates every line with a
hand-written validator that agrees with the schema (a test checks both on the
same examples) and then checks what a schema cannot: the prompt has at least
one token, request ids are unique, a session's first request has
``arrival_s`` and its turns increase in file order. Errors are
:class:`~kvlab.errors.WorkloadError` naming the file, the 1-based line and the
field. Blank lines and lines starting with ``#`` are skipped. Files ending in
``.gz`` are gzip-compressed.

Order: open-loop requests should be sorted by ``arrival_s``. An unsorted file
is an error unless ``sort=True``, which orders requests stably by start time
(a closed-loop turn stays right after the previous turn of its session). A
file without requests is an error unless ``allow_empty=True``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError, WorkloadError
from kvlab.workload.records import WORKLOAD_FORMAT_VERSION, Request, Segment, Workload
from kvlab.workload.textfile import open_text, read_errors

HEADER_KEY = "kvlab_workload"
HEADER_FIELDS: frozenset[str] = frozenset(
    {HEADER_KEY, "name", "generator", "params", "seed", "description"}
)
REQUEST_FIELDS: frozenset[str] = frozenset(
    {
        "id",
        "session",
        "turn",
        "arrival_s",
        "think_time_s",
        "class",
        "priority",
        "segments",
        "output_tokens",
        "output_content",
    }
)
SEGMENT_FIELDS: frozenset[str] = frozenset({"kind", "tokens", "content", "retention"})


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of one workload line (package data ``schema.json``)."""
    text = resources.files("kvlab.workload").joinpath("schema.json").read_text("utf-8")
    out: dict[str, Any] = json.loads(text)
    return out


def validate_header(obj: Mapping[str, Any]) -> None:
    """Check a header object; raises WorkloadError naming the field."""
    _no_extra_fields(obj, HEADER_FIELDS, "")
    version = obj.get(HEADER_KEY)
    if version != WORKLOAD_FORMAT_VERSION or isinstance(version, bool):
        raise WorkloadError(
            f"unsupported format version {version!r}; this kvlab reads version "
            f"{WORKLOAD_FORMAT_VERSION}",
            field=HEADER_KEY,
        )
    if "name" in obj and not isinstance(obj["name"], str):
        raise WorkloadError("must be a string", field="name")
    if "description" in obj and not isinstance(obj["description"], str):
        raise WorkloadError("must be a string", field="description")
    gen = obj.get("generator")
    if gen is not None and not isinstance(gen, str):
        raise WorkloadError("must be a string or null", field="generator")
    if "params" in obj and not isinstance(obj["params"], dict):
        raise WorkloadError("must be an object", field="params")
    seed = obj.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise WorkloadError("must be an integer or null", field="seed")


def parse_request(
    obj: Any, segment_cache: dict[tuple[str, int, str, str], Segment] | None = None
) -> Request:
    """Validate one request object (schema rules) and build the Request; ``segment_cache``
    as in :meth:`Request.from_dict`."""
    if not isinstance(obj, dict):
        raise WorkloadError("a request must be a JSON object")
    _no_extra_fields(obj, REQUEST_FIELDS, "")
    for key, value in obj.items():
        if value is None:
            raise WorkloadError("must not be null (leave the field out instead)", field=key)
    rid = obj.get("id")
    if isinstance(rid, float):
        raise WorkloadError("must be a string or an integer", field="id")
    session = obj.get("session")
    if isinstance(session, bool | float):
        raise WorkloadError("must be a string or an integer", field="session")
    segs = obj.get("segments")
    if isinstance(segs, list):
        for i, s in enumerate(segs):
            if isinstance(s, dict):
                _no_extra_fields(s, SEGMENT_FIELDS, f"segments[{i}].")
                for key, value in s.items():
                    if value is None:
                        raise WorkloadError("must not be null", field=f"segments[{i}].{key}")
    return Request.from_dict(obj, segment_cache)


def read_workload(path: str | Path, *, sort: bool = False, allow_empty: bool = False) -> Workload:
    """Load and validate a workload file; see the module docstring for the rules."""
    p = Path(path)
    if not p.exists():
        raise WorkloadError("no such file; generate one with `kvlab workload gen`", path=p)
    header: dict[str, Any] = {}
    entries: list[tuple[int, Request]] = []
    segment_cache: dict[tuple[str, int, str, str], Segment] = {}
    with read_errors(p), open_text(p, "r") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkloadError(
                    f"invalid JSON: {e.msg} (column {e.colno})", path=p, line=lineno
                ) from None
            try:
                if isinstance(obj, dict) and HEADER_KEY in obj:
                    if entries or header:
                        raise WorkloadError("the header must be the first line", field=HEADER_KEY)
                    validate_header(obj)
                    header = obj
                    continue
                entries.append((lineno, parse_request(obj, segment_cache)))
            except WorkloadError as e:
                raise WorkloadError(_bare(e), path=p, line=lineno, field=e.field) from None
    if not entries and not allow_empty:
        raise WorkloadError("the workload has no requests", path=p)
    requests = check_order(entries, path=p, sort=sort)
    meta = {k: v for k, v in header.items() if k not in (HEADER_KEY, "name")}
    return Workload(requests=requests, name=str(header.get("name", p.stem)), meta=meta)


def check_order(
    entries: Iterable[tuple[int, Request]], *, path: str | Path | None = None, sort: bool = False
) -> tuple[Request, ...]:
    """Check ids, session structure and arrival order; return the requests in run order.

    ``entries`` are (line number, request) pairs. With ``sort`` an unsorted
    open-loop order is fixed by a stable sort on start time instead of raised.
    """
    seen: set[str] = set()
    last_turn: dict[str, int] = {}
    keys: dict[str, float] = {}
    ordered: list[tuple[float, int, Request]] = []
    prev_arrival: tuple[float, int] | None = None
    for idx, (lineno, r) in enumerate(entries):
        if r.request_id in seen:
            raise WorkloadError(
                f"duplicate request id {r.request_id!r}", path=path, line=lineno, field="id"
            )
        seen.add(r.request_id)
        key = r.arrival_s
        if r.session_id is not None:
            prev = last_turn.get(r.session_id)
            if prev is None and r.arrival_s is None:
                raise WorkloadError(
                    "the first request of a session needs arrival_s",
                    path=path,
                    line=lineno,
                    field="arrival_s",
                )
            if prev is not None and r.turn <= prev:
                raise WorkloadError(
                    f"turns of session {r.session_id!r} must increase (turn {r.turn} after {prev})",
                    path=path,
                    line=lineno,
                    field="turn",
                )
            last_turn[r.session_id] = r.turn
            if key is None:
                key = keys[r.session_id]
            keys[r.session_id] = key
        assert key is not None
        if r.arrival_s is not None:
            if prev_arrival is not None and r.arrival_s < prev_arrival[0] and not sort:
                raise WorkloadError(
                    f"arrival_s {r.arrival_s} is earlier than {prev_arrival[0]} on line "
                    f"{prev_arrival[1]}; sort the file by arrival_s (or load with sort=True, "
                    "`--sort` on the command line)",
                    path=path,
                    line=lineno,
                    field="arrival_s",
                )
            prev_arrival = (r.arrival_s, lineno)
        ordered.append((key, idx, r))
    if sort:
        ordered.sort(key=lambda t: (t[0], t[1]))
    return tuple(r for _, _, r in ordered)


def workload_lines(w: Workload) -> Iterator[str]:
    """The lines of ``w``'s file: the header, then one compact JSON object per request."""
    header: dict[str, Any] = {HEADER_KEY: WORKLOAD_FORMAT_VERSION, "name": w.name}
    for k in ("generator", "params", "seed", "description"):
        if k in w.meta:
            header[k] = w.meta[k]
    yield json.dumps(header, separators=(",", ":"), allow_nan=False)
    for r in w.requests:
        yield json.dumps(r.to_dict(), separators=(",", ":"), allow_nan=False)


def write_workload(w: Workload, path: str | Path) -> Path:
    """Write ``w`` atomically (temporary file + rename); ``.gz`` paths are compressed.

    The file gets the permissions of a newly created file under the process umask (as
    ``open`` would give it). A path that cannot be written (a directory, a parent that is a
    file, no permission) is a ConfigError naming it.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a directory; give a file name for the workload")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as e:
        raise ConfigError(f"cannot create {p}: {e.strerror or e}") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with open_text(Path(tmp), "w", gz=p.suffix == ".gz") as f:
            for line in workload_lines(w):
                f.write(line + "\n")
        os.replace(tmp, p)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise ConfigError(f"cannot write {p}: {e.strerror or e}") from None
        raise
    return p


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _no_extra_fields(obj: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise WorkloadError(
            f"unknown field; allowed: {', '.join(sorted(allowed))}", field=prefix + extra[0]
        )


def _bare(e: WorkloadError) -> str:
    """The message of ``e`` without its location prefix."""
    msg = str(e)
    if e.field is not None:
        msg = msg.split(f"field {e.field!r}: ", 1)[-1]
    return msg


__all__ = [
    "check_order",
    "parse_request",
    "read_workload",
    "schema",
    "validate_header",
    "workload_lines",
    "write_workload",
]
