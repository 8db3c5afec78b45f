"""Every workload command reads a file the same way: a file that cannot be read is one
``error:`` line naming it (exit 2), never a traceback or an "aborted"."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvlab.workload.generators import generate
from kvlab.workload.io import write_workload

Cli = Callable[[list[str]], Any]


def _bad_files(tmp: Path) -> dict[str, Path]:
    ok = write_workload(generate("chat", seed=0, sessions=40), tmp / "ok.jsonl.gz")
    files = {
        "binary": tmp / "bin.jsonl",
        "directory": tmp / "adir",
        "not-gzip": tmp / "plain.jsonl.gz",
        "truncated-gzip": tmp / "cut.jsonl.gz",
        "corrupt-gzip": tmp / "corrupt.jsonl.gz",
        "binary-in-gzip": tmp / "bin.jsonl.gz",
        "late-binary": tmp / "late.jsonl",
    }
    files["binary"].write_bytes(b"\x00\xff\xfe binary")
    files["directory"].mkdir()
    files["not-gzip"].write_text('{"kvlab_workload": 1}\n')
    data = ok.read_bytes()
    files["truncated-gzip"].write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    for i in range(len(corrupt) // 2, len(corrupt) // 2 + 64):
        corrupt[i] ^= 0x5A
    files["corrupt-gzip"].write_bytes(bytes(corrupt))
    files["binary-in-gzip"].write_bytes(gzip.compress(b"\x00\xff\xfe"))
    good = '{"id": "a", "arrival_s": 0, "segments": [{"tokens": 4, "content": "x"}], '
    good += '"output_tokens": 1}\n'
    files["late-binary"].write_bytes(good.encode() * 3 + b"\xff\xfe\n")
    return files


@pytest.mark.parametrize(
    "kind",
    [
        "binary",
        "directory",
        "not-gzip",
        "truncated-gzip",
        "corrupt-gzip",
        "binary-in-gzip",
        "late-binary",
    ],
)
@pytest.mark.parametrize("command", ["stats", "show", "simulate"])
def test_unreadable_file_is_one_line(cli: Cli, tmp_path: Path, kind: str, command: str) -> None:
    path = _bad_files(tmp_path)[kind]
    argv = ["workload", command, str(path)]
    if command == "simulate":
        argv = ["simulate", str(path), "--out", str(tmp_path / "run")]
    res = cli(argv)
    assert res.code == 2, res.err
    line = res.one_line_error()
    assert str(path) in line


def test_late_binary_line_is_named(cli: Cli, tmp_path: Path) -> None:
    path = _bad_files(tmp_path)["late-binary"]
    res = cli(["workload", "stats", str(path)])
    assert f"{path}:4: not UTF-8 text" in res.one_line_error()


@pytest.mark.parametrize("name", ["azure-conv", "mooncake-synthetic", "vidur-arxiv"])
def test_builtin_trace_names_work_in_show(cli: Cli, name: str) -> None:
    res = cli(["workload", "show", name, "--request", "0", "--json"])
    assert res.code == 0, res.err
    assert json.loads(res.out)["id"] == "0"


def test_mooncake_file_with_hash_ids_in_stats(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]},
        {"timestamp": 10, "input_length": 1024, "output_length": 5, "hash_ids": [1, 3]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = cli(["workload", "stats", str(path), "--json"])
    assert res.code == 0, res.err
    s = json.loads(res.out)
    assert s["num_requests"] == 2 and s["prefix_reuse"]["hit_tokens"] == 512


def test_builtin_trace_name_in_stats_and_zero_hit_rate_says_why(cli: Cli) -> None:
    res = cli(["workload", "stats", "azure-code"])
    assert res.code == 0, res.err
    assert "no prefix information" in res.out
    s = json.loads(cli(["workload", "stats", "azure-code", "--json"]).out)
    assert s["num_requests"] > 1000
    assert s["prefix_reuse"]["hit_rate"] == 0.0 and s["prefix_information"] is False


def test_kvlab_file_reads_the_same_in_stats_and_simulate(cli: Cli, tmp_path: Path) -> None:
    path = write_workload(generate("chat", seed=1, sessions=5), tmp_path / "c.jsonl")
    s = json.loads(cli(["workload", "stats", str(path), "--json"]).out)
    assert s["num_requests"] == 5 and "prefix_information" not in s


def test_corrupt_deflate_late_in_a_trace(cli: Cli, tmp_path: Path, monkeypatch: Any) -> None:
    import zlib

    from kvlab.workload import importers

    path = tmp_path / "mc.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [1]}\n')

    def corrupt(p: Path, name: str | None = None) -> Any:
        raise zlib.error("Error -3 while decompressing data: invalid distance too far back")

    monkeypatch.setattr(importers, "read_mooncake", corrupt)
    res = cli(["workload", "stats", str(path)])
    assert res.code == 2, res.err
    assert "corrupt gzip data" in res.one_line_error()


@pytest.mark.parametrize("kind", ["directory", "parent-is-file", "unwritable-parent"])
def test_gen_output_path_errors_are_one_line(cli: Cli, tmp_path: Path, kind: str) -> None:
    import os

    if kind == "directory":
        out = tmp_path / "d"
        out.mkdir()
    elif kind == "parent-is-file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "w.jsonl"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "w.jsonl"
    res = cli(["workload", "gen", "chat", "--sessions", "2", "-o", str(out)])
    assert res.code == 2, res.err
    assert str(out) in res.one_line_error() or str(out.parent) in res.one_line_error()


def test_written_workload_follows_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_workload(generate("chat", seed=0, sessions=2), tmp_path / "w.jsonl")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_simulate_says_why_a_trace_without_prefixes_hits_nothing(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "az.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.1000000,374,12\n"
    )
    res = cli(["simulate", str(path), "--num-blocks", "200", "-o", str(tmp_path / "r")])
    assert res.code == 0, res.err
    assert "hit rate 0.000" in res.out and "no prefix information" in res.out
    mc = tmp_path / "mc.jsonl"
    mc.write_text(
        json.dumps({"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]})
        + "\n"
    )
    res = cli(["simulate", str(mc), "--num-blocks", "200", "-o", str(tmp_path / "m")])
    assert res.code == 0, res.err
    assert "no prefix information" not in res.out
