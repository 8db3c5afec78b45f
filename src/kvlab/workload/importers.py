"""Importers from public LLM-serving traces to a kvlab :class:`Workload`.

Three formats are read (see docs/traces.md for their fields and sources):

- **Mooncake** JSONL (Kimi, FAST'25): ``timestamp`` (ms), ``input_length``,
  ``output_length``, ``hash_ids``. Each hash id names one 512-token block of the
  prompt; equal ids mean identical content. A request becomes one segment per
  hash id, content ``f"mooncake:{id}"``, 512 tokens each except the last, which
  holds the remaining ``input_length - 512 * (len(hash_ids) - 1)`` tokens.
  Because a segment of n tokens is the first n tokens of its content stream,
  the simulator's content-keyed blocks share exactly when the ids are equal, at
  any block size that divides 512. At a block size that does not divide 512 a
  block straddles two hash ids; its key names both pieces, so equal id
  sequences still share and a different id never does.
- **Azure LLM inference trace 2023** CSV (Splitwise): ``TIMESTAMP``,
  ``ContextTokens``, ``GeneratedTokens``. No prefix information: every request
  is one segment of unique content.
- **Vidur** length CSV: ``num_prefill_tokens``, ``num_decode_tokens`` (other
  columns ignored). No timestamps: all arrivals are 0 unless ``rate_per_s`` is
  given, then arrivals are a seeded Poisson process.

Edge cases, the same in every importer: a row with 0 prompt tokens cannot be a
request and is skipped (counted in ``meta["num_skipped_empty_prompt"]``); a row
with 0 output tokens becomes a 1-token request (a server always produces the
first token from prefill; counted in ``meta["num_output_clamped"]``). A malformed
row, a negative count, or a negative/NaN/infinite time raises
:class:`~kvlab.errors.WorkloadError` naming the file, line and field.
Requests come out sorted by arrival (stable); ``request_id`` is the 0-based
index of the row among the data rows of the file.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import chain, repeat
from pathlib import Path
from typing import Any, TypeVar

from kvlab.errors import ConfigError, WorkloadError
from kvlab.workload import bulk
from kvlab.workload.records import Request, Segment, Workload

#: Tokens per Mooncake hash id (Mooncake trace README: "block size 512").
MOONCAKE_BLOCK_TOKENS = 512

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_VIDUR_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")

T = TypeVar("T")


class _Counts:
    """Rows skipped or adjusted while importing (reported in ``Workload.meta``)."""

    def __init__(self) -> None:
        self.skipped_empty_prompt = 0
        self.output_clamped = 0

    def output_tokens(self, n: int) -> int:
        if n == 0:
            self.output_clamped += 1
            return 1
        return n

    def meta(self) -> dict[str, int]:
        return {
            "num_skipped_empty_prompt": self.skipped_empty_prompt,
            "num_output_clamped": self.output_clamped,
        }


# --------------------------------------------------------------------------- Mooncake


def read_mooncake(path: str | Path, *, name: str | None = None) -> Workload:
    """Read a Mooncake JSONL trace (one request per line)."""
    p = Path(path)
    line_nos, values = _json_rows(p, _read_lines(p))
    ts_ms, n_in, n_out, ids = _mooncake_columns(p, line_nos, values)
    del values  # the rows' dicts: only the hash id lists are kept
    segments = _mooncake_segments(p, line_nos, n_in, ids)
    counts = _Counts()
    kept: Sequence[int] = range(len(n_in))
    if 0 in n_in:  # rows without a prompt (and so without ids) are skipped
        kept = [i for i, n in enumerate(n_in) if n]
        ts_ms = [ts_ms[i] for i in kept]
        n_in, n_out, ids = [n_in[i] for i in kept], [n_out[i] for i in kept], [ids[i] for i in kept]
    counts.skipped_empty_prompt = len(line_nos) - len(kept)
    prompts = list(map(tuple, map(map, repeat(segments.__getitem__), ids)))
    counts.output_clamped = n_out.count(0)
    outputs = [o or 1 for o in n_out] if counts.output_clamped else n_out
    arrivals = list(map((1000.0).__rtruediv__, ts_ms))  # each ts_ms / 1000.0
    rids = list(map(str, kept))
    # prompt tokens: the segments' tokens, 512 per id and the rest in the last
    reqs = bulk.open_loop_requests(rids, prompts, outputs, arrivals, n_in)
    meta: dict[str, Any] = {"source_format": "mooncake", "source": p.name}
    meta["num_rows"] = len(line_nos)
    meta["block_tokens"] = MOONCAKE_BLOCK_TOKENS
    meta.update(counts.meta())
    return Workload(requests=_sorted(arrivals, reqs), name=name or p.stem, meta=meta)


def _mooncake_columns(
    p: Path, line_nos: Sequence[int], values: list[Any]
) -> tuple[list[float], list[int], list[int], list[list[Any]]]:
    """The validated columns of a Mooncake trace: timestamps (ms), input and output
    lengths, hash id lists (each as long as its input length needs).

    Checked column by column; if any check fails, the rows are checked one by one
    (:func:`_mooncake_row`), which names the first bad line and field, or, for values
    that are valid but unusual (a count written ``12.0``), normalizes them.
    """
    try:
        columns: list[list[Any]] = [
            list(map(dict.get, values, repeat(key)))
            for key in ("timestamp", "input_length", "output_length", "hash_ids")
        ]
        ts, n_in, n_out, ids = columns
        ts_ms = list(map(float, ts)) if set(map(type, ts)) <= {int, float} else None
    except (TypeError, OverflowError):  # a row that is not an object, a huge timestamp
        ts_ms = None
    if (
        ts_ms is not None
        and all(map(math.isfinite, ts_ms))
        and min(ts_ms, default=0.0) >= 0
        and set(map(type, n_in)) | set(map(type, n_out)) <= {int}
        and min(n_in, default=0) >= 0
        and min(n_out, default=0) >= 0
        and set(map(type, ids)) <= {list}
        and list(map(len, ids)) == [-(-n // MOONCAKE_BLOCK_TOKENS) for n in n_in]
    ):
        return ts_ms, n_in, n_out, ids
    rows = [_mooncake_row(p, n, d) for n, d in zip(line_nos, values, strict=True)]
    return (
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
    )


def _mooncake_row(p: Path, line_no: int, d: Any) -> tuple[int, float, int, int, list[Any]]:
    """Validate one Mooncake record: (line, timestamp ms, input, output, hash ids)."""
    if not isinstance(d, dict):
        raise WorkloadError("each line must be a JSON object", path=p, line=line_no)
    ts_ms = _time(d.get("timestamp"), p, line_no, "timestamp")
    n_in = _count(d.get("input_length"), p, line_no, "input_length")
    n_out = _count(d.get("output_length"), p, line_no, "output_length")
    ids = d.get("hash_ids")
    if not isinstance(ids, list):
        raise WorkloadError("must be a list of integers", path=p, line=line_no, field="hash_ids")
    n_ids = -(-n_in // MOONCAKE_BLOCK_TOKENS)
    if len(ids) != n_ids:
        raise WorkloadError(
            f"has {len(ids)} ids but input_length {n_in} needs ceil({n_in}/512) = {n_ids}",
            path=p,
            line=line_no,
            field="hash_ids",
        )
    return line_no, ts_ms, n_in, n_out, ids


def _mooncake_segments(
    p: Path, line_nos: Sequence[int], n_in: list[int], ids: list[list[Any]]
) -> dict[Any, Segment]:
    """The Segment of each key in ``ids``: one shared Segment per hash id (512 tokens).

    A request whose last id covers fewer than 512 tokens gets that id replaced
    in ``ids`` by the key ``(id, tokens)``, whose Segment holds those tokens.
    Raises WorkloadError for an id that is not an integer.
    """
    full = MOONCAKE_BLOCK_TOKENS
    try:
        unique = set(chain.from_iterable(ids))
    except TypeError:  # an unhashable id (a list or object); find its line below
        unique = set()
    if not unique or set(map(type, unique)) != {int}:
        for line_no, row in zip(line_nos, ids, strict=True):
            for h in row:
                if type(h) is not int:
                    raise WorkloadError(
                        f"ids must be integers, got {h!r}", path=p, line=line_no, field="hash_ids"
                    )
    ordered = list(unique)
    contents = list(map("mooncake:".__add__, map(str, ordered)))
    table: dict[Any, Segment] = dict(
        zip(ordered, bulk.segments("context", [full] * len(ordered), contents), strict=True)
    )
    partial: dict[tuple[Any, int], None] = {}
    for n, row in zip(n_in, ids, strict=True):
        last = n - full * (len(row) - 1)
        if last != full:
            row[-1] = key = (row[-1], last)
            partial[key] = None
    keys = list(partial)
    tokens = [last for _, last in keys]
    contents = [f"mooncake:{h}" for h, _ in keys]
    table.update(zip(keys, bulk.segments("context", tokens, contents), strict=True))
    return table


def _json_rows(p: Path, lines: list[str]) -> tuple[Sequence[int], list[Any]]:
    """Every non-empty line parsed as JSON: (their 1-based line numbers, their values)."""
    texts = list(filter(str.strip, lines))
    if len(texts) == len(lines):
        line_nos: Sequence[int] = range(1, len(lines) + 1)
    else:
        line_nos = [i + 1 for i, s in enumerate(lines) if s.strip()]
    try:  # one json.loads call over the whole file is much faster than one per line
        values = json.loads("[" + ",".join(texts) + "]")
        if len(values) == len(texts):
            return line_nos, values
    except ValueError:
        pass
    values = []
    for n, s in zip(line_nos, texts, strict=True):
        try:
            values.append(json.loads(s))
        except ValueError as e:
            raise WorkloadError(f"invalid JSON: {e}", path=p, line=n) from None
    return line_nos, values


# --------------------------------------------------------------------------- Azure


def read_azure(path: str | Path, *, name: str | None = None) -> Workload:
    """Read an Azure LLM inference trace CSV (2023 or 2024 layout).

    Arrivals are seconds after the earliest ``TIMESTAMP`` (ISO date-time,
    resolution 1 microsecond; a 7th fractional digit is dropped).
    """
    return _read_azure(Path(path), name)


def _read_azure(p: Path, name: str | None) -> Workload:
    header, line_nos, body = _csv_header(p, _read_lines(p), _AZURE_COLUMNS)
    i_ts, i_in, i_out = (header.index(c) for c in _AZURE_COLUMNS)
    cells = _csv_cells(p, line_nos, body, len(header))
    stamps = _column(p, line_nos, cells[i_ts], "TIMESTAMP", datetime.fromisoformat)
    n_in = _token_column(p, line_nos, cells[i_in], "ContextTokens")
    n_out = _token_column(p, line_nos, cells[i_out], "GeneratedTokens")
    t0 = min(stamps, default=None)
    arrivals = [(t - t0).total_seconds() for t in stamps] if t0 is not None else []
    counts = _Counts()
    arrivals, reqs = _single_segment_requests(f"azure:{p.stem}:", n_in, n_out, arrivals, counts)
    meta: dict[str, Any] = {"source_format": "azure", "source": p.name, "num_rows": len(body)}
    meta.update(counts.meta())
    return Workload(requests=_sorted(arrivals, reqs), name=name or p.stem, meta=meta)


def _single_segment_requests(
    content_prefix: str,
    n_in: list[int],
    n_out: list[int],
    arrivals: list[float],
    counts: _Counts,
) -> tuple[list[float], list[Request]]:
    """One request per row with a prompt, its prompt one segment of unique content;
    returns the requests and their arrivals."""
    if len(n_out) != len(n_in) or len(arrivals) != len(n_in):
        raise ValueError("columns of different lengths")
    kept = [i for i, tokens in enumerate(n_in) if tokens != 0]
    counts.skipped_empty_prompt += len(n_in) - len(kept)
    if len(kept) < len(n_in):
        n_in = [n_in[i] for i in kept]
        n_out = [n_out[i] for i in kept]
        arrivals = [arrivals[i] for i in kept]
    counts.output_clamped += n_out.count(0)
    outputs = [o or 1 for o in n_out] if 0 in n_out else n_out
    ids = list(map(str, kept))
    segs = bulk.segments("user", n_in, list(map(content_prefix.__add__, ids)))
    prompts = list(zip(segs))  # one-segment tuples
    return arrivals, bulk.open_loop_requests(ids, prompts, outputs, arrivals, n_in)


# --------------------------------------------------------------------------- Vidur


def read_vidur(
    path: str | Path,
    *,
    rate_per_s: float | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Workload:
    """Read a Vidur length CSV (``num_prefill_tokens``, ``num_decode_tokens``).

    Without ``rate_per_s`` every request arrives at 0. With it, inter-arrival
    gaps are exponential with mean ``1 / rate_per_s`` drawn from
    ``numpy.random.default_rng(seed)``; the first request arrives after one gap.
    """
    if rate_per_s is not None and not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ConfigError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
    return _read_vidur(Path(path), rate_per_s, seed, name)


def _read_vidur(p: Path, rate_per_s: float | None, seed: int, name: str | None) -> Workload:
    header, line_nos, body = _csv_header(p, _read_lines(p), _VIDUR_COLUMNS)
    i_in, i_out = (header.index(c) for c in _VIDUR_COLUMNS)
    cells = _csv_cells(p, line_nos, body, len(header))
    n_in = _token_column(p, line_nos, cells[i_in], "num_prefill_tokens")
    n_out = _token_column(p, line_nos, cells[i_out], "num_decode_tokens")
    if rate_per_s is None:
        arrivals = [0.0] * len(body)
    else:
        import numpy as np

        gaps = np.random.default_rng(seed).exponential(1.0 / rate_per_s, size=len(body))
        arrivals = np.cumsum(gaps).tolist()
    counts = _Counts()
    arrivals, reqs = _single_segment_requests(f"vidur:{p.stem}:", n_in, n_out, arrivals, counts)
    meta: dict[str, Any] = {"source_format": "vidur", "source": p.name, "num_rows": len(body)}
    meta["rate_per_s"] = rate_per_s
    meta["seed"] = seed if rate_per_s is not None else None
    meta.update(counts.meta())
    return Workload(requests=_sorted(arrivals, reqs), name=name or p.stem, meta=meta)


# --------------------------------------------------------------------------- helpers


@contextmanager
def read_errors(p: Path) -> Iterator[None]:
    """Turn the errors of reading ``p`` (missing, not UTF-8, unreadable) into WorkloadError."""
    try:
        yield
    except FileNotFoundError:
        raise WorkloadError("no such file", path=p) from None
    except UnicodeDecodeError as e:
        raise WorkloadError(f"not UTF-8 text: {e.reason}", path=p) from None
    except (OSError, EOFError) as e:
        raise WorkloadError(f"cannot read: {getattr(e, 'strerror', None) or e}", path=p) from None


def _read_lines(p: Path) -> list[str]:
    with read_errors(p):
        if p.suffix == ".gz":
            with gzip.open(p, "rt", encoding="utf-8") as f:
                text = f.read()
        else:
            text = p.read_text(encoding="utf-8")
    return text.splitlines()


def _csv_header(
    p: Path, lines: list[str], required: tuple[str, ...]
) -> tuple[list[str], Sequence[int], list[str]]:
    """The header's column names, and the non-empty data lines with their line numbers."""
    texts = list(filter(str.strip, lines))
    if not texts:
        raise WorkloadError("empty file: expected a CSV header", path=p, line=1)
    if len(texts) == len(lines):
        line_nos: Sequence[int] = range(1, len(lines) + 1)
    else:
        line_nos = [i + 1 for i, s in enumerate(lines) if s.strip()]
    header = [c.strip().strip('"').lstrip("\ufeff") for c in texts[0].split(",")]
    missing = [c for c in required if c not in header]
    if missing:
        raise WorkloadError(
            f"CSV header lacks column(s) {', '.join(missing)}; it has {', '.join(header)}",
            path=p,
            line=line_nos[0],
        )
    return header, line_nos[1:], texts[1:]


