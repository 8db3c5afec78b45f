"""Bulk construction of :class:`Segment` and :class:`Request` records.

Trace importers build one Segment and one Request per row (Mooncake: one
Segment per distinct hash id, some 200,000 for the shipped conversation
trace). The dataclass constructors run Python code per object; here the
objects are allocated and their slots filled one field at a time for all
records at once (``map`` over the slot descriptors), which is several times
faster and gives equal objects. The equality is checked by
tests/workload/test_bulk.py; if the record classes no longer have exactly
the fields this module knows, it falls back to the constructors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import fields
from itertools import repeat
from typing import Any

from kvlab.workload.records import Request, Segment

_SEGMENT_FIELDS = ("kind", "tokens", "content_id", "retention")
_REQUEST_FIELDS = (
    "request_id",
    "segments",
    "output_tokens",
    "arrival_s",
    "think_time_s",
    "session_id",
    "turn",
    "priority",
    "cls",
    "output_content_id",
    "prompt_tokens",
)


def _slot_setters(cls: type, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The setters of the slots of ``cls`` by field; None if its fields are not ``names``."""
    if tuple(f.name for f in fields(cls)) != names:
        return None
    slots = {n: cls.__dict__.get(n) for n in names}
    if any(type(d).__name__ != "member_descriptor" for d in slots.values()):
        return None
    return {n: d.__set__ for n, d in slots.items()}  # type: ignore[union-attr]


_SEGMENT_SETTERS = _slot_setters(Segment, _SEGMENT_FIELDS)
_REQUEST_SETTERS = _slot_setters(Request, _REQUEST_FIELDS)


def _fill(
    cls: type, n: int, setters: dict[str, Any], values: dict[str, Iterable[Any]]
) -> list[Any]:
    objs: list[Any] = list(map(object.__new__, repeat(cls, n)))
    for name, set_slot in setters.items():
        deque(map(set_slot, objs, values[name]), maxlen=0)
    return objs


def segments(
    kind: str, tokens: Sequence[int], content_ids: Sequence[str], retention: str = "context"
) -> list[Segment]:
    """``[Segment(kind, t, c, retention) for t, c in zip(tokens, content_ids)]``."""
    n = len(tokens)
    if _SEGMENT_SETTERS is None or n != len(content_ids):
        return [Segment(kind, t, c, retention) for t, c in zip(tokens, content_ids, strict=True)]
    values = {
        "kind": repeat(kind, n),
        "tokens": tokens,
        "content_id": content_ids,
        "retention": repeat(retention, n),
    }
    return _fill(Segment, n, _SEGMENT_SETTERS, values)


def open_loop_requests(
    request_ids: Sequence[str],
    prompts: Sequence[tuple[Segment, ...]],
    output_tokens: Sequence[int],
    arrivals_s: Sequence[float],
    prompt_tokens: Sequence[int],
) -> list[Request]:
    """``Request(request_ids[i], prompts[i], output_tokens[i], arrivals_s[i])`` for every i.

    ``prompt_tokens[i]`` must be the tokens of ``prompts[i]`` (what the
    constructor computes); the other fields take their defaults.
    """
    n = len(request_ids)
    columns = (prompts, output_tokens, arrivals_s, prompt_tokens)
    if _REQUEST_SETTERS is None or any(len(c) != n for c in columns):
        return [
            Request(r, s, o, a)
            for r, s, o, a in zip(request_ids, prompts, output_tokens, arrivals_s, strict=True)
        ]
    values: dict[str, Iterable[Any]] = {
        "request_id": request_ids,
        "segments": prompts,
        "output_tokens": output_tokens,
        "arrival_s": arrivals_s,
        "think_time_s": repeat(None, n),
        "session_id": repeat(None, n),
        "turn": repeat(0, n),
        "priority": repeat(0, n),
        "cls": repeat(None, n),
        "output_content_id": repeat(None, n),
        "prompt_tokens": prompt_tokens,
    }
    return _fill(Request, n, _REQUEST_SETTERS, values)


__all__ = ["open_loop_requests", "segments"]
