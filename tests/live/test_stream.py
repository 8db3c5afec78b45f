"""StreamReader: timing of content events, usage parsing, arbitrary network splits."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.backends.stream import StreamReader, usage_tokens


def completion_stream(n: int, *, spaced: bool = False, cached: int | None = None) -> bytes:
    """vLLM-shaped /v1/completions stream of n content chunks, usage, [DONE]."""
    sep = (", ", ": ") if spaced else (",", ":")
    ev = []
    for i in range(n):
        c = {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": "tiny",
            "choices": [
                {
                    "index": 0,
                    "text": f" w{i}",
                    "logprobs": None,
                    "finish_reason": "length" if i == n - 1 else None,
                }
            ],
        }
        ev.append(b"data: " + json.dumps(c, separators=sep).encode() + b"\n\n")
    usage: dict[str, object] = {"prompt_tokens": 12, "total_tokens": 12 + n, "completion_tokens": n}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    u = {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "tiny",
        "choices": [],
        "usage": usage,
    }
    ev.append(b"data: " + json.dumps(u, separators=sep).encode() + b"\n\n")
    ev.append(b"data: [DONE]\n\n")
    return b"".join(ev)


def test_one_read_per_event_gives_each_event_its_time() -> None:
    data = completion_stream(3, cached=4)
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    r = StreamReader(chat=False)
    for t, e in enumerate(events, start=100):
        r.feed(e, t)
    r.finish()
    assert r.first_token_ns == 100
    assert r.chunk_times_ns == [100, 101, 102]
    assert r.last_byte_ns == 104
    assert r.done
    assert usage_tokens(r.usage) == (12, 3, 4)


def test_spaced_json_and_crlf_separators() -> None:
    data = completion_stream(4, spaced=True).replace(b"\n\n", b"\r\n\r\n")
    r = StreamReader(chat=False)
    r.feed(data[:50], 1)
    r.feed(data[50:], 2)
    r.finish()
    assert r.first_token_ns == 2
    assert len(r.chunk_times_ns) == 4
    assert usage_tokens(r.usage) == (12, 4, None)


def test_chat_role_only_first_delta_is_not_a_token() -> None:
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    tok = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    r = StreamReader(chat=True)
    r.feed(b"data: " + json.dumps(role).encode() + b"\n\n", 10)
    assert r.first_token_ns is None and r.chunk_times_ns == []
    r.feed(b"data: " + json.dumps(tok).encode() + b"\n\ndata: [DONE]\n\n", 20)
    assert r.first_token_ns == 20 and r.chunk_times_ns == [20]


def test_error_event_inside_stream_is_kept() -> None:
    # vLLM's shape when the engine dies after the response started (recorded).
    body = (
        b'data: {"error": {"message": "EngineCore encountered an issue. See stack trace '
        b'(above) for the root cause.", "type": "InternalServerError", "param": null, '
        b'"code": 500}}\n\ndata: [DONE]\n\n'
    )
    r = StreamReader(chat=False)
    r.feed(body, 5)
    r.finish()
    assert r.first_token_ns is None
    assert r.error_text is not None and "EngineCore" in r.error_text


def test_error_after_tokens_is_seen_in_bulk_mode() -> None:
    data = completion_stream(2).split(
        b'data: {"id":"cmpl-1","object":"text_completion","model":"tiny","choices":[],'
    )[0]
    r = StreamReader(chat=False)
    r.feed(data, 1)
    r.feed(b'data: {"error": {"message": "boom", "code": 500}}\n\n', 2)
    r.finish()
    assert len(r.chunk_times_ns) == 2 and r.error_text is not None


def test_keepalive_comments_are_ignored() -> None:
    r = StreamReader(chat=False)
    r.feed(b": ping\n\n", 1)
    r.feed(completion_stream(2), 2)
    assert r.first_token_ns == 2 and len(r.chunk_times_ns) == 2


def test_usage_tokens_without_usage() -> None:
    assert usage_tokens(None) == (None, None, None)
    assert usage_tokens({"prompt_tokens": 3, "completion_tokens": 2}) == (3, 2, None)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 12),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    spaced=st.booleans(),
)
def test_any_split_of_the_stream_gives_the_same_counts(
    n: int, cuts: list[int], spaced: bool
) -> None:
    data = completion_stream(n, spaced=spaced, cached=1)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    r = StreamReader(chat=False)
    for t, (a, b) in enumerate(itertools.pairwise(points)):
        r.feed(data[a:b], t)
    r.finish()
    assert len(r.chunk_times_ns) == n
    assert r.chunk_times_ns == sorted(r.chunk_times_ns)
    assert r.first_token_ns == r.chunk_times_ns[0]
    assert usage_tokens(r.usage) == (12, n, 1)
    assert r.done
