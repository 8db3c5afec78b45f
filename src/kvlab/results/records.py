"""RequestRecord: the life of one request, its statuses, and its ``requests.jsonl`` encoding.

Time units are seconds (``*_s``) from the start of the run; token counts are
tokens. Definitions (REFERENCE section 3):

* TTFT = first token time - arrival (send) time.
* TPOT = (E2E - TTFT) / (output_tokens - 1), for requests with >= 2 tokens.
* E2E = finish time - arrival time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
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

    The four counts (``cached_tokens``, ``computed_tokens``,
    ``offload_hit_tokens``, ``num_preemptions``) start at 0 for a backend
    that counts them itself (the simulator, transformers in process); ``None``
    means unknown, never 0: a live server reports cached tokens only in
    ``usage.prompt_tokens_details`` when it reports them at all, and never its
    preemptions or tiers per request. In ``requests.jsonl`` a field left out
    is ``None``, the counts included (:meth:`from_dict`).
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
    cached_tokens: int | None = 0
    computed_tokens: int | None = 0
    offload_hit_tokens: int | None = 0
    num_preemptions: int | None = 0
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
        """The record of a ``requests.jsonl`` line: unknown keys are ignored, and a
        count left out is ``None`` (unknown), as :meth:`to_dict` leaves it out."""
        names = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = dict.fromkeys(COUNT_FIELDS)
        kwargs.update((k, v) for k, v in d.items() if k in names)
        return cls(**kwargs)


#: The per-request counts that are ``None`` when unknown (see :class:`RequestRecord`).
COUNT_FIELDS: tuple[str, ...] = (
    "cached_tokens",
    "computed_tokens",
    "offload_hit_tokens",
    "num_preemptions",
)


_RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))


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
    columns = [list(map(get, records)) for get in _GETTERS]  # (twice as fast as by rows)
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
    if not cells:  # every column constant: the template, its "%%" unescaped, per record
        return (line % ()) * len(records)
    return "".join(map(line.__mod__, zip(*cells, strict=True)))


_GETTERS = tuple(map(attrgetter, _RECORD_FIELDS))


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


__all__ = [
    "COUNT_FIELDS",
    "MISS_CAUSES",
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_REJECTED",
    "STATUS_UNFINISHED",
    "RequestRecord",
    "records_to_jsonl",
]