def _csv_cells(p: Path, line_nos: Sequence[int], body: list[str], width: int) -> list[list[str]]:
    """The cells of ``body`` (lines of ``width`` comma-separated fields), column by column."""
    if not body:
        return [[] for _ in range(width)]
    if set(map(str.count, body, repeat(","))) == {width - 1}:
        cells = ",".join(body).split(",")
        return [cells[i::width] for i in range(width)]
    for line_no, line in zip(line_nos, body, strict=True):
        n = line.count(",") + 1
        if n != width:
            raise WorkloadError(
                f"expected {width} comma-separated fields, got {n}", path=p, line=line_no
            )
    raise AssertionError("unreachable: some line has a different width")


def _column(
    p: Path, line_nos: Sequence[int], cells: list[str], name: str, parse: Callable[[str], T]
) -> list[T]:
    """``cells`` parsed by ``parse``; a failure names its line and field."""
    try:
        return list(map(parse, cells))
    except ValueError:
        pass
    for line_no, cell in zip(line_nos, cells, strict=True):
        try:
            parse(cell)
        except ValueError:
            raise WorkloadError(
                f"cannot parse {cell.strip()!r}", path=p, line=line_no, field=name
            ) from None
    raise AssertionError("unreachable: some cell failed to parse")


def _token_column(p: Path, line_nos: Sequence[int], cells: list[str], name: str) -> list[int]:
    """``cells`` as token counts >= 0 (whole numbers such as ``12.0`` are accepted)."""
    try:
        values = list(map(int, cells))
        if min(values, default=0) >= 0:
            return values
    except ValueError:
        pass
    return [_int_cell(c, p, n, name) for n, c in zip(line_nos, cells, strict=True)]


