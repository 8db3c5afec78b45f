"""vLLM (CPU build, over HTTP) against transformers in process, on the same requests: fig6.

The tiny model (kvlab tiny-model), N requests of P unique prompt tokens and O output
tokens at concurrency C, through both backends (kvlab.bench.target: OpenAITarget against a
vLLM server started by VllmServer, HfTarget in this process). Printed, side by side:

* KV bytes at the peak: vLLM's paged blocks (peak blocks in use, sampled from /metrics,
  x block size x formula bytes per token: whole 128-token blocks, the unused tail of the last
  block included) and transformers' cache tensors (what its DynamicCache held, with the left
  padding a batch of unequal lengths needs), beside the token-exact formula bytes;
* TTFT, TPOT and E2E (mean), and total throughput (tokens over wall time).

Writes fig6.png/.svg (and vllm_vs_hf.json) to --out. Needs the hf and plot extras and vLLM's
CPU build (--vllm-python or $KVLAB_VLLM_PYTHON). On a shared 2-core machine the latencies
move a lot from run to run; the KV bytes do not.

Run: PYTHONPATH=src python benchmarks/vllm_vs_hf.py --out runs/fig6 [--requests 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/fig6"))
    ap.add_argument("--vllm-python", default=os.environ.get("KVLAB_VLLM_PYTHON"))
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--output-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    if not args.vllm_python:
        sys.exit("give --vllm-python (vLLM's CPU build) or set KVLAB_VLLM_PYTHON")

    from kvlab.backends.tiny_model import write_tiny_model
    from kvlab.backends.vllm_server import VllmServer, free_port
    from kvlab.bench.points import run_point
    from kvlab.bench.target import HfTarget, OpenAITarget
    from kvlab.bench.workloads import uniform

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="kvlab-fig6-"))
    model = write_tiny_model(tmp / "tiny")
    wl = uniform("fig6", args.requests, args.prompt_tokens, args.output_tokens)
    points: dict[str, dict[str, Any]] = {}
    server = VllmServer(
        python=args.vllm_python,
        model_dir=model,
        port=free_port(),
        log_path=tmp / "vllm.log",
        max_model_len=1024,
        prompt_tokens_details=True,
    )
    print(f"starting vLLM (log {server.log_path}) ...", flush=True)
    with server.running(timeout_s=400) as s:
        target = OpenAITarget(
            endpoint=s.url, model=s.model, model_config=str(model / "config.json")
        )
        target.run(uniform("warm", 2, 16, 4), 1)  # first-request set-up is not measured
        points["vLLM (CPU, HTTP)"] = run_point(target.run(wl, args.concurrency), target)
    hf = HfTarget(model_dir=str(model), num_threads=1)
    points["transformers (in process)"] = run_point(hf.run(wl, args.concurrency), hf)
    rows = table(points)
    print(markdown(rows, args))
    (args.out / "vllm_vs_hf.json").write_text(
        json.dumps(
            {"params": vars(args) | {"out": str(args.out)}, "points": points}, indent=2, default=str
        )
        + "\n"
    )
    figure(rows, args.out / "fig6")
    print(f"wrote {args.out / 'fig6.png'}")


def table(points: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name, p in points.items():
        kv = p.get("kv_bytes_server_peak", p.get("kv_bytes_measured_peak"))
        rows[name] = {
            "kv_bytes_peak": kv,
            "kv_bytes_tokens_peak": p.get("kv_bytes_tokens_peak"),
            "kv_padding_bytes_peak": p.get("kv_padding_bytes_peak"),
            "kv_blocks_peak": p.get("kv_blocks_peak"),
            "block_size": p.get("block_size"),
            "ttft_mean_s": p["ttft_s"]["mean"],
            "tpot_mean_s": p["tpot_s"]["mean"],
            "e2e_mean_s": p["e2e_s"]["mean"],
            "throughput_tok_per_s": p["total_throughput_tok_per_s"],
            "num_completed": p["num_completed"],
        }
    return rows


def markdown(rows: dict[str, dict[str, Any]], args: Any) -> str:
    names = list(rows)
    lines = [
        f"{args.requests} requests of {args.prompt_tokens} + {args.output_tokens} tokens, "
        f"concurrency {args.concurrency}, tiny model (512 B/token)",
        "",
        "| figure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def f(v: Any, unit: str = "") -> str:
        if v is None:
            return "-"
        return f"{v:,.0f}{unit}" if isinstance(v, int) or abs(v) >= 100 else f"{v:.4g}{unit}"

    for key, label in (
        ("kv_bytes_peak", "KV bytes at the peak"),
        ("kv_bytes_tokens_peak", "of which token-exact (hf)"),
        ("kv_padding_bytes_peak", "of which padding (hf)"),
        ("kv_blocks_peak", "KV blocks at the peak (vLLM)"),
        ("block_size", "block size (vLLM)"),
        ("ttft_mean_s", "TTFT mean (s)"),
        ("tpot_mean_s", "TPOT mean (s)"),
        ("e2e_mean_s", "E2E mean (s)"),
        ("throughput_tok_per_s", "throughput (tokens/s)"),
        ("num_completed", "completed"),
    ):
        lines.append(f"| {label} | " + " | ".join(f(rows[n][key]) for n in names) + " |")
    return "\n".join(lines)


def figure(rows: dict[str, dict[str, Any]], base: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    kib = [(rows[n]["kv_bytes_peak"] or 0) / 1024 for n in names]
    axes[0].bar(names, kib, color=["tab:blue", "tab:orange"])
    axes[0].set(ylabel="KiB", title="KV bytes at the peak")
    x = range(3)
    for i, n in enumerate(names):
        vals = [rows[n][k] or 0 for k in ("ttft_mean_s", "tpot_mean_s", "e2e_mean_s")]
        axes[1].bar([j + 0.4 * i for j in x], vals, width=0.4, label=n)
    axes[1].set_xticks([j + 0.2 for j in x], ["TTFT", "TPOT", "E2E"])
    axes[1].set(ylabel="s (mean)", title="latency")
    axes[1].legend(fontsize=8)
    axes[2].bar(
        names,
        [rows[n]["throughput_tok_per_s"] or 0 for n in names],
        color=["tab:blue", "tab:orange"],
    )
    axes[2].set(ylabel="tokens/s", title="throughput")
    for ax in (axes[0], axes[2]):
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("fig6: vLLM (CPU build) vs transformers, same requests, tiny model")
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        fig.savefig(base.with_suffix(suffix), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
