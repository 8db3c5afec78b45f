"""``kvlab plan`` prices weights as the checkpoint ships (MXFP4 / FP8), --weight-dtype overrides."""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from kvlab.cli.app import app
from kvlab.hardware import get_gpu
from kvlab.models import get_model
from kvlab.models.spec import weights_bytes
from kvlab.plan import plan

GIB = 2**30


def test_gpt_oss_120b_fits_one_h100() -> None:
    spec = get_model("gpt-oss-120b")
    r = plan(spec, "h100-sxm", whatifs=False)
    assert r.weights_bytes == math.ceil(weights_bytes(spec))
    assert r.weights_format == "mxfp4 experts + bf16"
    assert r.available_kv_bytes == (
        math.ceil(get_gpu("h100-sxm").memory_bytes * 0.92) - r.weights_bytes - r.overhead_bytes
    )
    # A sensible KV pool: several GiB, at least one full 131,072-token sequence.
    assert 5 * GIB < r.available_kv_bytes < 15 * GIB
    assert r.fits and r.vllm_starts
    assert r.max_concurrency >= 1
    assert any("MXFP4" in n for n in r.notes)


def test_bf16_override_does_not_fit() -> None:
    r = plan("gpt-oss-120b", "h100-sxm", weight_dtype="bf16", whatifs=False)
    assert r.weights_bytes == get_model("gpt-oss-120b").num_params * 2
    assert r.weights_format == "bf16"
    assert not r.fits
    assert not any("MXFP4" in n for n in r.notes)


def test_deepseek_v3_weights_per_gpu_at_tp8() -> None:
    spec = get_model("deepseek-v3")
    r = plan(spec, "h200", tp=8, whatifs=False)
    assert r.weights_bytes == math.ceil(weights_bytes(spec) / 8)
    assert r.weights_format == "fp8 linears + bf16"
    assert r.fits


def test_bf16_model_unchanged() -> None:
    r = plan("llama-3.1-8b", "h100-sxm", whatifs=False)
    assert r.weights_bytes == 2 * 8_030_261_248
    assert r.weights_format == "bf16"


def test_cli_json_and_table() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["plan", "--model", "gpt-oss-120b", "--gpu", "h100-sxm", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["weights_format"] == "mxfp4 experts + bf16"
    assert d["weight_dtype"] == "model"
    assert d["weights_bytes"] == math.ceil(weights_bytes(get_model("gpt-oss-120b")))
    assert d["fits"] is True
    args = ["plan", "--model", "gpt-oss-120b", "--gpu", "h100-sxm", "--json"]
    res = runner.invoke(app, [*args, "--weight-dtype", "bf16"])
    d = json.loads(res.output)
    assert (d["weights_format"], d["weight_dtype"], d["fits"]) == ("bf16", "bf16", False)
    res = runner.invoke(app, ["plan", "--model", "gpt-oss-120b", "--gpu", "h100-sxm"])
    assert res.exit_code == 0, res.output
    assert "weights (mxfp4 experts + bf16)" in res.output
