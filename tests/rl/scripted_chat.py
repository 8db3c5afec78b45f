"""A scripted OpenAI-compatible chat-completions endpoint for whole verifiers rollouts of
the KVPressure taskset without a model or an API key.

The "model" is a fixed rule (:func:`choose`) over the newest compact observation in the
conversation (the user prompt, then each tool answer; ``error:`` answers change nothing
and are skipped): while memory usage is within ``margin`` of the budget it compresses the
largest candidate that may still be compressed, otherwise it keeps. It answers with one
tool call per turn and with plain text once a tool answer says ``episode_over``. Both the
streamed (``stream: true``: server-sent events ending in a usage chunk and ``[DONE]``, as
harness programs ask for) and the plain JSON forms of ``POST /v1/chat/completions`` are
served, and ``GET /v1/models``.

:class:`ScriptedChat` records every turn it answered (the tools the request offered and
the call it made)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "kvlab-scripted"
#: the seq id of the refused opening call (never a candidate: ids look like ``u3-t0``)
NO_SUCH_SEQ = "no-such-seq"


def choose(obs: dict[str, Any], margin: float = 0.05) -> tuple[str, dict[str, str]]:
    """The rule: ``compress`` the largest compressible candidate (lowest slot on ties)
    while ``usage >= budget - margin``, else ``keep``."""
    mem = obs["memory"]
    if float(mem["usage"]) >= float(mem["budget"]) - margin:
        ok = [c for c in obs["candidates"] if "compress" in c["actions"]]
        if ok:
            best = min(ok, key=lambda c: (-int(c["blocks"]), int(c["slot"])))
            return "compress", {"seq_id": str(best["seq_id"])}
    return "keep", {}


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


@dataclass
class Turn:
    """One answered request: what the last message said, and the reply."""

    last_role: str
    tool: str | None  # None: a text reply (the episode is over)
    arguments: dict[str, str] | None
    tools_offered: list[str]


@dataclass
class ScriptedChat:
    """The endpoint's state: the rule's margin, whether a conversation opens with one
    call the environment must refuse (``evict`` of a seq id that is no candidate), and
    the turns answered so far (all conversations, in arrival order)."""

    margin: float = 0.05
    bad_first_call: bool = False
    turns: list[Turn] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The assistant message for one request (OpenAI chat-completions shape)."""
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        offered = sorted(
            t["function"]["name"] for t in body.get("tools") or [] if t.get("type") == "function"
        )
        obs = _latest_observation(messages)
        opening = not any(m.get("role") == "assistant" for m in messages)
        tool: str | None
        if obs is None or obs.get("episode_over"):
            tool, args = None, None
        elif opening and self.bad_first_call:
            tool, args = "evict", {"seq_id": NO_SUCH_SEQ}
        else:
            tool, args = choose(obs, self.margin)
        with self.lock:
            self.turns.append(Turn(str(last.get("role")), tool, args, offered))
            n = len(self.turns)
        if tool is None:
            return {"role": "assistant", "content": "Episode over."}
        call = {"name": tool, "arguments": json.dumps(args)}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": f"call_{n}", "type": "function", "function": call}],
        }


def _latest_observation(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest message that is a JSON object (an observation or the episode's end);
    tool answers that are ``error:`` lines are skipped (they leave the episode as it was)."""
    for m in reversed(messages):
        if m.get("role") not in ("user", "tool"):
            continue
        try:
            data = json.loads(_text(m.get("content")))
        except ValueError:
            continue
        if isinstance(data, dict) and ("memory" in data or data.get("episode_over")):
            return data
    return None


def _chunks(message: dict[str, Any], model: str) -> Iterator[dict[str, Any]]:
    """The streamed form of one reply: role and content or tool call, finish, usage."""
    base = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    delta: dict[str, Any] = {"role": "assistant"}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
        finish = "tool_calls"
    else:
        delta["content"] = message["content"]
        finish = "stop"
    yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    usage = {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}
    yield {**base, "choices": [], "usage": usage}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": MODEL, "object": "model", "owned_by": "kvlab"}
            data = {"object": "list", "data": [model]}
            self._send(200, json.dumps(data).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        size = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(size) or b"{}")
        except ValueError:
            self._send(400, b'{"error": {"message": "request body is not JSON"}}')
            return
        message = self.server.chat.reply(body)
        model = str(body.get("model") or MODEL)
        if body.get("stream"):
            events = b"".join(
                b"data: " + json.dumps(c).encode() + b"\n\n" for c in _chunks(message, model)
            )
            self._send(200, events + b"data: [DONE]\n\n", "text/event-stream")
            return
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        data = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
        }
        self._send(200, json.dumps(data).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, chat: ScriptedChat) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.chat = chat


@contextmanager
def serve(chat: ScriptedChat | None = None) -> Iterator[tuple[str, ScriptedChat]]:
    """Serve ``chat`` on a free loopback port; yields ``(base_url, chat)`` (``.../v1``)."""
    chat = chat or ScriptedChat()
    server = _Server(chat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", chat
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


if __name__ == "__main__":  # serve until Ctrl-C, for trying vf-eval by hand
    with serve() as (url, _chat):
        print(url, flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()
