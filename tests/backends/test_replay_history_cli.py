"""``kvlab replay --history server`` end to end against the stub server: the run
directory holds transcript.jsonl, and ``kvlab simulate`` replays it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_run import run_cli
from kvlab.backends.stub import StubConfig
from kvlab.workload.io import read_workload
from stub_thread import serve_stub


@pytest.fixture
def stub_url() -> Iterator[str]:
    for server in serve_stub(StubConfig()):
        yield server.url


def sessions_file(path: Path, sessions: int = 2, turns: int = 3) -> Path:
    """``sessions`` conversations of ``turns`` turns, each re-sending its history."""
    lines = []
    for s in range(sessions):
        # a system prompt of its own: no block is shared across sessions, whatever the timing
        history: list[dict[str, object]] = [
            {"kind": "system", "tokens": 16, "content": f"s{s}/sys"}
        ]
        for t in range(turns):
            user = {"kind": "user", "tokens": 8, "content": f"s{s}/u{t}"}
            req: dict[str, object] = {
                "id": f"s{s}-t{t}",
                "session": f"s{s}",
                "turn": t,
                "segments": [*history, user],
                "output_tokens": 4,
                "output_content": f"s{s}/a{t}",
            }
            req.update({"arrival_s": 0.01 * s} if t == 0 else {"think_time_s": 0.0})
            lines.append(json.dumps(req))
            history += [user, {"kind": "assistant", "tokens": 4, "content": f"s{s}/a{t}"}]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_writes_a_transcript_that_simulate_replays(tmp_path: Path, stub_url: str) -> None:
    wl = sessions_file(tmp_path / "s.jsonl")
    out = tmp_path / "run"
    r = run_cli(
        ["replay", str(wl), "--endpoint", stub_url, "--model", "stub", "--history", "server",
         "--metrics-interval", "0", "--out", str(out)],
        limit_s=120,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "transcript: " in r.out
    transcript = read_workload(out / "transcript.jsonl")
    assert [q.request_id for q in transcript.requests] == [
        "s0-t0", "s0-t1", "s0-t2", "s1-t0", "s1-t1", "s1-t2",
    ]  # fmt: skip
    # 16 + 8, then + 4 answer + 8 per turn: the stub counts the words it was sent
    assert [q.prompt_tokens for q in transcript.requests] == [24, 36, 48] * 2
    # the stream arrives in few reads here: the token ids of every chunk were kept
    t1 = transcript.requests[1]
    assert [(g.tokens, g.content_id) for g in t1.segments] == [
        (16, "s0/sys"),
        (8, "s0/u0"),
        (4, "served/s0-t0/answer"),
        (8, "served/s0-t1/prompt"),
    ]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["history"] == "server"
    assert run["config"]["transcript"]["requests"] == 6
    assert run["config"]["transcript"]["with_server_token_ids"] == 6

    sim_out = tmp_path / "sim"
    s = run_cli(
        ["simulate", str(out / "transcript.jsonl"), "--model", "llama-3.1-8b", "--gpu", "h100",
         "--block-size", "4", "--out", str(sim_out), "--json"],
        limit_s=120,
    )  # fmt: skip
    assert s.code == 0, s.err
    summary = json.loads((sim_out / "summary.json").read_text())
    assert summary["num_completed"] == 6
    # per session, with 4-token blocks: turn 1 hits turn 0's 24-token prompt (the
    # answer's last token never had KV, so its block was not full), turn 2 hits turn
    # 1's 36-token prompt: 60 tokens, twice
    assert summary["prefix_cache_hits"] == 120


def test_history_server_refuses_what_it_cannot_do(tmp_path: Path, stub_url: str) -> None:
    wl = sessions_file(tmp_path / "s.jsonl")
    base = ["replay", str(wl), "--endpoint", stub_url, "--model", "stub", "--history", "server"]
    for extra, needle in (
        (["--api", "chat"], "--history server needs --api completions"),
        (["--warmup", "1"], "--warmup cannot be used with --history server"),
        (["--cache-mode", "primed"], "cannot use --cache-mode primed"),
    ):
        r = run_cli([*base, *extra, "--out", str(tmp_path / "x")], limit_s=60)
        assert r.code == 2 and not r.traceback
        assert needle in r.one_line_error()
    r = run_cli([*base[:-1], "everything", "--out", str(tmp_path / "y")], limit_s=60)
    assert r.code == 2 and "--history must be one of scripted, server" in r.one_line_error()
