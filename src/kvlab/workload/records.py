"""The request records shared by every kvlab backend.

A workload is a list of :class:`Request` objects, grouped optionally into
sessions. A request's prompt is an ordered tuple of :class:`Segment` objects;
each segment is ``tokens`` tokens of the deterministic content named by
``content_id`` (see :mod:`kvlab.workload.content`). Two segments with the same
content id and the same length are identical token for token, and a segment of
length n is the first n tokens of its content id's stream, so equal ids give
prefix hits and different ids never share a block.

Timing: a request has either an absolute ``arrival_s`` (open loop, seconds
from the start of the run) or a ``think_time_s``: it is sent that many seconds
after the previous request of the same session finished (closed loop). The
first request of a session always has an ``arrival_s``.

Generated tokens: by default the output of a request is unique content that no
later prompt can hit. When ``output_content_id`` is set, the simulator
generates exactly the first ``output_tokens`` tokens of that content, so a
later turn that re-sends the answer as a history segment with the same id hits
the blocks the answer filled. (A live server generates its own text, so such
hits exist only in simulation; the live backends send the scripted text, or, with
``kvlab replay --history server``, the server's own answer in place of the segment
that names it: :mod:`kvlab.backends.transcript`.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import WorkloadError

#: Retention classes, from longest-lived to shortest-lived.
RETENTION_CLASSES: tuple[str, ...] = ("system", "context", "generation", "reasoning", "ephemeral")

#: Segment kinds (free text is allowed; these are the ones generators use).
SEGMENT_KINDS: tuple[str, ...] = (
    "system",
    "tools",
    "document",
    "history",
    "user",
    "assistant",
    "tool_output",
    "reasoning",
)

WORKLOAD_FORMAT_VERSION = 1

#: The most tokens one segment, one prompt or one output may have: 2**31 - 1, far above
#: any model's context window. A count above it is refused where it enters, so every
#: count and sum of counts stays exact in the integer and float types kvlab computes with.
MAX_TOKENS = 2**31 - 1
#: The bound on ``turn`` and the magnitude of ``priority`` (a signed 64-bit integer).
MAX_INDEX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Segment:
    """``tokens`` tokens of content ``content_id``, of one retention class."""

    kind: str
    tokens: int
    content_id: str
    retention: str = "context"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokens": self.tokens,
            "content": self.content_id,
            "retention": self.retention,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "segments") -> Segment:
        if not isinstance(d, Mapping):
            raise WorkloadError("a segment must be an object", field=where)
        kind = d.get("kind", "context")
        if not isinstance(kind, str):
            raise WorkloadError("must be a string", field=f"{where}.kind")
        tokens = _nonneg_int(d.get("tokens"), f"{where}.tokens")
        content = d.get("content")
        if not isinstance(content, str) or not content:
            raise WorkloadError("must be a non-empty string", field=f"{where}.content")
        retention = d.get("retention", "context")
        if retention not in RETENTION_CLASSES:
            raise WorkloadError(
                f"unknown retention class {retention!r}; "
                f"choose one of {', '.join(RETENTION_CLASSES)}",
                field=f"{where}.retention",
            )
        return cls(kind=kind, tokens=tokens, content_id=content, retention=retention)


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request of a workload.

    Invariants (checked by :meth:`from_dict`): ``prompt_tokens >= 1``,
    ``output_tokens >= 1``, exactly one of ``arrival_s`` / ``think_time_s``
    is set for requests in a session after its first, both finite and >= 0.
    """

    request_id: str
    segments: tuple[Segment, ...]
    output_tokens: int
    arrival_s: float | None = 0.0
    think_time_s: float | None = None
    session_id: str | None = None
    turn: int = 0
    priority: int = 0
    cls: str | None = None
    output_content_id: str | None = None
    prompt_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_tokens", sum(s.tokens for s in self.segments))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.request_id}
        if self.session_id is not None:
            d["session"] = self.session_id
            d["turn"] = self.turn
        if self.arrival_s is not None:
            d["arrival_s"] = self.arrival_s
        if self.think_time_s is not None:
            d["think_time_s"] = self.think_time_s
        if self.cls is not None:
            d["class"] = self.cls
        if self.priority:
            d["priority"] = self.priority
        d["segments"] = [s.to_dict() for s in self.segments]
        d["output_tokens"] = self.output_tokens
        if self.output_content_id is not None:
            d["output_content"] = self.output_content_id
        return d

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        segment_cache: dict[tuple[str, int, str, str], Segment] | None = None,
    ) -> Request:
        """Build and validate a request; errors are WorkloadError naming the field.

        ``segment_cache`` (a dict the caller keeps across requests) shares one Segment among
        equal segments whose fields are plain strings and ints: a file re-sends the same
        system prompt or history segment in many requests, and validating and storing it
        once saves time and memory. The result equals the uncached one."""
        if not isinstance(d, Mapping):
            raise WorkloadError("a request must be a JSON object")
        rid = d.get("id")
        if not isinstance(rid, str | int) or isinstance(rid, bool) or rid == "":
            raise WorkloadError("must be a non-empty string", field="id")
        segs_raw = d.get("segments")
        if not isinstance(segs_raw, list) or not segs_raw:
            raise WorkloadError("must be a non-empty list", field="segments")
        if segment_cache is None:
            segments = tuple(Segment.from_dict(s, f"segments[{i}]") for i, s in enumerate(segs_raw))
        else:
            segments = tuple(
                _cached_segment(s, f"segments[{i}]", segment_cache) for i, s in enumerate(segs_raw)
            )
        prompt = sum(s.tokens for s in segments)
        if prompt < 1:
            raise WorkloadError("the prompt must have at least one token", field="segments")
        if prompt > MAX_TOKENS:
            raise WorkloadError(
                f"the prompt has {prompt:,} tokens, above the limit {MAX_TOKENS:,}",
                field="segments",
            )
        output_tokens = _nonneg_int(d.get("output_tokens"), "output_tokens")
        if output_tokens < 1:
            raise WorkloadError("must be >= 1", field="output_tokens")
        arrival = _opt_time(d.get("arrival_s"), "arrival_s")
        think = _opt_time(d.get("think_time_s"), "think_time_s")
        if arrival is None and think is None:
            raise WorkloadError("a request needs arrival_s or think_time_s", field="arrival_s")
        if arrival is not None and think is not None:
            raise WorkloadError("give arrival_s or think_time_s, not both", field="think_time_s")
        session = d.get("session")
        if session is not None and not isinstance(session, str | int):
            raise WorkloadError("must be a string", field="session")
        if think is not None and session is None:
            raise WorkloadError("think_time_s needs a session", field="think_time_s")
        turn = _nonneg_int(d.get("turn", 0), "turn", MAX_INDEX)
        priority = d.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise WorkloadError("must be an integer", field="priority")
        if abs(priority) > MAX_INDEX:
            raise WorkloadError(f"must be within +-{MAX_INDEX}, got {priority}", field="priority")
        klass = d.get("class")
        if klass is not None and not isinstance(klass, str):
            raise WorkloadError("must be a string", field="class")
        out_content = d.get("output_content")
        if out_content is not None and (not isinstance(out_content, str) or not out_content):
            raise WorkloadError("must be a non-empty string", field="output_content")
        return cls(
            request_id=str(rid),
            segments=segments,
            output_tokens=output_tokens,
            arrival_s=arrival,
            think_time_s=think,
            session_id=None if session is None else str(session),
            turn=turn,
            priority=priority,
            cls=klass,
            output_content_id=out_content,
        )


