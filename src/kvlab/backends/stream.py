"""Reading one OpenAI-style server-sent-event stream, cheaply.

:class:`StreamReader` is fed raw network reads with their arrival time
(``perf_counter_ns``) and keeps only what a :class:`RequestRecord` needs:
the arrival time of every content event, the first one, and the usage object
of the final chunk. It is the client's hot path, so it parses JSON only
until the first content event is found and once more for the usage chunk;
every other event is recognised by its bytes.

A content event is a ``data:`` event whose ``choices`` list is not empty
(recognised by the bytes ``"choices":[{``, with or without a space).
For chat streams the first content event must also carry text (a role-only
first delta does not count as a token). Events arriving in the same network
read share that read's arrival time.
"""

from __future__ import annotations

import json
from typing import Any

_DONE = b"[DONE]"
_CONTENT_MARKS = (b'"choices":[{', b'"choices": [{')
_USAGE_MARKS = (b'"usage":{', b'"usage": {')
_ERROR_MARKS = (b'{"error"', b'{"object":"error"', b'{"object": "error"')


class StreamReader:
    """Incremental SSE reader for one response.

    Invariants: ``chunk_times_ns`` is non-decreasing and holds one entry per
    content event from the first token on; ``first_token_ns`` is its first
    entry (``None`` until a token arrived); ``usage`` is the last usage
    object seen; ``done`` is set by ``data: [DONE]``.

    Until the first token, events are examined one by one (JSON-parsed); after
    it, each network read is handled in bulk: content events are counted by
    their ``"choices":[{`` bytes and only a usage or error event is parsed.
    """

    __slots__ = (
        "_buf",
        "_chat",
        "_collect",
        "_parts",
        "_sep",
        "chunk_times_ns",
        "done",
        "error_text",
        "first_token_ns",
        "last_byte_ns",
        "prompt_token_ids",
        "token_ids",
        "usage",
    )

    def __init__(self, *, chat: bool, collect: bool = False) -> None:
        self._chat = chat
        self._collect = collect
        self._parts: list[str] = []
        self.prompt_token_ids: list[int] | None = None
        self.token_ids: list[int] | None = None
        self._buf = b""
        self._sep = b"\n\n"
        self.chunk_times_ns: list[int] = []
        self.first_token_ns: int | None = None
        self.last_byte_ns: int | None = None
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.error_text: str | None = None

    def feed(self, data: bytes, t_ns: int) -> None:
        """Consume one network read that arrived at ``t_ns``."""
        self.last_byte_ns = t_ns
        buf = self._buf + data if self._buf else data
        sep = self._sep
        if sep == b"\n\n" and b"\r\n" in data and b"\n\n" not in buf:
            sep = self._sep = b"\r\n\r\n"
        start = 0
        while self.first_token_ns is None:
            end = buf.find(sep, start)
            if end < 0:
                self._buf = buf[start:]
                return
            self._event(buf[start:end], t_ns)
            start = end + len(sep)
        last = buf.rfind(sep, start)
        if last < 0:
            self._buf = buf[start:]
            return
        self._bulk(buf[start:last], t_ns)
        self._buf = buf[last + len(sep) :]

    def finish(self) -> None:
        """The response ended: handle a final event that had no trailing blank line."""
        rest, self._buf = self._buf, b""
        if not rest.strip():
            return
        if self.first_token_ns is None:
            self._event(rest, self.last_byte_ns or 0)
        else:
            self._bulk(rest, self.last_byte_ns or 0)

    @property
    def text(self) -> str:
        """The answer's text so far (kept only with ``collect=True``; else empty)."""
        return "".join(self._parts)

    def _bulk(self, region: bytes, t_ns: int) -> None:
        """Complete events after the first token, all arrived at ``t_ns``."""
        if self._collect:
            for ev in region.split(self._sep):
                i = ev.find(b"data:")
                if i >= 0:
                    self._keep(ev[i + 5 :].strip())
        n = region.count(_CONTENT_MARKS[0])
        if b'"choices": [' in region:
            n += region.count(_CONTENT_MARKS[1])
        if n:
            self.chunk_times_ns.extend([t_ns] * n)
        if b'"usage":' in region or b'"usage": ' in region:
            for mark in _USAGE_MARKS:
                pos = region.rfind(mark)
                if pos >= 0:
                    a = region.rfind(b"data:", 0, pos)
                    b = region.find(self._sep, pos)
                    self._take_usage(region[a + 5 : b if b >= 0 else len(region)].strip())
                    break
        if b"[DONE]" in region:
            self.done = True
        if b'"error"' in region:
            for ev in region.split(self._sep):
                payload = ev[ev.find(b"data:") + 5 :].strip()
                if payload.startswith(_ERROR_MARKS):
                    self.error_text = payload.decode("utf-8", "replace")

    def _event(self, ev: bytes, t_ns: int) -> None:
        """One event before the first token."""
        i = ev.find(b"data:")
        if i < 0:
            return  # comment, keep-alive or event/id line
        payload = ev[i + 5 :].strip()
        if payload == _DONE:
            self.done = True
            return
        if payload.startswith(_ERROR_MARKS):
            self.error_text = payload.decode("utf-8", "replace")
            return
        if _USAGE_MARKS[0] in payload or _USAGE_MARKS[1] in payload:
            self._take_usage(payload)
        if _CONTENT_MARKS[0] not in payload and _CONTENT_MARKS[1] not in payload:
            return
        if self._collect:
            self._keep(payload)
        if self._has_token(payload):
            self.first_token_ns = t_ns
            self.chunk_times_ns.append(t_ns)

    def _has_token(self, payload: bytes) -> bool:
        try:
            obj = json.loads(payload)
        except ValueError:
            return True  # unparseable but not empty: count it, it arrived
        choices = obj.get("choices") or []
        if not choices:
            return False
        if not self._chat:
            return True
        c = choices[0]
        delta = c.get("delta") or {}
        return bool(
            delta.get("content")
            or delta.get("reasoning_content")
            or delta.get("reasoning")
            or delta.get("tool_calls")
            or c.get("finish_reason")
        )

    def _keep(self, payload: bytes) -> None:
        """Keep the text and token ids of one content event (``collect=True``)."""
        if _CONTENT_MARKS[0] not in payload and _CONTENT_MARKS[1] not in payload:
            return
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):
            return
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        c = choices[0]
        if self._chat:
            delta = c.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else None
        else:
            piece = c.get("text")
        if isinstance(piece, str):
            self._parts.append(piece)
        prompt_ids = _ids(c.get("prompt_token_ids"))
        if prompt_ids is not None and self.prompt_token_ids is None:
            self.prompt_token_ids = prompt_ids
        ids = _ids(c.get("token_ids"))
        if ids is not None:
            if self.token_ids is None:
                self.token_ids = []
            self.token_ids.extend(ids)

    def _take_usage(self, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage


def usage_tokens(usage: dict[str, Any] | None) -> tuple[int | None, int | None, int | None]:
    """(prompt_tokens, completion_tokens, cached_tokens) from a usage object.

    Cached tokens come from ``prompt_tokens_details.cached_tokens`` (OpenAI,
    vLLM with ``--enable-prompt-tokens-details``, SGLang); None when absent.
    """
    if not usage:
        return None, None, None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), _int(cached)


def _ids(v: Any) -> list[int] | None:
    """``v`` when it is a list of ints (token ids), else None."""
    if not isinstance(v, list):
        return None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return v
    return None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


__all__ = ["StreamReader", "usage_tokens"]