def _int_cell(cell: str, p: Path, line_no: int, name: str) -> int:
    try:
        v = int(cell)
    except ValueError:
        try:
            x = float(cell)
        except ValueError:
            x = math.nan
        if not (math.isfinite(x) and x == int(x)):
            raise WorkloadError(
                f"must be a whole number of tokens, got {cell.strip()!r}",
                path=p,
                line=line_no,
                field=name,
            ) from None
        v = int(x)
    if v < 0:
        raise WorkloadError(f"must be >= 0, got {v}", path=p, line=line_no, field=name)
    return v


def _count(v: Any, p: Path, line_no: int, name: str) -> int:
    if type(v) is int:
        if v < 0:
            raise WorkloadError(f"must be >= 0, got {v}", path=p, line=line_no, field=name)
        return v
    if isinstance(v, float) and math.isfinite(v) and v == int(v) and v >= 0:
        return int(v)
    raise WorkloadError(f"must be an integer >= 0, got {v!r}", path=p, line=line_no, field=name)


def _time(v: Any, p: Path, line_no: int, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise WorkloadError(f"must be a number, got {v!r}", path=p, line=line_no, field=name)
    x = float(v)
    if not math.isfinite(x) or x < 0:
        raise WorkloadError(
            f"must be a finite number >= 0, got {v!r}", path=p, line=line_no, field=name
        )
    return x


def _sorted(arrivals: list[float], reqs: list[Request]) -> tuple[Request, ...]:
    """``reqs`` in stable order of ``arrivals`` (Python's sort is stable, and linear when
    the arrivals are already sorted)."""
    order = sorted(range(len(reqs)), key=arrivals.__getitem__)
    return tuple(map(reqs.__getitem__, order))


__all__ = ["MOONCAKE_BLOCK_TOKENS", "read_azure", "read_mooncake", "read_vidur"]
