"""The error taxonomy of live requests: every failed request gets one kind.

Kinds (``RequestRecord.error``):

``connect``
    the TCP connection could not be made (refused, unreachable, DNS).
``timeout``
    no answer within the connect, read or total timeout.
``context_overflow``
    the server refused the prompt as longer than the model's context (HTTP 400
    in the shape of vLLM, SGLang, llama-server or llama-cpp-python).
``http_4xx`` / ``http_5xx``
    any other error status.
``empty_stream``
    HTTP 200 but not one content chunk (llama-cpp-python answers a streaming
    context overflow this way).
``disconnected``
    the server closed the connection in the middle of a response.
``stream_error``
    the server reported an error inside the event stream.
``protocol``
    a response kvlab could not understand (bad JSON, not an event stream).
``cancelled``
    the run stopped (Ctrl-C, ``--max-errors``) while the request was in flight.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ERROR_KINDS: tuple[str, ...] = (
    "connect",
    "timeout",
    "context_overflow",
    "http_4xx",
    "http_5xx",
    "empty_stream",
    "disconnected",
    "stream_error",
    "protocol",
    "cancelled",
)

#: Longest error detail kept on a record (characters).
MAX_DETAIL_CHARS = 300

# Context-overflow wording of each server (REFERENCE section 5):
# vLLM "This model's maximum context length is N tokens...";
# SGLang "The input (N tokens) is longer than the model's context length (M tokens).";
# llama-server type "exceed_context_size_error";
# llama-cpp-python code "context_length_exceeded".
_OVERFLOW_RE = re.compile(
    r"maximum context length|context_length_exceeded|exceed_context_size|"
    r"longer than the model's context length|exceeds? the available context size|"
    r"context window|too many tokens",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one request failed: a kind from :data:`ERROR_KINDS` and a short detail."""

    kind: str
    detail: str

    def __post_init__(self) -> None:
        assert self.kind in ERROR_KINDS, self.kind


def error_message(body: str) -> str:
    """The human message of an error body (OpenAI ``{"error": {"message"}}`` or flat)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("type")
            if msg is not None:
                return str(msg)
        elif isinstance(err, str):
            return err
    return body.strip()


def classify_status(status: int, body: str) -> Failure:
    """Classify an HTTP error answer (status >= 400) from its status and body."""
    detail = _short(f"HTTP {status}: {error_message(body)}")
    if 400 <= status < 500 and _OVERFLOW_RE.search(body):
        return Failure("context_overflow", detail)
    if status >= 500:
        return Failure("http_5xx", detail)
    return Failure("http_4xx", detail)


def classify_exception(exc: BaseException) -> Failure:
    """Classify a client-side exception (kvlab's HTTP client, aiohttp or asyncio)."""
    names = {c.__name__ for c in type(exc).__mro__}
    detail = _short(f"{type(exc).__name__}: {exc}")
    if names & {"TimeoutError", "ServerTimeoutError", "ConnectionTimeoutError"}:
        return Failure("timeout", detail)
    if names & {"CancelledError"}:
        return Failure("cancelled", detail)
    if names & {
        "Disconnected",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ConnectionResetError",
        "BrokenPipeError",
        "IncompleteReadError",
    }:
        return Failure("disconnected", detail)
    if names & {"ClientConnectorError", "ConnectionRefusedError", "gaierror", "OSError"}:
        return Failure("connect", detail)
    return Failure("protocol", detail)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


__all__ = [
    "ERROR_KINDS",
    "Failure",
    "classify_exception",
    "classify_status",
    "error_message",
]
