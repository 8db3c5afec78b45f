"""``kvlab calibrate``: observations from streamed records, the fit, the file, the clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from cli_run import CliRun
from kvlab.calibrate import Observation, fit, load_calibration, observations
from kvlab.errors import ConfigError
from kvlab.results import RequestRecord, RunResult
from kvlab.sim.cost_model import TICKS_PER_S, CalibratedCost

BPT = 1000.0  # KV bytes per token of the synthetic model
TRUE = {"overhead_s": 0.004, "per_token_s": 0.0002, "per_kv_byte_s": 2e-9}


def step(tokens: float, kv_bytes: float) -> float:
    return TRUE["overhead_s"] + TRUE["per_token_s"] * tokens + TRUE["per_kv_byte_s"] * kv_bytes


def test_fit_recovers_exact_linear_steps() -> None:
    obs = [
        Observation(kind, t, k, step(t, k), f"r{i}")
        for i, (kind, t, k) in enumerate(
            [
                ("prefill", 100, 1e5),
                ("prefill", 400, 4e5),
                ("decode", 1, 2e5),
                ("decode", 3, 9e5),
                ("decode", 8, 3e6),
                ("prefill", 50, 5e4),
            ]
        )
    ]
    cal = fit(obs, BPT)
    for k, v in TRUE.items():
        assert cal.coefficients[k] == pytest.approx(v, rel=1e-6)
    assert cal.fit_error["decode"]["mape"] < 1e-6
    assert cal.num_observations == {"prefill": 3, "decode": 3}


def test_negative_coefficients_are_dropped() -> None:
    # durations that fall with tokens: the token term would be negative
    obs = [Observation("decode", t, 0.0, 0.01 - 0.0001 * t, "r") for t in (1, 2, 3, 4, 5)]
    cal = fit(obs, BPT)
    assert all(v >= 0 for v in cal.coefficients.values())
    assert cal.coefficients["per_token_s"] == 0.0


def test_too_few_observations_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="usable step observations"):
        fit([Observation("prefill", 10, 0, 0.1, "r")], BPT)


def synthetic_records() -> list[RequestRecord]:
    """Requests one after another (each alone): prefill then decode steps of the
    true model, one token per chunk."""
    recs, t = [], 0.0
    for i, (prompt, out) in enumerate([(100, 20), (300, 10), (50, 40), (200, 30), (500, 15)]):
        arrival = t
        first = arrival + step(prompt, prompt * BPT)
        chunks = [first]
        for j in range(1, out):
            chunks.append(chunks[-1] + step(1, (prompt + j) * BPT))
        recs.append(
            RequestRecord(
                f"r{i}",
                arrival,
                prompt,
                out,
                first_token_s=first,
                finish_s=chunks[-1],
                chunk_times_s=chunks,
            )
        )
        t = chunks[-1] + 1.0
    return recs


def test_observations_from_records_fit_the_true_model() -> None:
    obs = observations(synthetic_records(), BPT)
    assert sum(o.kind == "prefill" for o in obs) == 5
    assert sum(o.kind == "decode" for o in obs) == 5  # one a request
    cal = fit(obs, BPT)
    assert cal.fit_error["prefill"]["mape"] < 0.02
    assert cal.fit_error["decode"]["mape"] < 0.02
    assert cal.coefficients["per_token_s"] == pytest.approx(TRUE["per_token_s"], rel=0.05)


def test_overlapping_prefills_are_not_decode_observations() -> None:
    recs = synthetic_records()[:2]
    r0, r1 = recs
    r1.arrival_s = (r0.chunk_times_s or [])[5] + 1e-4  # arrives while r0 decodes
    r1.first_token_s = r1.arrival_s + 0.05
    obs = observations(recs, BPT)
    assert all(o.kind == "decode" for o in obs)  # neither request was alone
    (o0,) = [o for o in obs if o.request_id == "r0"]
    chunks = r0.chunk_times_s or []
    kept = [
        b - a for a, b in pairwise(chunks) if not r1.arrival_s <= (a + b) / 2 < r1.first_token_s
    ]
    assert len(kept) < len(chunks) - 1  # some gaps shared a step with r1's prefill
    assert o0.seconds == pytest.approx(sum(kept) / len(kept))


def test_calibrated_clock_windows_equal_step_sums() -> None:
    cal = fit(observations(synthetic_records(), BPT), BPT)
    cost = CalibratedCost.from_calibration(cal, "calib.json")
    assert cost.label.startswith("calibrated (calib.json, decode MAPE ")
    n, s0 = 5, 1234
    # a decode step's attention pairs are its context tokens, as the engine counts them
    steps = (cost.step_ticks(n, s0 + n * i, s0 + n * i, n) for i in range(7))
    assert cost.window_ticks(n, s0, 7) == sum(steps)
    assert cost.overhead == round(cal.coefficients["overhead_s"] * TICKS_PER_S)
    # with every term non-zero (the per-sequence one too) the window is still the sum
    full = CalibratedCost(overhead=7, per_token=3, per_kv_token=2, per_attn=5, per_seq=11)
    steps = (full.step_ticks(n, s0 + n * i, s0 + n * i, n) for i in range(7))
    assert full.window_ticks(n, s0, 7) == sum(steps)
    # a step's sequences and tokens are charged apart: one 100-token prefill against
    # 100 one-token decodes
    assert full.step_ticks(100, 0, 0, 100) - full.step_ticks(100, 0, 0, 1) == 11 * 99


def test_bad_calibration_files_name_the_field(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        load_calibration(p)
    p.write_text(json.dumps({"format": "kvlab-calibration-1", "coefficients": {}}))
    with pytest.raises(ConfigError, match=r"coefficients\.overhead_s"):
        load_calibration(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_calibration(tmp_path / "missing.json")


def test_cli_calibrates_and_simulate_uses_it(
    tmp_path: Path, cli: Callable[[list[str]], CliRun]
) -> None:
    run = RunResult(
        records=synthetic_records(),
        summary={"num_requests": 5},
        config={"model": "meta-llama/Llama-3.1-8B", "block_size": 128},
    )
    run.save(tmp_path / "run")
    out = cli(["calibrate", str(tmp_path / "run"), "-o", str(tmp_path / "calib.json")])
    assert out.code == 0, out.err
    assert "decode:" in out.out and "MAPE" in out.out
    d = json.loads((tmp_path / "calib.json").read_text())
    assert (
        d["settings"]["model"] == "meta-llama/Llama-3.1-8B" and d["settings"]["block_size"] == 128
    )
    wl = tmp_path / "w.jsonl"
    gen = cli(["workload", "gen", "chat", "-o", str(wl), "--sessions", "5"])
    assert gen.code == 0, gen.err
    sim = cli(
        [
            "simulate",
            str(wl),
            "--out",
            str(tmp_path / "sim"),
            "--calibration",
            str(tmp_path / "calib.json"),
        ]
    )
    assert sim.code == 0, sim.err
    assert "(clock: calibrated (calib.json, decode MAPE " in sim.out
    # the calibration was measured on 128-token blocks: another block size is named
    warned = [x for x in sim.err.splitlines() if x.startswith("warning: ")]
    assert len(warned) == 1 and "measured with block_size 128, this run uses 16" in warned[0]
    same = cli(
        [
            "simulate",
            str(wl),
            "--out",
            str(tmp_path / "sim128"),
            "--calibration",
            str(tmp_path / "calib.json"),
            "--set",
            "block_size=128",
        ]
    )
    assert same.code == 0 and "warning" not in same.err, same.err
    prov = json.loads((tmp_path / "sim" / "run.json").read_text())["provenance"]
    assert prov["clock"].startswith("calibrated (calib.json, ")
    bad = cli(
        [
            "simulate",
            str(wl),
            "--out",
            str(tmp_path / "sim2"),
            "--calibration",
            str(tmp_path / "nope.json"),
        ]
    )
    assert bad.code in (1, 2) and not bad.traceback
    assert "nope.json" in bad.one_line_error()


def test_fit_tells_the_request_overhead_from_the_step_overhead() -> None:
    """Times to first token hold a per-request constant the gaps between chunks do
    not: fitted together, both overheads come out as they were made."""
    request_s = 0.03
    rows = [("prefill", 100, 1e5), ("prefill", 400, 4e5), ("prefill", 50, 5e4)]
    rows += [("decode", 1, 2e5), ("decode", 3, 9e5), ("decode", 8, 3e6), ("decode", 2, 1e5)]
    obs = [
        Observation(kind, t, k, step(t, k) + (request_s if kind == "prefill" else 0.0), f"r{i}")
        for i, (kind, t, k) in enumerate(rows)
    ]
    cal = fit(obs, BPT)
    assert cal.coefficients["request_overhead_s"] == pytest.approx(request_s, rel=1e-6)
    assert cal.coefficients["overhead_s"] == pytest.approx(TRUE["overhead_s"], rel=1e-6)
    assert cal.fit_error["prefill"]["mape"] < 1e-6
    assert cal.predict(100, 1e5, "prefill") - cal.predict(100, 1e5) == pytest.approx(request_s)


def test_a_file_without_the_request_overhead_reads_as_none(tmp_path: Path) -> None:
    p = tmp_path / "old.json"
    coef = {"overhead_s": 0.001, "per_token_s": 1e-4, "per_kv_byte_s": 1e-9}
    p.write_text(
        json.dumps({"format": "kvlab-calibration-1", "coefficients": coef, "kv_bytes_per_token": 8})
    )
    cal = load_calibration(p)
    assert cal.coefficients["request_overhead_s"] == 0.0
    assert CalibratedCost.from_calibration(cal, "old.json").request_delay == 0
    bad = dict(coef, request_overhead_s=-1)
    p.write_text(
        json.dumps({"format": "kvlab-calibration-1", "coefficients": bad, "kv_bytes_per_token": 8})
    )
    with pytest.raises(ConfigError, match=r"coefficients\.request_overhead_s"):
        load_calibration(p)
