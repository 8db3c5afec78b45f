"""Sim-vs-real fidelity on vLLM's CPU build: calibrate with a designed sweep, check held-out runs.

Starts vLLM's CPU build ($KVLAB_VLLM_PYTHON) on the tiny model, runs ``kvlab calibrate``'s
designed sweep against it (lone requests of 32 to 896 prompt tokens, bursts of 1 to 16
requests at a short and a long prompt; :mod:`kvlab.calibrate.sweep`), fits the step cost
and request overhead on the sweep alone and checks the fit against vLLM's own timing
histograms, then replays held-out workloads of every generated shape plus a Mooncake
slice, and on a second server with a cache of 32 blocks of 32 tokens two chat workloads
at 8 requests/s, single-turn with long answers and three-turn (the pressure cases:
preemptions), calibrated on its own smaller sweep (a calibration holds for the block size
it was measured with). Every held-out workload is simulated with its server's block
size, block count and batch limits, with the roofline and with that server's
calibration; printed per workload and clock:
per-request TTFT, TPOT and E2E MAPE and signed bias, the error of the median TTFT,
throughput error, preemptions and prefix hits (real / simulated), then the issue's
targets. Writes calib.json, calib-pressure.json, fidelity.json, fidelity.md and per-request scatter
plots (the plot extra) to OUT_DIR; replays already in OUT_DIR are reused. The load
average is printed before and after (the figures are only as quiet as the machine).

Every request, of the sweep and of every replay, asks for token ids (vLLM's
``return_token_ids``): the multi-turn workloads are replayed with the server's own
answers (``--history server``), which needs them, and sending them costs this CPU build
time per output token, so the calibration is measured with the same response options as
every run it is checked on. Usage:

    KVLAB_VLLM_PYTHON=... python benchmarks/fidelity.py OUT_DIR [--quick]

``--quick``: the small sweep, two held-out workloads and the pressure cases (a smoke run).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

MAX_MODEL_LEN = 1024
#: the batch limits of both servers and of every simulation (vLLM's CPU build's own
#: API-server defaults, passed explicitly so that the two sides cannot differ)
MAX_NUM_BATCHED_TOKENS = 2048
MAX_NUM_SEQS = 128
#: held-out workloads: name -> (generator shape, parameters); the calibration is the
#: designed sweep of kvlab.calibrate.sweep
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat-rate": (
        "chat",
        dict(
            seed=7,
            sessions=24,
            arrival="poisson",
            rate_per_s=4.0,
            system_tokens=128,
            user_tokens=40,
            output_tokens=16,
        ),
    ),
    "chat-closed": (
        "chat",
        dict(
            seed=11,
            sessions=24,
            arrival="closed",
            system_tokens=128,
            user_tokens=40,
            output_tokens=16,
        ),
    ),
    "sessions": (
        "sessions",
        dict(
            seed=12,
            sessions=12,
            arrival="poisson",
            rate_per_s=2.0,
            turns=3,
            system_tokens=96,
            user_tokens=48,
            output_tokens=24,
        ),
    ),
    "rag": (
        "rag",
        dict(
            seed=13,
            sessions=30,
            arrival="poisson",
            rate_per_s=3.0,
            system_tokens=64,
            documents=20,
            document_tokens=96,
            top_k=3,
            query_tokens=24,
            output_tokens=16,
        ),
    ),
    "mixed": (
        "mixed",
        dict(
            seed=14,
            sessions=30,
            arrival="poisson",
            rate_per_s=3.0,
            system_tokens=64,
            short_prompt_tokens=48,
            long_prompt_tokens=400,
            short_output_tokens=8,
            long_output_tokens=48,
        ),
    ),
    "planner": (
        "planner",
        dict(
            seed=15,
            sessions=6,
            arrival="poisson",
            rate_per_s=1.0,
            steps=3,
            system_tokens=96,
            tool_catalog_tokens=96,
            task_tokens=32,
            plan_tokens=24,
            observation_tokens=48,
        ),
    ),
}
QUICK = ("chat-rate", "rag")
#: Mooncake conversation requests kept (those that fit MAX_MODEL_LEN once scaled)
MOONCAKE_REQUESTS = 30
#: the pressure server: 32 blocks of 32 tokens (the CPU attention backend takes multiples
#: of 32; 1,024 cached tokens > max_model_len, so every request fits alone)
PRESSURE_MAX_MODEL_LEN = 768
#: name -> chat workload at 8 sessions/s on that server. Single turns of ~130 prompt and
#: ~190 output tokens: each grows by 6 blocks while ~8 run, so the 32 blocks run out
#: mid-decode and the scheduler preempts (47 times on the server when tried at a load
#: average of 4). Three-turn chats (history re-sent) preempt as well (29 there). Every
#: multi-turn workload is replayed with the server's own answers (``history="server"``)
#: and its transcript is what is simulated (see ``with_transcripts``).
#: the pressure server's own calibration sweep (a calibration holds for the block size it
#: was measured with: this server's 32-token blocks decode slower than the first
#: server's 128-token ones). Sized for its 1,024 cached tokens: lone prompts up to 640
#: tokens, bursts of up to 8 at 32 and 64 tokens, a warm-up of 24.
PRESSURE_SWEEP: dict[str, Any] = dict(
    prompt_lengths=(32, 96, 192, 320, 480, 640),
    batch_sizes=(1, 2, 4, 8),
    burst_prompt_lengths=(32, 64),
    burst_output_tokens=32,
    warmup_batch=24,
)
PRESSURE: dict[str, dict[str, Any]] = {
    "chat-8rps-32-blocks (pressure)": dict(
        seed=22,
        sessions=32,
        arrival="poisson",
        rate_per_s=8.0,
        system_tokens=64,
        user_tokens=64,
        output_tokens=192,
        length_cv=0.3,
    ),
    "chat-8rps-3-turns-32-blocks (pressure)": dict(
        seed=21,
        sessions=24,
        arrival="poisson",
        rate_per_s=8.0,
        turns=3,
        history=True,
        think_time_s=0.5,
        system_tokens=64,
        user_tokens=48,
        output_tokens=96,
        length_cv=0.3,
    ),
}


def _rel(sim: float | None, real: float | None) -> float | None:
    return None if sim is None or not real else (sim - real) / real


def mooncake_slice() -> Any:
    """The first Mooncake conversation requests whose prompt (scaled from 512-token hash
    blocks to 16-token ones) and output fit the server, arrivals kept."""
    from kvlab.workload.detect import load_workload
    from kvlab.workload.records import Request, Segment, Workload

    wl = load_workload("mooncake-conversation", None, seed=0)
    kept: list[Request] = []
    for q in wl.requests:
        segs = tuple(Segment(s.kind, max(1, s.tokens // 32), s.content_id) for s in q.segments)
        out = max(1, min(q.output_tokens // 32, 64))
        if sum(s.tokens for s in segs) + out < MAX_MODEL_LEN:
            kept.append(Request(q.request_id, segs, out, arrival_s=q.arrival_s))
        if len(kept) == MOONCAKE_REQUESTS:
            break
    t0 = kept[0].arrival_s or 0.0
    reqs = tuple(
        Request(q.request_id, q.segments, q.output_tokens, arrival_s=(q.arrival_s or 0.0) - t0)
        for q in kept
    )
    return Workload(requests=reqs, name="mooncake-slice", meta={"source": "mooncake-conversation"})


def workloads(quick: bool) -> dict[str, Any]:
    from kvlab.workload.generators import generate

    out = {
        name: generate(shape, **params)  # type: ignore[arg-type]
        for name, (shape, params) in SHAPES.items()
        if not quick or name in QUICK
    }
    if not quick:
        out["mooncake-slice"] = mooncake_slice()
    return out


def _sweep_parts(spec: Any) -> list[str]:
    from kvlab.calibrate.sweep import WARMUP, design

    return [n for n in design(spec) if n != WARMUP]


def replay_all(
    server: Any, wls: dict[str, Any], out: Path, sweep: Any = None, sweep_dir: str = "sweep"
) -> dict[str, Any]:
    """Replay each workload not yet in ``out`` on ``server`` (started here if needed),
    after the calibration sweep ``sweep`` (a SweepDesign, into ``out/sweep_dir``) if given."""
    from kvlab.backends.openai import OpenAIBackend, OpenAIConfig
    from kvlab.backends.transcript import TRANSCRIPT_FILE
    from kvlab.calibrate.sweep import run_sweep, warmup
    from kvlab.results import RunResult
    from kvlab.workload.io import write_workload

    runs: dict[str, Any] = {}
    todo = [n for n in wls if not (out / _dir(n) / "summary.json").exists()]
    for n in wls:
        if n not in todo:
            runs[n] = RunResult.load(out / _dir(n))
    sweep_todo = sweep is not None and any(
        not (out / sweep_dir / n / "summary.json").exists() for n in _sweep_parts(sweep)
    )
    if not todo and not sweep_todo:
        return runs
    t0 = time.perf_counter()
    server.start()
    try:
        server.wait_ready(900)
        print(f"server ready after {time.perf_counter() - t0:.0f} s; {_load()}", flush=True)
        if sweep_todo:  # (starts with the sweep's warm-up part)
            t1 = time.perf_counter()
            run_sweep(server.url, server.model, out / sweep_dir, sweep, token_ids=True)
            print(f"sweep replayed in {time.perf_counter() - t1:.0f} s; {_load()}", flush=True)
        else:  # a fresh server: every decode batch size once before anything is measured
            warm = OpenAIConfig(
                endpoint=server.url, model=server.model, metrics_interval_s=0, token_ids=True
            )
            OpenAIBackend(warm).run(warmup())
        for n in todo:
            wl = wls[n]
            # sent as the workload says (no client-side cap), as the simulator takes it;
            # sessions with the server's own answers (the transcript is what is simulated)
            cfg = OpenAIConfig(
                endpoint=server.url,
                model=server.model,
                cache_mode="cold",
                metrics_interval_s=0,  # no sampling: a /metrics scrape slows this CPU server
                history="server" if _multi_turn(wl) else "scripted",
                token_ids=True,  # as the sweep: the same response options everywhere
            )
            t1 = time.perf_counter()
            backend = OpenAIBackend(cfg)
            real = backend.run(wl)
            real.save(out / _dir(n))
            if backend.transcript is not None:
                write_workload(backend.transcript.workload(), out / _dir(n) / TRANSCRIPT_FILE)
            runs[n] = real
            print(
                f"replayed {n}: {len(real.records)} requests in {time.perf_counter() - t1:.0f} s",
                flush=True,
            )
    finally:
        server.stop()
    return runs


def _dir(name: str) -> str:
    return name.split(" ")[0]


def _multi_turn(wl: Any) -> bool:
    """Whether a session of ``wl`` has a second turn (which re-sends an answer)."""
    from collections import Counter

    turns = Counter(r.session_id for r in wl.requests if r.session_id is not None)
    return bool(turns) and max(turns.values()) > 1


def with_transcripts(wls: dict[str, Any], out: Path) -> dict[str, Any]:
    """``wls`` with each multi-turn workload replaced by the transcript its replay kept
    (``kvlab replay --history server``): what was sent, the server's answers re-sent."""
    from kvlab.backends.transcript import TRANSCRIPT_FILE
    from kvlab.workload.detect import load_workload

    return {
        n: load_workload(str(out / _dir(n) / TRANSCRIPT_FILE))
        if (out / _dir(n) / TRANSCRIPT_FILE).exists()
        else wl
        for n, wl in wls.items()
    }


