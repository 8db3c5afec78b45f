"""``kvlab bench`` checks its sizes before it builds a workload: a number of requests,
a level or a token count past its bound (or below 1) is one line naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_run import run_cli


@pytest.mark.parametrize(
    ("option", "value", "experiment"),
    [
        ("--requests", "100000000000", "concurrency"),
        ("--requests", "0", "concurrency"),
        ("--levels", "1,99999999", "concurrency"),
        ("--prompt-tokens", "1000000000", "concurrency"),
        ("--output-tokens", "-3", "seqlen"),
        ("--lengths", "16,2000000000", "seqlen"),
        ("--max-model-len", "0", "seqlen"),
        ("--threads", "0", "seqlen"),
    ],
)
def test_sizes_are_bounded(option: str, value: str, experiment: str, tmp_path: Path) -> None:
    argv = ["bench", "-e", experiment, "--backend", "openai", "--endpoint", "http://127.0.0.1:9"]
    res = run_cli([*argv, "--model", "m", "-o", str(tmp_path / "b"), option, value], limit_s=20)
    assert res.code == 2, res.err
    assert option in res.one_line_error()
    assert not (tmp_path / "b").exists()
