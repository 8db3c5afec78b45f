"""Numbers at the boundary: token counts and times in workload files, and the parameters of
``kvlab workload gen``, are checked where they enter; a bad one is one ``error:`` line (exit
2) naming the file, line and field or the parameter, never a traceback or a run that does
not end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvlab.errors import WorkloadError
from kvlab.workload.generators import generate
from kvlab.workload.io import parse_request
from kvlab.workload.records import MAX_TOKENS

Cli = Callable[[list[str]], Any]


def _request(tokens: Any = 4, output: Any = 1, **extra: Any) -> dict[str, Any]:
    seg = {"kind": "user", "tokens": tokens, "content": "x"}
    return {"id": "a", "arrival_s": 0, "segments": [seg], "output_tokens": output, **extra}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_request(tokens=1e30), "segments[0].tokens"),
        (_request(tokens=MAX_TOKENS + 1), "segments[0].tokens"),
        (_request(tokens=10**40), "segments[0].tokens"),
        (_request(output=1e30), "output_tokens"),
        (_request(output=MAX_TOKENS + 1), "output_tokens"),
        (_request(turn=1e30, session="s"), "turn"),
        (_request(priority=10**30), "priority"),
    ],
)
def test_token_counts_above_the_bound_name_line_and_field(
    cli: Cli, tmp_path: Path, request_: dict[str, Any], field: str
) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text('{"kvlab_workload": 1}\n' + json.dumps(request_) + "\n")
    for command in ("stats", "show"):
        res = cli(["workload", command, str(path)])
        assert res.code == 2, res.err
        assert f"{path}:2: field '{field}'" in res.one_line_error()


def test_prompt_total_above_the_bound(tmp_path: Path) -> None:
    half = MAX_TOKENS // 2 + 1
    obj = _request()
    obj["segments"] = [{"tokens": half, "content": "a"}, {"tokens": half, "content": "b"}]
    with pytest.raises(WorkloadError, match=r"field 'segments'.*above the limit"):
        parse_request(obj)


def test_bound_itself_is_accepted() -> None:
    assert parse_request(_request(tokens=MAX_TOKENS, output=MAX_TOKENS)).prompt_tokens == (
        MAX_TOKENS
    )


def test_stats_of_one_huge_prompt_is_quick(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps(_request(tokens=MAX_TOKENS, output=MAX_TOKENS)) + "\n")
    res = cli(["workload", "stats", str(path), "--json"])
    assert res.code == 0, res.err
    assert json.loads(res.out)["prompt_tokens_total"] == MAX_TOKENS
    assert res.wall_s < 5


GEN_BAD = [
    (["chat", "--rate", "nan"], "rate_per_s"),
    (["chat", "--rate", "inf"], "rate_per_s"),
    (["chat", "--think-time", "nan"], "think_time_s"),
    (["chat", "--think-time", "inf"], "think_time_s"),
    (["chat", "--burstiness", "inf", "--arrival", "gamma"], "burstiness"),
    (["chat", "--set", "length_cv=inf"], "length_cv"),
    (["chat", "--set", "length_cv=1e300"], "length_cv"),
    (["chat", "--set", "ramp_s=nan", "--arrival", "closed"], "ramp_s"),
    (["rag", "--set", "zipf_s=nan"], "zipf_s"),
    (["mixed", "--set", "long_fraction=1.5"], "long_fraction"),
    (["rag", "--set", "top_k=41", "--set", "documents=40"], "top_k"),
    (["chat", "--sessions", "1000000000000"], "sessions"),
    (["chat", "--set", "turns=1000000", "--sessions", "1000000"], "turns"),
    (["chat", "--set", "system_tokens=1e30"], "system_tokens"),
    (["rag", "--set", "documents=1000000000000"], "documents"),
    (["chat", "--rate", "1e-300"], "rate_per_s"),
]


@pytest.mark.parametrize(("args", "param"), GEN_BAD, ids=[" ".join(a) for a, _ in GEN_BAD])
def test_gen_rejects_bad_numbers_quickly(
    cli: Cli, tmp_path: Path, args: list[str], param: str
) -> None:
    out = tmp_path / "w.jsonl"
    res = cli(["workload", "gen", *args, "-o", str(out)])
    assert res.code == 2, res.err
    assert param in res.one_line_error()
    assert res.wall_s < 5
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        (
            "a.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1e30,5\n",
            "Context",
        ),
        ("b.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5,3e9\n", "Gener"),
        ("v.csv", "num_prefill_tokens,num_decode_tokens\n100000000000,5\n", "num_prefill_tokens"),
    ],
)
def test_trace_token_counts_above_the_bound(
    cli: Cli, tmp_path: Path, name: str, text: str, field: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    for argv in (["workload", "stats", str(path)], ["workload", "show", str(path)]):
        res = cli(argv)
        assert res.code == 2, res.err
        line = res.one_line_error()
        assert str(path) in line and field in line and "data row 1" in line


@pytest.mark.parametrize("words", ["-5", "100000000"])
def test_show_words_out_of_range(cli: Cli, tmp_path: Path, words: str) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps(_request(tokens=MAX_TOKENS, session="s")) + "\n")
    res = cli(["workload", "show", str(path), "--words", words])
    assert res.code == 2, res.err
    assert "--words" in res.one_line_error()


def test_segment_cache_gives_equal_requests_and_keeps_types_apart() -> None:
    from kvlab.workload.records import Request, Segment

    cache: dict[tuple[str, int, str, str], Segment] = {}
    for shape in ("sessions", "agentic"):
        for r in generate(shape, seed=2, sessions=2).requests:
            d = r.to_dict()
            assert Request.from_dict(d, cache) == Request.from_dict(d)
    first = parse_request(_request(tokens=1), cache)
    with pytest.raises(WorkloadError, match=r"segments\[0\]\.tokens"):
        parse_request(_request(tokens=True), cache)
    again = parse_request(_request(tokens=1.0), cache)
    assert again.segments == first.segments
