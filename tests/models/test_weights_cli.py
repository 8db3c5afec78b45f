"""``kvlab models list / show`` print the checkpoint's weight format and bytes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kvlab.cli.app import app
from kvlab.models import get_model
from kvlab.models.spec import weights_bytes


def _run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_list_json_has_weights() -> None:
    res = _run("models", "list", "--json")
    assert res.exit_code == 0, res.output
    rows = {r["alias"]: r for r in json.loads(res.output)}
    oss = rows["gpt-oss-120b"]
    assert oss["weights_format"] == "mxfp4 experts + bf16"
    assert oss["weights_bytes"] == weights_bytes(get_model("gpt-oss-120b"))
    assert rows["deepseek-v3"]["weights_format"] == "fp8 linears + bf16"
    assert rows["llama-3.1-8b"]["weights_bytes"] == 2 * 8_030_261_248


def test_show_json_weight_quant() -> None:
    res = _run("models", "show", "deepseek-v3", "--json", "--tp", "8")
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["weight_quant"] == {
        "method": "fp8",
        "categories": ["attention", "mlp", "experts", "shared_experts"],
        "block_size": [128, 128],
        "bytes_per_param": 1 + 4 / (128 * 128),
    }
    assert s["weights_bytes"] == weights_bytes(get_model("deepseek-v3"), tp=8)
    assert sum(s["weights_bytes_by_category"].values()) == s["weights_bytes"]
    assert sum(s["params_by_category"].values()) == s["num_params"]
    res = _run("models", "show", "llama-3.1-8b", "--json")
    assert json.loads(res.output)["weight_quant"] is None


def test_show_table() -> None:
    res = _run("models", "show", "gpt-oss-120b")
    assert res.exit_code == 0, res.output
    assert "weights (mxfp4 experts + bf16)" in res.output
    assert "60.8 GiB" in res.output
    assert "114,661,785,600" in res.output  # routed expert weights
    assert "weights by category" in res.output
