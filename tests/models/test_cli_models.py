"""``kvlab models list`` and ``kvlab models show`` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvlab.cli.app import app, main
from kvlab.cli.models import fmt_bytes, fmt_params
from kvlab.models import list_models

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "kvlab" / "data" / "model_configs"


def _run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_list_json() -> None:
    res = _run("models", "list", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == len(list_models()) >= 30
    by_alias = {r["alias"]: r for r in rows}
    llama = by_alias["llama-3.1-8b"]
    assert llama["kv_bytes_per_token_bf16"] == 131_072
    assert llama["layers_by_kind"] == {"full": 32}
    assert llama["max_context"] == 131_072
    oss = by_alias["gpt-oss-120b"]
    assert oss["layers_by_kind"] == {"full": 18, "sliding": 18}
    assert oss["num_active_params"] < oss["num_params"]


def test_list_table() -> None:
    res = _run("models", "list")
    assert res.exit_code == 0, res.output
    assert "meta-llama/Llama-3.1-8B" in res.output
    assert "nemotron-h-8b" in res.output
    assert "128 KiB" in res.output  # Llama-3.1-8B bytes per token
    assert "24 mamba2" in res.output


def test_show_json_llama() -> None:
    res = _run("models", "show", "llama-3.1-8b", "--json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["kv_bytes_per_token"] == 131_072
    assert s["max_context_sequence_bytes"] == 17_179_869_184
    assert s["weights_bytes"] == s["num_params"] * 2
    (group,) = s["layer_groups"]
    assert (group["kind"], group["count"], group["num_kv_heads"], group["head_dim"]) == (
        "full",
        32,
        8,
        128,
    )
    assert group["bytes_per_token"] == 4096


def test_show_tp_and_dtype() -> None:
    res = _run("models", "show", "gpt-oss-120b", "--tp", "2", "--kv-dtype", "fp8", "--json")
    s = json.loads(res.output)
    assert s["kv_bytes_per_token"] == 36_864 / 4
    assert s["sliding_cap_bytes"] == 4.5 * 2**20 / 4
    assert {g["num_kv_heads_per_gpu"] for g in s["layer_groups"]} == {4}


def test_show_table_hybrid() -> None:
    res = _run("models", "show", "nemotron-h-8b")
    assert res.exit_code == 0, res.output
    assert "mamba2" in res.output and "16,384 B" in res.output
    assert "97.4 MiB" in res.output  # float32 SSM + bf16 conv state, vLLM's NemotronH default


def test_show_path() -> None:
    res = _run("models", "show", str(CONFIGS / "deepseek-ai--DeepSeek-V3.json"), "--json")
    s = json.loads(res.output)
    assert s["name"] == "deepseek-ai/DeepSeek-V3"
    assert s["kv_bytes_per_token"] == 70_272


def test_show_unknown_model_one_line_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as e:
        main(["models", "show", "llama-3.1-8"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model") and err.count("\n") == 1
    assert "llama-3.1-8b" in err


def test_formatters() -> None:
    assert fmt_bytes(131_072) == "128 KiB"
    assert fmt_bytes(4.5 * 2**20) == "4.5 MiB"
    assert fmt_bytes(512) == "512 B"
    assert fmt_params(8_030_261_248) == "8.03B"
    assert fmt_params(494_032_768) == "494M"