@dataclass(frozen=True, slots=True)
class Workload:
    """A named, ordered list of requests plus the metadata that produced it.

    ``requests`` is in file order: open-loop requests sorted by ``arrival_s``
    (stable), each session's turns in turn order.
    """

    requests: tuple[Request, ...]
    name: str = "workload"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.requests)


def _cached_segment(d: Any, where: str, cache: dict[tuple[str, int, str, str], Segment]) -> Segment:
    """``Segment.from_dict(d, where)``, shared through ``cache`` when ``d`` holds only exact
    ``str`` and ``int`` values (so ``True`` or ``1.0`` never match a cached ``1``)."""
    if type(d) is not dict:
        return Segment.from_dict(d, where)
    kind = d.get("kind", "context")
    tokens = d.get("tokens")
    content = d.get("content")
    retention = d.get("retention", "context")
    if (
        type(kind) is str
        and type(tokens) is int
        and type(content) is str
        and type(retention) is str
    ):
        key = (kind, tokens, content, retention)
        seg = cache.get(key)
        if seg is None:
            seg = cache[key] = Segment.from_dict(d, where)
        return seg
    return Segment.from_dict(d, where)


def _nonneg_int(v: Any, name: str, limit: int = MAX_TOKENS) -> int:
    """``v`` as an int in [0, limit] (a whole float such as ``12.0`` is accepted)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise WorkloadError("must be an integer", field=name)
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            raise WorkloadError(f"must be an integer, got {v!r}", field=name)
        v = int(v)
    if v < 0:
        raise WorkloadError(f"must be >= 0, got {v}", field=name)
    if v > limit:
        raise WorkloadError(f"{v:.3g} is above the limit {limit:,}", field=name)
    return int(v)


def _opt_time(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise WorkloadError("must be a number of seconds", field=name)
    x = float(v)
    if not math.isfinite(x):
        raise WorkloadError(f"must be finite, got {v!r}", field=name)
    if x < 0:
        raise WorkloadError(f"must be >= 0, got {v!r}", field=name)
    return x


__all__ = [
    "MAX_INDEX",
    "MAX_TOKENS",
    "RETENTION_CLASSES",
    "SEGMENT_KINDS",
    "WORKLOAD_FORMAT_VERSION",
    "Request",
    "Segment",
    "Workload",
]
