"""``kvlab replay`` checks its options and the requests' sizes before anything is sent:
bad numbers are one line naming the option (exit 2); a request whose prompt plus
max_tokens does not fit the server's max_model_len (from /v1/models, as vLLM reports
it, or --max-model-len) is refused up front, or with --skip-too-long marked rejected."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_run import run_cli
from kvlab.backends.openai import served_max_model_len
from kvlab.backends.stub import StubConfig, StubServer
from kvlab.results import RunResult
from stub_thread import serve_stub

NOWHERE = "http://127.0.0.1:9"


def _serve(cfg: StubConfig) -> Iterator[StubServer]:
    yield from serve_stub(cfg)


@pytest.fixture
def limited() -> Iterator[StubServer]:
    """A stub that reports max_model_len 64 in /v1/models, as vLLM does."""
    yield from _serve(StubConfig(max_model_len=64))


@pytest.fixture
def unlimited() -> Iterator[StubServer]:
    yield from _serve(StubConfig())


def _workload(path: Path, prompt_tokens: list[int]) -> Path:
    with path.open("w") as f:
        for i, n in enumerate(prompt_tokens):
            segs = [{"kind": "user", "tokens": n, "content": f"u{i}"}]
            rec = {"id": f"r{i}", "arrival_s": 0.0, "segments": segs, "output_tokens": 4}
            f.write(json.dumps(rec) + "\n")
    return path


def test_too_long_is_refused_before_sending(limited: StubServer, tmp_path: Path) -> None:
    wl = _workload(tmp_path / "wl.jsonl", [10, 100, 20_000_000, 12])
    out = tmp_path / "o"
    res = run_cli(["replay", str(wl), "--endpoint", limited.url, "--model", "stub", "-o", str(out)])
    assert res.code == 2
    line = res.one_line_error()
    assert "request 'r1'" in line and "max_model_len 64" in line and "2 requests" in line
    assert "--skip-too-long" in line
    assert limited.num_requests == 0  # nothing sent
    assert not (out / "requests.jsonl").exists()


def test_skip_too_long_marks_them_not_sent(limited: StubServer, tmp_path: Path) -> None:
    wl = _workload(tmp_path / "wl.jsonl", [10, 100, 20_000_000, 12])
    out = tmp_path / "o"
    argv = ["replay", str(wl), "--endpoint", limited.url, "--model", "stub", "-o", str(out)]
    res = run_cli([*argv, "--skip-too-long", "--json"])
    assert res.code == 1, res.err  # not every request ran
    assert limited.num_requests == 2
    run = RunResult.load(out)
    status = {r.request_id: (r.status, r.error) for r in run.records}
    assert status == {
        "r0": ("ok", None),
        "r1": ("rejected", "context_overflow"),
        "r2": ("rejected", "context_overflow"),
        "r3": ("ok", None),
    }
    detail = next(r.error_detail for r in run.records if r.request_id == "r2")
    assert detail is not None and detail.startswith("not sent: prompt 20,000,000")
    assert run.summary["num_completed"] == 2


def test_max_model_len_option(unlimited: StubServer, tmp_path: Path) -> None:
    wl = _workload(tmp_path / "wl.jsonl", [10, 30])
    argv = ["replay", str(wl), "--endpoint", unlimited.url, "--model", "stub"]
    res = run_cli([*argv, "-o", str(tmp_path / "a"), "--max-model-len", "20"])
    assert res.code == 2 and "--max-model-len max_model_len 20" in res.one_line_error()
    assert unlimited.num_requests == 0
    res = run_cli([*argv, "-o", str(tmp_path / "b"), "--json"])  # the server says nothing
    assert res.code == 0, res.err
    assert unlimited.num_requests == 2


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--rate", "nan"),
        ("--rate", "inf"),
        ("--rate", "0"),
        ("--burstiness", "-1"),
        ("--burstiness", "nan"),
        ("--metrics-interval", "inf"),
        ("--metrics-interval", "-0.5"),
        ("--timeout", "1e400"),
        ("--timeout", "0"),
        ("--concurrency", "0"),
        ("--max-errors", "0"),
        ("--max-model-len", "-4"),
    ],
)
def test_bad_numbers_are_one_line(option: str, value: str, tmp_path: Path) -> None:
    wl = _workload(tmp_path / "wl.jsonl", [10])
    out = tmp_path / "o"
    argv = ["replay", str(wl), "--endpoint", NOWHERE, "--model", "m", "-o", str(out)]
    res = run_cli([*argv, option, value], limit_s=20)
    assert res.code == 2, res.err
    assert option in res.one_line_error()
    assert not out.exists()  # checked before anything was made


def test_served_max_model_len() -> None:
    body = b'{"data":[{"id":"a","max_model_len":4096},{"id":"b","max_model_len":512}]}'
    assert served_max_model_len(body, "b") == 512
    assert served_max_model_len(body, "zzz") is None  # several models, none of that name
    assert served_max_model_len(b'{"data":[{"id":"x","max_model_len":8}]}', "alias") == 8
    for bad in (b"not json", b"[]", b'{"data":3}', b'{"data":[{"max_model_len":"9"}]}'):
        assert served_max_model_len(bad, "a") is None