def compare(
    name: str, wl: Any, real: Any, base: Any, cal: Any, cal_file: str = "calib.json"
) -> list[dict[str, Any]]:
    from kvlab.calibrate import per_request_errors
    from kvlab.sim import simulate
    from kvlab.sim.cost_model import CalibratedCost

    cache = real.config["server"]["cache_config"]
    cfg = base.replace(
        block_size=int(cache["block_size"]),
        num_blocks=int(cache["num_gpu_blocks"]),
        max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
        max_num_seqs=MAX_NUM_SEQS,
    )
    rows = []
    for clock, c in (
        ("roofline", cfg),
        ("calibrated", cfg.replace(cost_model=CalibratedCost.from_calibration(cal, cal_file))),
    ):
        sim = simulate(wl, c)
        by_id = {s.request_id: s for s in sim.records}
        rs, ss = real.summary, sim.summary
        rows.append(
            {
                "workload": name,
                "clock": clock,
                **per_request_errors(real, sim),
                "ttft_p50_error": _rel(ss["ttft_s"]["p50"], rs["ttft_s"]["p50"]),
                "throughput_error": _rel(
                    ss["output_throughput_tok_per_s"], rs["output_throughput_tok_per_s"]
                ),
                "preemptions_real": rs.get("num_preemptions"),
                "preemptions_sim": ss.get("num_preemptions"),
                "hits_real": rs.get("prefix_cache_hits"),
                "hits_sim": ss.get("prefix_cache_hits"),
                "_pairs": [
                    (r.ttft_s, s.ttft_s, r.e2e_s, s.e2e_s)
                    for r in real.records
                    if (s := by_id.get(r.request_id)) is not None
                    and r.ttft_s is not None
                    and s.ttft_s is not None
                ],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None or x != x else f"{x * 100:+.1f}%"

    lines = [
        "| workload | clock | TTFT MAPE (bias) | TPOT MAPE (bias) | E2E MAPE (bias) | "
        "TTFT p50 error | throughput error | preemptions real / sim | hits real / sim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            "-"
            if r[m]["mape"] is None
            else f"{r[m]['mape'] * 100:.1f}% ({r[m]['bias'] * 100:+.1f}%)"
            for m in ("ttft_s", "tpot_s", "e2e_s")
        ]
        lines.append(
            f"| {r['workload']} | {r['clock']} | "
            + " | ".join(cells)
            + f" | {pct(r['ttft_p50_error'])} | {pct(r['throughput_error'])}"
            + f" | {r['preemptions_real']} / {r['preemptions_sim']}"
            + f" | {r['hits_real']} / {r['hits_sim']} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> str:
    """The issue's targets over the held-out workloads (the pressure case: preemptions)."""
    cal = [r for r in rows if r["clock"] == "calibrated"]
    held = [r for r in cal if "pressure" not in r["workload"]]
    lines = []
    if held:
        e2e = statistics.fmean(r["e2e_s"]["mape"] for r in held if r["e2e_s"]["mape"] is not None)
        ttft = statistics.median(
            abs(r["ttft_p50_error"]) for r in held if r["ttft_p50_error"] is not None
        )
        lines.append(
            f"held-out, calibrated: mean E2E MAPE {e2e * 100:.1f}% (target <= 15%), "
            f"median |TTFT p50 error| {ttft * 100:.1f}% (target <= 25%)"
        )
    for r in cal:
        real, sim = r["preemptions_real"], r["preemptions_sim"]
        if real is not None and sim is not None and real >= 10:
            err = (sim - real) / real
            lines.append(
                f"{r['workload']}: preemptions {sim} simulated / {real} real "
                f"({err * 100:+.1f}%, target within 20%)"
            )
    for r in cal:
        real, sim = r["hits_real"], r["hits_sim"]
        if real and sim is not None and abs(sim - real) / real > 0.02:
            lines.append(
                f"{r['workload']}: prefix hits {sim:,} simulated / {real:,} real "
                f"({(sim - real) / real * 100:+.1f}%, target within 2%)"
            )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (the plot extra): no plot", flush=True)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, k, label in ((axes[0], 0, "TTFT"), (axes[1], 2, "E2E")):
        seen: list[float] = []
        for r in rows:
            if r["clock"] != "calibrated" or not r["_pairs"]:
                continue
            xs = [p[k] for p in r["_pairs"]]
            ys = [p[k + 1] for p in r["_pairs"]]
            seen += [v for v in xs + ys if v > 0]
            ax.scatter(xs, ys, s=10, label=r["workload"])
        if seen:  # log axes: the latencies span two orders of magnitude
            lo, hi = min(seen) / 1.2, max(seen) * 1.2
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"real {label} (s)")
        ax.set_ylabel(f"simulated {label} (s), calibrated")
        ax.set_title(f"{label} per request")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fidelity.png", dpi=110)
    print(f"wrote {out / 'fidelity.png'}", flush=True)


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def calibrate(
    out: Path, spec: Any, bpt: float, sweep_dir: str = "sweep", file: str = "calib.json"
) -> tuple[Any, str]:
    """Fit the designed sweep's runs (in ``out/sweep_dir``), check the fit against vLLM's
    own timings, save it as ``out/file``; the calibration and its report."""
    from kvlab.calibrate import fit, observations
    from kvlab.calibrate.check import check_table, server_check
    from kvlab.calibrate.sweep import load_timings
    from kvlab.results import RunResult

    dirs = [out / sweep_dir / n for n in _sweep_parts(spec)]
    per_run = [(d, observations(RunResult.load(d).records, bpt, run=d.name)) for d in dirs]
    obs = [o for _, mine in per_run for o in mine]
    t1 = time.perf_counter()
    cal = fit(obs, bpt, runs=[d.name for d in dirs])
    fit_s = time.perf_counter() - t1
    checks = []
    for d, mine in per_run:
        timings = load_timings(d)
        if timings:
            checks += server_check(cal, mine, timings, d.name)
    doc = cal.to_dict()
    doc["server_check"] = checks
    (out / file).write_text(json.dumps(doc, indent=2))
    lines = [
        f"{file} ({sweep_dir}, {len(dirs)} parts, fitted in {fit_s * 1e3:.1f} ms): "
        + cal.model_text,
        "fit error: "
        + ", ".join(
            f"{k} {cal.num_observations[k]} observations, MAPE {v['mape'] * 100:.1f}% "
            f"(median {v['median_ape'] * 100:.1f}%)"
            for k, v in sorted(cal.fit_error.items())
        ),
        "",
        "| kind | size | n | measured (ms) | residual (ms) | relative |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in cal.residuals:
        lines.append(
            f"| {r['kind']} | {r['size']} {r['lo']:g}-{r['hi']:g} | {r['n']} | "
            f"{r['measured_s'] * 1e3:.2f} | {r['residual_s'] * 1e3:+.2f} | "
            f"{r['relative'] * 100:+.1f}% |"
        )
    lines += [f"note: {n}" for n in cal.notes]
    if checks:
        lines += ["", "checked against vLLM's own timings:", "", check_table(checks)]
    return cal, "\n".join(lines)


def main(out: Path, quick: bool) -> None:
    from kvlab.backends.tiny_model import write_tiny_model
    from kvlab.backends.vllm_server import VllmServer
    from kvlab.calibrate.sweep import QUICK as QUICK_SWEEP
    from kvlab.calibrate.sweep import SweepDesign
    from kvlab.models.catalog import get_model
    from kvlab.models.spec import kv_bytes_per_token
    from kvlab.sim import SimConfig
    from kvlab.workload.generators import generate

    out.mkdir(parents=True, exist_ok=True)
    print(f"start: {_load()}", flush=True)
    model_dir = write_tiny_model(out / "tiny-model")
    py, port = os.environ["KVLAB_VLLM_PYTHON"], int(os.environ.get("KVLAB_PORT", "8391"))
    spec = get_model(str(model_dir / "config.json"))
    bpt = float(kv_bytes_per_token(spec, None, 1))

    server = VllmServer(
        python=py,
        model_dir=model_dir,
        port=port,
        log_path=out / "vllm.log",
        max_model_len=MAX_MODEL_LEN,
        kv_cache_space_gib=1,
        max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
        max_num_seqs=MAX_NUM_SEQS,
    )

    wls = workloads(quick)
    sweep = (QUICK_SWEEP if quick else SweepDesign()).fitted_to(MAX_MODEL_LEN)
    runs = replay_all(server, wls, out, sweep)
    cal, cal_text = calibrate(out, sweep, bpt)
    print(cal_text, flush=True)
    pressure_wl = {n: generate("chat", **p) for n, p in PRESSURE.items()}
    small = VllmServer(
        python=py,
        model_dir=model_dir,
        port=port + 1,
        log_path=out / "vllm-pressure.log",
        max_model_len=PRESSURE_MAX_MODEL_LEN,
        kv_cache_space_gib=1,
        max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
        max_num_seqs=MAX_NUM_SEQS,
        block_size=32,
        num_blocks_override=32,
    )
    small_sweep = SweepDesign(**PRESSURE_SWEEP, repeats=2 if quick else 3).fitted_to(
        PRESSURE_MAX_MODEL_LEN
    )
    runs.update(replay_all(small, pressure_wl, out, small_sweep, "sweep-pressure"))
    cal_small, small_text = calibrate(
        out, small_sweep, bpt, "sweep-pressure", "calib-pressure.json"
    )
    print(small_text, flush=True)
    cal_text += "\n\n" + small_text
    wls.update(pressure_wl)
    wls = with_transcripts(wls, out)
    print(f"replays done: {_load()}", flush=True)

    # (vLLM's CPU build schedules synchronously: so do the roofline rows)
    base = SimConfig(model=str(model_dir), gpu="h100-sxm", async_scheduling=False)
    rows: list[dict[str, Any]] = []
    for name, wl in wls.items():
        if name in PRESSURE:
            rows += compare(name, wl, runs[name], base, cal_small, "calib-pressure.json")
        else:
            rows += compare(name, wl, runs[name], base, cal)
    text = table(rows)
    summary = targets(rows)
    print(text)
    print(summary)
    print(f"end: {_load()}", flush=True)
    (out / "fidelity.md").write_text(
        cal_text + "\n\n" + text + "\n\n" + summary + f"\n\n({_load()} at the end)\n"
    )
    (out / "fidelity.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "_pairs"} for r in rows], indent=2)
    )
    plot(rows, out)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See the module docstring for details."
    )
    ap.add_argument("out", type=Path, nargs="?", default=Path("runs/fidelity"), help="OUT_DIR")
    ap.add_argument("--quick", action="store_true", help="small sweep, two held-out workloads")
    a = ap.parse_args()
    if "KVLAB_VLLM_PYTHON" not in os.environ:
        ap.error("set KVLAB_VLLM_PYTHON to the python of a vLLM install (scripts/setup_vllm.sh)")
    main(a.out, a.quick)
