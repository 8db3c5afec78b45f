"""``kvlab plan`` and ``kvlab env`` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvlab.cli.app import app, main
from kvlab.models.spec import ModelSpec

SRC = Path(__file__).resolve().parents[2] / "src"


def _kvlab(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(
        [sys.executable, "-m", "kvlab", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def fake_catalog(monkeypatch: pytest.MonkeyPatch, llama: ModelSpec) -> None:
    """Resolve every model name to the hand-built Llama-3.1-8B."""
    import importlib

    # the module that resolves names (kvlab.plan is also the function kvlab re-exports)
    planner = importlib.import_module("kvlab.plan.planner")
    monkeypatch.setattr(planner, "_resolve_model", lambda name: llama)


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 0), out, err


def test_json_with_given_kv_memory(fake_catalog: None) -> None:
    res = CliRunner().invoke(
        app,
        ["plan", "--context", "8192", "--kv-cache-memory-bytes", str(10 * 2**30), "--json"],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)  # exactly one JSON object
    assert d["num_gpu_blocks"] == 5120
    assert d["kv_cache_tokens"] == 81920
    assert d["max_concurrency"] == 10.0
    assert d["gpu"] == "h100-sxm"


def test_rich_output_has_the_sections(fake_catalog: None) -> None:
    res = CliRunner().invoke(app, ["plan", "--context", "8192", "--offload-gb", "32"])
    assert res.exit_code == 0, res.output
    for word in ("Memory per GPU", "KV cache", "Verdict", "FITS", "What if", "CPU offload tier"):
        assert word in res.output


def test_custom_gpu(fake_catalog: None) -> None:
    res = CliRunner().invoke(app, ["plan", "--gpu-memory-gb", "48", "--context", "4096", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["gpu"] == "custom" and d["gpu_memory_bytes"] == 48 * 2**30


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--context", "-5"], "context must be >= 1"),
        (["--tp", "3"], "does not divide"),
        (["--gpu-memory-utilization", "1.2"], "(0, 1]"),
        (["--gpu-memory-utilization", "0"], "(0, 1]"),
        (["--gpu", "h1000"], "unknown GPU 'h1000'"),
        (["--kv-dtype", "fp4x"], "unknown dtype"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    fake_catalog: None, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, out, err = _main(["plan", *args], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_unknown_gpu_in_a_subprocess() -> None:
    res = _kvlab("plan", "--gpu", "h10O")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "did you mean" in res.stderr


def test_list_gpus_json() -> None:
    res = CliRunner().invoke(app, ["plan", "--list-gpus", "--json"])
    assert res.exit_code == 0
    names = [g["name"] for g in json.loads(res.output)]
    assert "h100-sxm" in names and "dgx-spark" in names


def test_env_json() -> None:
    res = CliRunner().invoke(app, ["env", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert {
        "platform",
        "python",
        "cpu_model",
        "cpu_count",
        "ram_bytes",
        "gpus",
        "libraries",
    } <= set(d)
    assert d["libraries"]["kvlab"]
    assert "torch" in d["libraries"]


def test_env_imports_nothing_heavy() -> None:
    code = (
        "import sys; from kvlab.cli.env import collect; collect();"
        "bad = {'torch','transformers','vllm','matplotlib','aiohttp'} & set(sys.modules);"
        "print(sorted(bad)); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr


# --- with the real model catalog -------------------------------------------------


def test_done_when_llama_131072_json() -> None:
    import kvlab.models.catalog  # noqa: F401  (a broken catalog must fail here)

    res = _kvlab(
        "plan",
        "--model",
        "meta-llama/Llama-3.1-8B",
        "--gpu",
        "h100-sxm",
        "--context",
        "131072",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["kv_bytes_per_token"] == 131072
    assert d["sequence_bytes"] == 17179869184


def test_default_plan_runs() -> None:
    import kvlab.models.catalog  # noqa: F401  (a broken catalog must fail here)

    res = CliRunner().invoke(app, ["plan", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["model"] == "meta-llama/Llama-3.1-8B" and d["gpu"] == "h100-sxm"
    assert d["context_tokens"] == 131072


def test_unknown_model_is_one_line_exit_2() -> None:
    import kvlab.models.catalog  # noqa: F401  (a broken catalog must fail here)

    res = _kvlab("plan", "--model", "meta-llama/Llama-9-8B")
    assert res.returncode == 2
    assert res.stderr.startswith("error: unknown model") and res.stderr.count("\n") == 1


def test_kv_figures_say_per_gpu_under_tp() -> None:
    args = ["plan", "--model", "llama-3.1-70b", "--gpu", "h100", "--context", "8192"]
    one = CliRunner().invoke(app, [*args, "--tp", "1"], env={"COLUMNS": "200"})
    four = CliRunner().invoke(app, [*args, "--tp", "4"], env={"COLUMNS": "200"})
    assert one.exit_code == 0 and four.exit_code == 0, one.output + four.output
    assert "KV bytes per token per GPU (growing)" in four.output
    assert "KV cache per GPU" in four.output and "bytes per block per GPU" in four.output
    assert "per GPU (growing)" not in one.output and "KV cache per GPU" not in one.output
    # the figures are one GPU's share: 80 layers x 8 KV heads x 128 x 2 x 2 B / 4
    assert "81,920" in four.output and "327,680" in one.output
