"""``history="server"`` (``kvlab replay --history server``) on the in-memory stub: each
turn re-sends the answers the server produced, and the transcript records, token for
token, what was sent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.backends.stub import StubConfig, stub_transport
from kvlab.backends.transcript import common_prefix, first_tokens
from kvlab.backends.transport import MockRequest, MockResponse, MockTransport
from kvlab.errors import ConfigError
from kvlab.results import STATUS_OK, STATUS_UNFINISHED, RunResult
from kvlab.workload.content import text
from kvlab.workload.io import read_workload, write_workload
from kvlab.workload.records import Request, Segment, Workload

SYS = Segment("system", 4, "sys", "system")
USER = [Segment("user", 3, f"u{i}") for i in range(3)]
ANSWER = [Segment("assistant", 2, f"a{i}", "generation") for i in range(2)]


def session(*, later_arrival: bool = False) -> Workload:
    """One 3-turn session re-sending its history; answers of 2 tokens."""

    def timing(t: int) -> dict[str, Any]:
        if t == 0 or later_arrival:
            return {"arrival_s": 0.0}
        return {"arrival_s": None, "think_time_s": 0.0}

    return Workload(
        (
            Request("r0", (SYS, USER[0]), 2, session_id="s", turn=0, output_content_id="a0",
                    **timing(0)),
            Request("r1", (SYS, USER[0], ANSWER[0], USER[1]), 2, session_id="s", turn=1,
                    output_content_id="a1", **timing(1)),
            Request("r2", (SYS, USER[0], ANSWER[0], USER[1], ANSWER[1], USER[2]), 2,
                    session_id="s", turn=2, **timing(2)),
        ),
        name="history",
    )  # fmt: skip


def run(transport: MockTransport, workload: Workload, **kw: Any) -> tuple[RunResult, OpenAIBackend]:
    kw.setdefault("metrics_interval_s", 0.0)
    b = OpenAIBackend(OpenAIConfig(endpoint="http://mock", model="m", **kw), transport=transport)
    return asyncio.run(b.run_async(workload)), b


def prompts(t: MockTransport) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in t.requests if r.path == "/v1/completions"]


def segs(r: Request) -> list[tuple[str, int, str]]:
    return [(s.kind, s.tokens, s.content_id) for s in r.segments]


def words(*parts: tuple[str, int]) -> str:
    return "".join(text(c, n) for c, n in parts)


def test_scripted_history_sends_the_file_as_before() -> None:
    t = stub_transport()
    res, b = run(t, session(), mode="sessions")
    sent = prompts(t)
    assert [p["prompt"] for p in sent] == [
        words(("sys", 4), ("u0", 3)),
        words(("sys", 4), ("u0", 3), ("a0", 2), ("u1", 3)),
        words(("sys", 4), ("u0", 3), ("a0", 2), ("u1", 3), ("a1", 2), ("u2", 3)),
    ]
    assert not any("return_token_ids" in p for p in sent)
    assert b.transcript is None and "transcript" not in res.config
    assert "history" not in res.config and "token_ids" not in res.config  # run.json as before


def test_token_ids_asks_for_them_with_the_scripted_history() -> None:
    """``token_ids`` (a calibration sweep for server-history replays) asks for token ids
    with every request, sends the scripted prompts and keeps no transcript."""
    t = stub_transport()
    res, b = run(t, session(), mode="sessions", token_ids=True)
    sent = prompts(t)
    assert [p["prompt"] for p in sent][1] == words(("sys", 4), ("u0", 3), ("a0", 2), ("u1", 3))
    assert all(p["return_token_ids"] is True for p in sent)
    assert b.transcript is None and res.config["token_ids"] is True
    assert [r.status for r in res.records] == [STATUS_OK] * 3


def test_server_history_resends_the_servers_answers() -> None:
    t = stub_transport()
    res, _ = run(t, session(), mode="sessions", history="server")
    sent = prompts(t)
    # the stub answers " tok" per token: that text replaces each scripted answer
    assert [p["prompt"] for p in sent] == [
        words(("sys", 4), ("u0", 3)),
        words(("sys", 4), ("u0", 3)) + " tok tok" + words(("u1", 3)),
        words(("sys", 4), ("u0", 3)) + " tok tok" + words(("u1", 3)) + " tok tok"
        + words(("u2", 3)),
    ]  # fmt: skip
    assert all(p["return_token_ids"] is True for p in sent)
    assert [r.status for r in res.records] == [STATUS_OK] * 3
    assert res.config["history"] == "server"
    assert res.config["transcript"] == {
        "file": "transcript.jsonl",
        "requests": 3,
        "with_server_token_ids": 3,
        "prompt_count_mismatches": 0,
    }
    assert res.config["mode_applied"] == "sessions"


def test_transcript_with_token_ids_is_what_was_sent() -> None:
    _, b = run(stub_transport(), session(), mode="sessions", history="server")
    assert b.transcript is not None
    reqs = b.transcript.workload().requests
    assert [r.request_id for r in reqs] == ["r0", "r1", "r2"]
    assert segs(reqs[0]) == [("system", 4, "sys"), ("user", 3, "u0")]
    # each turn: the tokens it shares with the previous turn's prompt and answer,
    # then new content for the rest (the new user message)
    assert segs(reqs[1]) == [
        ("system", 4, "sys"),
        ("user", 3, "u0"),
        ("assistant", 2, "served/r0/answer"),
        ("user", 3, "served/r1/prompt"),
    ]
    assert segs(reqs[2]) == [
        *segs(reqs[1]),
        ("assistant", 2, "served/r1/answer"),
        ("user", 3, "served/r2/prompt"),
    ]
    assert [r.output_content_id for r in reqs] == [f"served/r{i}/answer" for i in range(3)]
    assert [r.output_tokens for r in reqs] == [2, 2, 2]
    assert reqs[0].arrival_s is not None and reqs[0].think_time_s is None
    assert all(r.arrival_s is None and r.think_time_s is not None for r in reqs[1:])
    assert [r.prompt_tokens for r in reqs] == [7, 12, 17]  # the stub's own prompt counts


def test_an_answer_that_tokenizes_back_differently_shares_only_equal_tokens() -> None:
    t = stub_transport(StubConfig(answer_retokenizes=False))
    _, b = run(t, session(), mode="sessions", history="server")
    assert b.transcript is not None
    reqs = b.transcript.workload().requests
    # the ids generated are not those of the text re-sent: the shared prefix ends
    # where the answer starts
    assert segs(reqs[1]) == [
        ("system", 4, "sys"),
        ("user", 3, "u0"),
        ("user", 5, "served/r1/prompt"),
    ]
    assert segs(reqs[2]) == [
        ("system", 4, "sys"),
        ("user", 3, "u0"),
        ("user", 5, "served/r1/prompt"),
        ("user", 5, "served/r2/prompt"),
    ]
    assert b.transcript.count_mismatches == 0


def test_without_token_ids_the_transcript_keeps_the_files_segments() -> None:
    def completion(req: MockRequest) -> MockResponse:
        body = json.loads(req.body)
        n = len(body["prompt"].split())
        events = [
            {"choices": [{"index": 0, "text": " x y z"}]},  # one chunk, three words
            {"choices": [], "usage": {"prompt_tokens": n, "completion_tokens": 3}},
        ]
        return MockResponse(
            chunks=[b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
            + [b"data: [DONE]\n\n"]
        )

    def handle(req: MockRequest) -> MockResponse:
        if req.path == "/v1/completions":
            return completion(req)
        if req.path == "/v1/models":
            return MockResponse(200, b'{"data":[{"id":"m"}]}')
        return MockResponse(404, b"not found")

    t = MockTransport(handle)
    res, b = run(t, session(), mode="sessions", history="server")
    assert prompts(t)[1]["prompt"] == words(("sys", 4), ("u0", 3)) + " x y z" + words(("u1", 3))
    assert b.transcript is not None
    reqs = b.transcript.workload().requests
    assert segs(reqs[1]) == [
        ("system", 4, "sys"),
        ("user", 3, "u0"),
        ("assistant", 3, "served/r0/answer"),
        ("user", 3, "u1"),
    ]
    assert segs(reqs[2])[-3:] == [
        ("user", 3, "u1"),
        ("assistant", 3, "served/r1/answer"),
        ("user", 3, "u2"),
    ]
    assert [r.output_tokens for r in reqs] == [3, 3, 3]
    assert res.config["transcript"]["with_server_token_ids"] == 0
    assert res.config["transcript"]["prompt_count_mismatches"] == 0


def test_a_failed_turn_ends_its_session() -> None:
    inner = stub_transport()

    def handle(req: MockRequest) -> MockResponse:
        if req.path == "/v1/completions" and " tok tok" in json.loads(req.body)["prompt"]:
            return MockResponse(500, b'{"error":{"message":"boom","code":500}}')
        return inner.handler(req)

    res, b = run(MockTransport(handle), session(), mode="sessions", history="server")
    assert [r.status for r in res.records] == ["ok", "failed", STATUS_UNFINISHED]
    assert "turn 'r1' of its session failed" in (res.records[2].error_detail or "")
    assert b.transcript is not None
    assert [r.request_id for r in b.transcript.requests] == ["r0"]


def test_trace_mode_waits_for_the_previous_answer() -> None:
    # every turn has arrival_s 0: trace mode sends them at once with the scripted
    # history, and one after another, each with the answers before it, with the server's
    t = stub_transport()
    res, _ = run(t, session(later_arrival=True), history="server")
    assert prompts(t)[2]["prompt"].count(" tok tok") == 2
    assert res.config["mode"] == "trace" and res.config["mode_applied"] == "sessions"


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"history": "model"}, "--history must be one of scripted, server"),
        ({"history": "server", "api": "chat"}, "needs --api completions"),
        ({"history": "server", "cache_mode": "primed"}, "cannot use --cache-mode primed"),
    ],
)
def test_bad_history_settings_are_refused(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        OpenAIConfig(endpoint="http://mock", model="m", **kw)


def test_the_transcript_file_reads_back_the_same(tmp_path: Path) -> None:
    _, b = run(stub_transport(), session(), mode="sessions", history="server")
    assert b.transcript is not None
    w = b.transcript.workload()
    back = read_workload(write_workload(w, tmp_path / "transcript.jsonl"))
    assert back.requests == w.requests


def test_prefix_helpers() -> None:
    assert common_prefix((1, 2, 3), (1, 2, 4)) == 2
    assert common_prefix((1, 2), (1, 2, 4)) == 2
    assert common_prefix((), (1,)) == 0
    s = (Segment("a", 3, "x"), Segment("b", 2, "y"))
    assert first_tokens(s, 4) == (Segment("a", 3, "x"), Segment("b", 1, "y"))
    assert first_tokens(s, 3) == (Segment("a", 3, "x"),)
    assert first_tokens(s, 9) == s


@pytest.mark.parametrize("chat", [False, True])
def test_stream_reader_keeps_text_and_ids_when_asked(chat: bool) -> None:
    from kvlab.backends.stream import StreamReader

    def event(piece: str, ids: list[int], prompt: list[int] | None = None) -> bytes:
        c: dict[str, Any] = {"index": 0, "token_ids": ids}
        c.update({"delta": {"content": piece}} if chat else {"text": piece})
        if prompt is not None:
            c["prompt_token_ids"] = prompt
        return b"data: " + json.dumps({"choices": [c]}).encode() + b"\n\n"

    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3}}\n\n'
    reads = [
        event(" a", [7], prompt=[1, 2, 3]),
        event(" b", [8]) + event("c", [9]) + usage,  # one read, after the first token
        b"data: [DONE]\n\n",
    ]
    kept = StreamReader(chat=chat, collect=True)
    plain = StreamReader(chat=chat)
    for i, data in enumerate(reads):
        kept.feed(data, i)
        plain.feed(data, i)
    kept.finish()
    plain.finish()
    assert kept.text == " a bc"
    assert kept.prompt_token_ids == [1, 2, 3] and kept.token_ids == [7, 8, 9]
    assert kept.chunk_times_ns == plain.chunk_times_ns == [0, 1, 1]
    assert plain.text == "" and plain.token_ids is None  # the hot path keeps nothing
    assert kept.usage == plain.usage
