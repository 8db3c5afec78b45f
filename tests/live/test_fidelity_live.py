"""A slim run of benchmarks/fidelity.py against the vLLM CPU server: calibrate the clock
with the small designed sweep, check it against vLLM's own timings, simulate a held-out
workload with it, and check that the calibration moves the simulated latencies toward
the server's (the roofline is a GPU's clock: on two CPU cores every latency it gives is
far too short)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli_run import CliRun
from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
from kvlab.calibrate import load_calibration, per_request_errors
from kvlab.calibrate.sweep import load_timings
from kvlab.sim import SimConfig, simulate
from kvlab.sim.cost_model import CalibratedCost
from kvlab.workload.generators import generate

pytestmark = pytest.mark.live


def replay(server: Any, wl: Any) -> Any:
    cfg = OpenAIConfig(  # token ids asked for, as the sweep (--token-ids) asks
        endpoint=server.url,
        model=server.model,
        cache_mode="cold",
        metrics_interval_s=0.1,
        token_ids=True,
    )
    return OpenAIBackend(cfg).run(wl)


def test_a_calibrated_clock_brings_held_out_latencies_closer(
    vllm_server: Any, tiny_model_dir: Path, tmp_path: Path, cli: Callable[[list[str]], CliRun]
) -> None:
    chat = dict(system_tokens=128, user_tokens=40, output_tokens=16, arrival="poisson")
    held = generate("chat", seed=8, sessions=16, rate_per_s=2.0, **chat)  # type: ignore[arg-type]
    out = cli(
        [
            "calibrate",
            "--endpoint",
            vllm_server.url,
            "--model",
            str(tiny_model_dir / "config.json"),
            "--quick",
            "--token-ids",
            "-o",
            str(tmp_path / "calib.json"),
        ]
    )
    assert out.code == 0, out.err
    print(out.out)
    assert "warm-up: 64 requests, every decode batch size once (not kept)" in out.err
    real_held = replay(vllm_server, held)

    doc = json.loads((tmp_path / "calib.json").read_text())
    cal = load_calibration(tmp_path / "calib.json")
    parts = [Path(r) for r in cal.runs]
    assert parts and all(p.parent == tmp_path / "calib-sweep" for p in parts)
    assert cal.num_observations["prefill"] >= 6 and cal.num_observations["decode"] >= 6
    assert cal.notes == []  # the sweep's design leaves no term unidentified
    assert doc["settings"]["token_ids"] is True  # the sweep's response options, recorded
    assert cal.coefficients["overhead_s"] + cal.coefficients["request_overhead_s"] > 0
    # vLLM's own timings were read around every part; the lone part gets a prefill check
    assert all(load_timings(p) is not None for p in parts)
    lone = {c["quantity"]: c for c in doc["server_check"] if c["part"] == "lone"}
    assert lone["prefill step"]["server_s"] > 0 and lone["decode step"]["server_s"] > 0
    assert "checked against the server's own timings" in out.out

    cache = real_held.config["server"]["cache_config"]
    base = SimConfig(
        model=str(tiny_model_dir),
        gpu="h100-sxm",
        block_size=int(cache["block_size"]),
        num_blocks=int(cache["num_gpu_blocks"]),
        max_model_len=vllm_server.max_model_len,
        max_num_batched_tokens=2048,  # the CPU build's API-server defaults (not the GPU's)
        max_num_seqs=128,
        async_scheduling=False,  # (the CPU build schedules synchronously)
    )
    roof = simulate(held, base)
    calibrated = simulate(held, base.replace(cost_model=CalibratedCost.from_calibration(cal, "c")))
    e_roof, e_cal = per_request_errors(real_held, roof), per_request_errors(real_held, calibrated)
    print(
        f"held-out MAPE roofline -> calibrated: E2E {e_roof['e2e_s']} -> {e_cal['e2e_s']}; "
        f"TTFT {e_roof['ttft_s']} -> {e_cal['ttft_s']}"
    )
    roof_e2e, roof_bias, cal_e2e = (
        e_roof["e2e_s"]["mape"],
        e_roof["e2e_s"]["bias"],
        e_cal["e2e_s"]["mape"],
    )
    roof_ttft, cal_ttft = e_roof["ttft_s"]["mape"], e_cal["ttft_s"]["mape"]
    assert None not in (roof_e2e, roof_bias, cal_e2e, roof_ttft, cal_ttft)
    assert roof_bias < -0.5  # type: ignore[operator]  # a GPU's roofline: far too fast here
    assert cal_e2e < roof_e2e  # type: ignore[operator]
    assert cal_ttft < roof_ttft  # type: ignore[operator]
    # the clock changes timing only: the counting stays the server's
    assert calibrated.summary["prefix_cache_hits"] == real_held.summary["prefix_cache_hits"]
