"""``kvlab bench`` and ``kvlab tiny-model`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kvlab.cli.app import app
from kvlab.errors import ConfigError


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def test_unknown_experiment_is_a_config_error(tmp_path: Path) -> None:
    res = _invoke(["bench", "-e", "nope", "--out", str(tmp_path)])
    assert isinstance(res.exception, ConfigError)
    assert "choose one of concurrency, seqlen, mixed, prefix" in str(res.exception)


def test_backends_need_their_options(tmp_path: Path) -> None:
    res = _invoke(["bench", "-e", "concurrency", "--backend", "hf", "--out", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "--model-dir" in str(res.exception)
    res = _invoke(["bench", "-e", "mixed", "--backend", "openai", "--out", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "--endpoint" in str(res.exception)
    res = _invoke(["bench", "-e", "mixed", "--backend", "tgi", "--out", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "hf or openai" in str(res.exception)


def test_bad_tiny_model_shape_is_a_config_error(tmp_path: Path) -> None:
    res = _invoke(["tiny-model", str(tmp_path / "m"), "--hidden", "100", "--heads", "3"])
    assert isinstance(res.exception, ConfigError)


@pytest.mark.hf
@pytest.mark.slow
def test_tiny_model_then_bench_seqlen_on_hf(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("matplotlib")
    res = _invoke(["tiny-model", str(tmp_path / "m"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["kv_bytes_per_token_bf16"] == 512
    res = _invoke(
        [
            "bench",
            "-e",
            "seqlen",
            "--backend",
            "hf",
            "--model-dir",
            str(tmp_path / "m"),
            "--lengths",
            "8,24",
            "--output-tokens",
            "3",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output.strip().splitlines()[-1])
    assert [p["sequence_tokens"] for p in doc["points"]] == [10, 26]
    assert [p["kv_bytes_measured_peak"] for p in doc["points"]] == [10 * 512, 26 * 512]
    assert (tmp_path / "out" / "seqlen" / "fig4_kv_vs_seqlen.svg").exists()


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--percentiles", "50,abc", "'abc' is not a number"),
        ("--percentiles", "0", "not in (0, 100]"),
        ("--goodput", "ttft", "is not NAME:MS"),
        ("--goodput", "tpot:-5", "positive number of milliseconds"),
    ],
)
def test_bad_percentiles_or_goodput_stop_bench_before_any_work(
    tmp_path: Path, option: str, value: str, words: str
) -> None:
    res = _invoke(
        ["bench", "-e", "concurrency", "--backend", "hf", "--model-dir", str(tmp_path / "none"),
         "--out", str(tmp_path / "o"), option, value]
    )  # fmt: skip
    assert isinstance(res.exception, ConfigError) and words in str(res.exception)
    assert not (tmp_path / "o").exists()


def test_sequences_longer_than_the_context_are_refused_before_running(tmp_path: Path) -> None:
    """--max-model-len against a server: checked before anything is sent (nothing listens
    on port 9: a run would fail to connect instead)."""
    res = _invoke(
        ["bench", "-e", "concurrency", "--backend", "openai", "--endpoint", "http://127.0.0.1:9",
         "--model", "m", "--max-model-len", "100", "--prompt-tokens", "90",
         "--output-tokens", "20", "--no-check-oom", "--out", str(tmp_path / "o")]
    )  # fmt: skip
    assert isinstance(res.exception, ConfigError)
    assert "110 tokens (prompt + output), exceeds the 100-token context" in str(res.exception)
