"""Calibrate the clock on a vLLM CPU server and check it on a held-out workload.

Starts vLLM's CPU build ($KVLAB_VLLM_PYTHON) on the tiny model, replays workload A
(calibration) and workload B (held out), fits ``kvlab calibrate``'s step cost on A,
simulates B with the roofline and with the calibration, and prints per-request TTFT,
TPOT and E2E MAPE and signed bias for both. Usage:

    KVLAB_VLLM_PYTHON=... python benchmarks/calibrate_cpu.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _errors(real: Any, sim: Any) -> dict[str, dict[str, float]]:
    by_id = {r.request_id: r for r in sim.records}
    out: dict[str, dict[str, float]] = {}
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        rel = []
        for r in real.records:
            s = by_id.get(r.request_id)
            a, b = getattr(r, metric), None if s is None else getattr(s, metric)
            if a and b is not None:
                rel.append((b - a) / a)
        out[metric] = {
            "mape": sum(abs(x) for x in rel) / len(rel) if rel else float("nan"),
            "bias": sum(rel) / len(rel) if rel else float("nan"),
            "n": len(rel),
        }
    return out


def main(out: Path) -> None:
    from kvlab.backends.tiny_model import write_tiny_model
    from kvlab.backends.vllm_server import VllmServer
    from kvlab.workload.generators import generate

    out.mkdir(parents=True, exist_ok=True)
    model_dir = write_tiny_model(out / "tiny-model")
    server = VllmServer(
        python=os.environ["KVLAB_VLLM_PYTHON"],
        model_dir=model_dir,
        port=int(os.environ.get("KVLAB_PORT", "8391")),
        log_path=out / "vllm.log",
        max_model_len=256,
        kv_cache_space_gib=1,
    )
    shapes = {
        "A-chat-rate": dict(seed=7, sessions=24, arrival="poisson", rate_per_s=4.0),
        "B-chat-closed": dict(seed=11, sessions=24, arrival="closed"),
    }
    t0 = time.perf_counter()
    runs = {}
    if all((out / name / "requests.jsonl").exists() for name in shapes):
        from kvlab.results import RunResult

        for name, kw in shapes.items():  # replays kept from an earlier run of this script
            wl = generate(
                "chat",
                system_tokens=128,
                user_tokens=40,
                output_tokens=16,
                **kw,  # type: ignore[arg-type]
            )
            runs[name] = (wl, RunResult.load(out / name))
        print(f"reusing the replays in {out}", flush=True)
    else:
        _replay(server, shapes, out, runs)
    _report(out, model_dir, runs, t0)


def _replay(server: Any, shapes: dict[str, Any], out: Path, runs: dict[str, Any]) -> None:
    from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
    from kvlab.workload.generators import generate

    t0 = time.perf_counter()
    server.start()
    try:
        server.wait_ready(600)
        print(f"server ready after {time.perf_counter() - t0:.0f} s", flush=True)
        for name, kw in shapes.items():
            wl = generate(
                "chat",
                system_tokens=128,
                user_tokens=40,
                output_tokens=16,
                **kw,  # type: ignore[arg-type]
            )
            conc = 4 if kw["arrival"] == "closed" else None
            real = OpenAIBackend(
                OpenAIConfig(
                    endpoint=server.url,
                    model=server.model,
                    cache_mode="cold",
                    metrics_interval_s=0.1,
                    concurrency=conc,
                )
            ).run(wl)
            real.save(out / name)
            runs[name] = (wl, real)
            print(f"replayed {name}: {len(real.records)} requests", flush=True)
    finally:
        server.stop()


def _report(out: Path, model_dir: Path, runs: dict[str, Any], t0: float) -> None:
    from kvlab.calibrate import fit, observations
    from kvlab.models.catalog import get_model
    from kvlab.models.spec import kv_bytes_per_token
    from kvlab.sim import SimConfig, simulate
    from kvlab.sim.cost_model import CalibratedCost

    spec = get_model(str(model_dir / "config.json"))
    bpt = float(kv_bytes_per_token(spec, None, 1))
    real_a = runs["A-chat-rate"][1]
    t1 = time.perf_counter()
    cal = fit(observations(real_a.records, bpt), bpt, runs=["A-chat-rate"])
    fit_s = time.perf_counter() - t1
    (out / "calib.json").write_text(json.dumps(cal.to_dict(), indent=2))
    print(f"calibration: {cal.coefficients}, {cal.error_text}, fitted in {fit_s:.3f} s")
    cache = real_a.config["server"]["cache_config"]
    base = SimConfig(
        model=str(model_dir),
        gpu="h100-sxm",
        block_size=int(cache["block_size"]),
        num_blocks=int(cache["num_gpu_blocks"]),
        max_model_len=256,
    )
    rows = []
    for name, (wl, real) in runs.items():
        for clock, cfg in (
            ("roofline", base),
            (
                "calibrated",
                base.replace(cost_model=CalibratedCost.from_calibration(cal, "calib.json")),
            ),
        ):
            sim = simulate(wl, cfg)
            err = _errors(real, sim)
            rows.append(
                {
                    "workload": name,
                    "clock": clock,
                    **err,
                    "hits_real": real.summary.get("prefix_cache_hits"),
                    "hits_sim": sim.summary.get("prefix_cache_hits"),
                    "preempt_real": real.summary.get("num_preemptions"),
                    "preempt_sim": sim.summary.get("num_preemptions"),
                }
            )
    head = ("workload", "clock", "TTFT MAPE (bias)", "TPOT MAPE (bias)", "E2E MAPE (bias)")
    print("| " + " | ".join(head) + " | hits real/sim |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [
            f"{r[m]['mape'] * 100:.1f}% ({r[m]['bias'] * 100:+.1f}%)"
            for m in ("ttft_s", "tpot_s", "e2e_s")
        ]
        print(
            f"| {r['workload']} | {r['clock']} | "
            + " | ".join(cells)
            + f" | {r['hits_real']}/{r['hits_sim']} |"
        )
    (out / "fidelity.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/calibrate-cpu"))
