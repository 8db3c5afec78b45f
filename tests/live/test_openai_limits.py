"""Bounded resources in ``kvlab replay`` against a server that reports no context limit
(SGLang, llama.cpp and Ollama answer /v1/models without max_model_len): every request
is checked before any prompt text is built, against --max-model-len, else the model's
max_position_embeddings when kvlab knows the model, else kvlab's ceiling
(MAX_REQUEST_TOKENS); what is built follows what is sent, never a number in the file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_run import run_cli
from kvlab.backends import prompt as prompt_mod
from kvlab.backends.openai import MAX_REQUEST_TOKENS, context_limit
from kvlab.backends.stub import StubConfig, StubServer
from kvlab.results import RunResult
from stub_thread import serve_stub

LLAMA = "meta-llama/Llama-3.1-8B"  # in the catalog: max_position_embeddings 131,072


@pytest.fixture
def silent() -> Iterator[StubServer]:
    """A stub whose /v1/models names no max_model_len."""
    yield from serve_stub(StubConfig())


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The word counts of every segment text the live backend builds."""
    sizes: list[int] = []
    real = prompt_mod.text

    def text(content_id: str, n: int) -> str:
        sizes.append(n)
        return real(content_id, n)

    monkeypatch.setattr(prompt_mod, "text", text)
    return sizes


def _workload(path: Path, prompt_tokens: list[int]) -> Path:
    with path.open("w") as f:
        for i, n in enumerate(prompt_tokens):
            segs = [{"kind": "user", "tokens": n, "content": f"u{i}"}]
            rec = {"id": f"r{i}", "arrival_s": 0.0, "segments": segs, "output_tokens": 4}
            f.write(json.dumps(rec) + "\n")
    return path


def test_context_limit_order_and_ceiling() -> None:
    assert context_limit(100, 50, LLAMA).tokens == 100  # --max-model-len first
    assert context_limit(None, 50, LLAMA).tokens == 50  # then the server's
    got = context_limit(None, None, LLAMA)
    assert got.tokens == 131_072 and "max_position_embeddings 131,072" in str(got)
    none = context_limit(None, None, "qwen2.5:0.5b")  # an Ollama tag kvlab does not know
    assert none.tokens == MAX_REQUEST_TOKENS and "pass --max-model-len" in str(none)
    assert context_limit(None, None, None).tokens == MAX_REQUEST_TOKENS
    # a bigger figure from anywhere is still capped by the ceiling
    assert context_limit(10**12, None, None).tokens == MAX_REQUEST_TOKENS
    assert context_limit(None, 10**12, None).tokens == MAX_REQUEST_TOKENS


def test_huge_prompt_refused_by_the_ceiling_before_any_text(
    silent: StubServer, built: list[int], tmp_path: Path
) -> None:
    wl = _workload(tmp_path / "wl.jsonl", [10, 20_000_000, 12, 30_000_000])
    out = tmp_path / "o"
    res = run_cli(["replay", str(wl), "--endpoint", silent.url, "--model", "stub", "-o", str(out)])
    assert res.code == 2, res.err
    line = res.one_line_error()
    assert "request 'r1'" in line and "prompt 20,000,000" in line and "2 requests" in line
    assert f"kvlab's ceiling of {MAX_REQUEST_TOKENS:,} tokens" in line
    assert "--max-model-len" in line and "--skip-too-long" in line
    assert silent.num_requests == 0 and built == []


def test_skip_too_long_sends_the_rest_and_builds_only_their_text(
    silent: StubServer, built: list[int], tmp_path: Path
) -> None:
    wl = _workload(tmp_path / "wl.jsonl", [10, 20_000_000, 12])
    out = tmp_path / "o"
    argv = ["replay", str(wl), "--endpoint", silent.url, "--model", "stub", "-o", str(out)]
    res = run_cli([*argv, "--skip-too-long", "--cache-mode", "primed", "--json"])
    assert res.code == 1, res.err  # one request was not sent
    run = RunResult.load(out)
    status = {r.request_id: (r.status, r.error) for r in run.records}
    assert status["r1"] == ("rejected", "context_overflow")
    assert status["r0"] == status["r2"] == ("ok", None)
    assert built and max(built) <= 12  # priming and sending built only the small prompts


def test_model_config_limit_when_the_server_says_nothing(
    silent: StubServer, built: list[int], tmp_path: Path
) -> None:
    wl = _workload(tmp_path / "wl.jsonl", [10, 200_000])
    argv = ["replay", str(wl), "--endpoint", silent.url, "--model", "stub"]
    res = run_cli([*argv, "-o", str(tmp_path / "a"), "--model-config", LLAMA])
    assert res.code == 2, res.err
    line = res.one_line_error()
    assert "request 'r1'" in line and "max_position_embeddings 131,072" in line
    assert silent.num_requests == 0 and built == []
    res = run_cli([*argv, "-o", str(tmp_path / "b"), "--model-config", "no-such-model-xyz"])
    assert res.code == 2 and "unknown model 'no-such-model-xyz'" in res.one_line_error()
    assert not (tmp_path / "b").exists()


def test_served_name_known_to_kvlab_gives_the_limit(built: list[int], tmp_path: Path) -> None:
    for server in serve_stub(StubConfig(model=LLAMA)):
        wl = _workload(tmp_path / "wl.jsonl", [200_000])
        argv = ["replay", str(wl), "--endpoint", server.url, "--model", LLAMA]
        res = run_cli([*argv, "-o", str(tmp_path / "a")])
        assert res.code == 2 and "max_position_embeddings 131,072" in res.one_line_error()
        assert server.num_requests == 0 and built == []
