"""``kvlab plan``: will this model fit on this GPU, and how many sequences at what context?"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from kvlab.cli.options import Param, echo, typer_command

if TYPE_CHECKING:
    import typer
    from rich.console import Console

    from kvlab.hardware import GpuSpec
    from kvlab.plan import PlanResult

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B"
DEFAULT_GPU = "h100-sxm"

HELP = """Plan the KV cache of MODEL on GPU the way vLLM v1 sizes it.

Prints the memory breakdown per GPU, bytes per token and per sequence, vLLM's block
count, "GPU KV cache size" and "Maximum concurrency" figures, a verdict for
--concurrency sequences of --context tokens with reasons, and what-ifs (fp8 KV, TP,
shorter context, block size, a CPU offload tier).

Available KV memory is estimated (GPU memory x utilization - weights - overhead)
unless --kv-cache-memory-bytes gives it, as vLLM's flag of the same name does; then
the block and concurrency figures are exactly vLLM's. --num-gpu-blocks-override N
fixes the block count as vLLM's flag does and prints the "GPU KV cache size" and
"Maximum concurrency" lines vLLM then logs.

Weights are priced as the checkpoint ships: gpt-oss's MoE experts in MXFP4 (4.25 bits
per weight), DeepSeek-V3's linears in FP8 with 128x128 block scales, the rest in the
model dtype; --weight-dtype prices every weight in one dtype instead.

Examples:

  kvlab plan

  kvlab plan --model openai/gpt-oss-20b --gpu h200 --context 65536 --concurrency 32

  kvlab plan --model meta-llama/Llama-3.1-8B --gpu h100-sxm --context 131072 --json

  kvlab plan --model openai/gpt-oss-20b --context 8192 --num-gpu-blocks-override 512
"""


def _size(n: float) -> str:
    from kvlab.hardware import GIB

    if abs(n) >= GIB:
        return f"{n / GIB:,.2f} GiB"
    return f"{n / (1 << 20):,.2f} MiB"


def _resolve_gpu(
    gpu: str, memory_gb: float | None, bw_gbps: float | None, tflops: float | None
) -> GpuSpec:
    """The catalog GPU, or a custom one when --gpu-memory-gb is given.

    A custom GPU takes its bandwidth, TFLOPS and host link from --gpu unless
    --gpu-bw-gbps / --gpu-tflops say otherwise.
    """
    from kvlab.errors import ConfigError
    from kvlab.hardware import MAX_CUSTOM_MEMORY_GB, MAX_CUSTOM_RATE, custom_gpu, get_gpu

    for option, value, limit in (
        ("--gpu-memory-gb", memory_gb, MAX_CUSTOM_MEMORY_GB),
        ("--gpu-bw-gbps", bw_gbps, MAX_CUSTOM_RATE),
        ("--gpu-tflops", tflops, MAX_CUSTOM_RATE),
    ):
        if value is not None:
            _check_option(option, value, 0.0, limit)
    base = get_gpu(gpu)
    if memory_gb is None:
        if bw_gbps is not None or tflops is not None:
            raise ConfigError(
                "--gpu-bw-gbps and --gpu-tflops describe a custom GPU: add --gpu-memory-gb"
            )
        return base
    link = base.host_link_h2d_bytes_per_s
    return custom_gpu(
        memory_gb=memory_gb,
        mem_bw_gbps=bw_gbps if bw_gbps is not None else base.mem_bw_bytes_per_s / 1e9,
        bf16_tflops=tflops if tflops is not None else base.bf16_flops / 1e12,
        host_link_gbps=None if link is None else link / 1e9,
        unified_memory=base.unified_memory,
        sm_version=base.sm_version,
    )


def _check_option(option: str, value: float, low: float, limit: float) -> None:
    """ConfigError naming ``option`` unless ``low < value <= limit`` (``low`` itself is
    allowed when it is 0 and the option is --offload-gb); NaN and infinity never pass."""
    from kvlab.errors import ConfigError

    ok = math.isfinite(value) and value <= limit
    ok = ok and (value > low or (option == "--offload-gb" and value == low))
    if not ok:
        kind = "[0" if option == "--offload-gb" else f"({low:g}"
        raise ConfigError(f"{option} must be a finite number in {kind}, {limit:g}], got {value!r}")


def _print_gpus(console: Console) -> None:
    from rich.table import Table

    from kvlab.hardware import list_gpus

    t = Table(title="GPUs")
    t.add_column("name", no_wrap=True)
    for col in ("memory", "HBM GB/s", "bf16 TF", "fp8 TF", "host link GB/s", "aliases"):
        t.add_column(col)
    for g in list_gpus():
        link = "unified" if g.unified_memory else f"{(g.host_link_h2d_bytes_per_s or 0) / 1e9:g}"
        fp8 = "-" if g.fp8_flops is None else f"{g.fp8_flops / 1e12:g}"
        t.add_row(
            g.name,
            _size(g.memory_bytes),
            f"{g.mem_bw_bytes_per_s / 1e9:g}",
            f"{g.bf16_flops / 1e12:g}",
            fp8,
            link,
            ", ".join(g.aliases),
        )
    console.print(t)


def _render(r: PlanResult, console: Console) -> None:
    from rich.table import Table

    d = r.to_dict()
    console.print(
        f"[bold]{r.model}[/bold] on [bold]{r.gpu}[/bold]  kv {r.kv_dtype}  TP {r.tp}  "
        f"context {r.context_tokens:,}  concurrency {r.concurrency:,}"
    )

    mem = Table(title="Memory per GPU", show_header=False)
    mem.add_column("item")
    mem.add_column("bytes", justify="right")
    mem.add_row("GPU memory", _size(r.gpu_memory_bytes))
    usable = r.gpu_memory_bytes * r.gpu_memory_utilization
    mem.add_row(f"usable (x {r.gpu_memory_utilization:g})", _size(usable))
    mem.add_row(f"weights ({r.weights_format})", _size(r.weights_bytes))
    if r.kv_memory_source == "estimated":
        o = r.overhead
        mem.add_row("overhead (estimate)", _size(r.overhead_bytes))
        mem.add_row("  CUDA context", _size(o.cuda_context_bytes))
        mem.add_row("  NCCL buffers", _size(o.nccl_bytes))
        mem.add_row("  peak activations", _size(o.activation_bytes))
        mem.add_row("  CUDA graphs", _size(o.cuda_graph_bytes))
    elif r.kv_memory_source == "given overhead":
        mem.add_row("overhead (given)", _size(r.overhead_bytes))
    label = "KV cache (given)" if r.kv_memory_source == "given" else "KV cache (available)"
    mem.add_row(label, _size(r.available_kv_bytes))
    console.print(mem)

    # under TP every byte figure is one GPU's share (the KV heads are split over the GPUs)
    per_gpu = " per GPU" if r.tp > 1 else ""
    kv = Table(title=f"KV cache{per_gpu}", show_header=False)
    kv.add_column("item")
    kv.add_column("value", justify="right")
    kv.add_row(f"KV bytes per token{per_gpu} (growing)", f"{r.kv_bytes_per_token:,}")
    kv.add_row(f"one sequence at {r.context_tokens:,} tokens{per_gpu}", _size(r.sequence_bytes))
    if r.state_bytes_per_sequence:
        kv.add_row("  of which recurrent state", _size(r.state_bytes_per_sequence))
    kv.add_row("block size (tokens)", f"{r.block_size:,}")
    kv.add_row(f"bytes per block{per_gpu}", f"{d['bytes_per_block']:,}")
    kv.add_row("blocks per request", f"{d['blocks_per_request']:,}")
    if r.capacity.blocks_before_override is None:
        kv.add_row("GPU blocks (incl. null block)", f"{r.num_gpu_blocks:,}")
    else:
        kv.add_row("GPU blocks (override, incl. null block)", f"{r.num_gpu_blocks:,}")
        kv.add_row("  blocks the KV memory gives", f"{r.capacity.blocks_before_override:,}")
    kv.add_row("GPU KV cache size (tokens)", f"{r.kv_cache_tokens:,}")
    mc = d["max_concurrency"]
    kv.add_row(
        f"max concurrency at {r.context_tokens:,} tokens", "-" if mc is None else f"{mc:.2f}x"
    )
    console.print(kv)
    if r.capacity.blocks_before_override is not None:
        console.print("vLLM logs:", highlight=False)
        for line in r.capacity.log_lines():
            console.print(f"  {line}", highlight=False)

    if len(d["groups"]) > 1:
        g = Table(title="KV cache groups (one block table each)")
        for col in ("kind", "layers", "block", "page bytes", "window", "blocks/request"):
            g.add_column(col, justify="right")
        for grp in d["groups"]:
            g.add_row(
                grp["kind"],
                str(grp["num_layers"]),
                str(grp["block_size"]),
                f"{grp['page_bytes']:,}",
                "-" if grp["window"] is None else f"{grp['window']:,}",
                f"{grp['blocks_per_request']:,}",
            )
        console.print(g)

    verdict = "[bold green]FITS[/bold green]" if r.fits else "[bold red]DOES NOT FIT[/bold red]"
    console.print(f"Verdict: {verdict}")
    for reason in r.reasons:
        console.print(f"  - {reason}", highlight=False)
    for note in r.notes:
        console.print(f"  note: {note}", style="dim", highlight=False)

    if r.whatifs:
        w = Table(title="What if")
        w.add_column("change")
        for col in ("blocks", "KV tokens", "max concurrency", "vs now", "fits"):
            w.add_column(col, justify="right")
        lines = []
        for row in r.whatifs:
            if "skipped" in row:
                lines.append(f"  {row['what']}: skipped, {row['skipped']}")
            elif "note" in row:
                lines.append(f"  {row['what']}: {row['note']}")
            else:
                ratio = row["concurrency_ratio"]
                conc = row["max_concurrency"]
                w.add_row(
                    row["what"],
                    f"{row['num_gpu_blocks']:,}",
                    f"{row['kv_cache_tokens']:,}",
                    "-" if conc is None else f"{conc:.2f}x",
                    "-" if ratio is None else f"x{ratio:.2f}",
                    "yes" if row["fits"] else "no",
                )
        console.print(w)
        for line in lines:
            console.print(line, highlight=False)


#: The parameters of ``kvlab plan``, in help order (read by Typer and by the plain
#: parser of :mod:`kvlab.cli.entry`).
PARAMS: tuple[Param, ...] = (
    Param(
        "model",
        "str",
        DEFAULT_MODEL,
        "Hugging Face id, alias, or a config.json path.",
        ("--model", "-m"),
    ),
    Param("gpu", "str", DEFAULT_GPU, "GPU name or alias (see --list-gpus).", ("--gpu", "-g")),
    Param(
        "kv_dtype",
        "str",
        None,
        "KV cache dtype: bf16, fp16, fp8, int8, int4 (default: model dtype).",
        ("--kv-dtype",),
    ),
    Param("tp", "int", 1, "Tensor parallel size.", ("--tp",)),
    Param(
        "context",
        "int",
        None,
        "Tokens per sequence (vLLM --max-model-len); default: the model's maximum.",
        ("--context",),
    ),
    Param("concurrency", "int", 1, "Sequences that must fit at once.", ("--concurrency",)),
    Param(
        "block_size",
        "int",
        None,
        "Tokens per KV block (default: vLLM's for the GPU, 16; CPU build 128).",
        ("--block-size",),
    ),
    Param(
        "weight_dtype",
        "str",
        None,
        "Price every weight in this dtype (e.g. bf16, fp8, int4) instead of the "
        "checkpoint's own format (MXFP4 experts of gpt-oss, FP8 of DeepSeek-V3).",
        ("--weight-dtype",),
    ),
    Param(
        "gpu_memory_utilization",
        "float",
        0.92,
        "Fraction of GPU memory vLLM may use (0, 1].",
        ("--gpu-memory-utilization",),
    ),
    Param(
        "kv_cache_memory_bytes",
        "int",
        None,
        "KV cache bytes per GPU, as vLLM's flag: skips the estimate.",
        ("--kv-cache-memory-bytes",),
    ),
    Param(
        "num_gpu_blocks_override",
        "int",
        None,
        "KV blocks per GPU whatever the memory gives, as vLLM's flag of the same name: "
        "prints the cache size and concurrency vLLM then logs.",
        ("--num-gpu-blocks-override",),
    ),
    Param(
        "max_num_batched_tokens",
        "int",
        None,
        "vLLM's token budget per step (default: vLLM's for the GPU).",
        ("--max-num-batched-tokens",),
    ),
    Param(
        "max_num_seqs",
        "int",
        None,
        "vLLM's running-sequence cap (default: vLLM's for the GPU).",
        ("--max-num-seqs",),
    ),
    Param(
        "async_scheduling",
        "flag",
        True,
        "vLLM async scheduling (GPU default on; the CPU backend turns it off).",
        ("--async-scheduling/--no-async-scheduling",),
    ),
    Param(
        "prefix_caching",
        "flag",
        True,
        "vLLM prefix caching (Mamba state pages).",
        ("--prefix-caching/--no-prefix-caching",),
    ),
    Param(
        "offload_gb",
        "float",
        0.0,
        "A CPU offload tier of this many GiB for the what-if table.",
        ("--offload-gb",),
    ),
    Param(
        "gpu_memory_gb",
        "float",
        None,
        "Custom GPU: memory in GiB (overrides --gpu's memory).",
        ("--gpu-memory-gb",),
    ),
    Param("gpu_bw_gbps", "float", None, "Custom GPU: memory GB/s.", ("--gpu-bw-gbps",)),
    Param("gpu_tflops", "float", None, "Custom GPU: dense bf16 TFLOPS.", ("--gpu-tflops",)),
    Param("list_gpus", "flag", False, "List the GPU catalog and exit.", ("--list-gpus",)),
    Param("as_json", "flag", False, "Print one JSON object.", ("--json",)),
)


def register(app: typer.Typer) -> None:
    app.command("plan", help=HELP)(typer_command(PARAMS, run_command))


def run_command(
    *,
    model: str,
    gpu: str,
    kv_dtype: str | None,
    tp: int,
    context: int | None,
    concurrency: int,
    block_size: int | None,
    weight_dtype: str | None,
    gpu_memory_utilization: float,
    kv_cache_memory_bytes: int | None,
    num_gpu_blocks_override: int | None,
    max_num_batched_tokens: int | None,
    max_num_seqs: int | None,
    async_scheduling: bool,
    prefix_caching: bool,
    offload_gb: float,
    gpu_memory_gb: float | None,
    gpu_bw_gbps: float | None,
    gpu_tflops: float | None,
    list_gpus: bool,
    as_json: bool,
) -> None:
    """The body of ``kvlab plan`` (options already parsed)."""
    from kvlab.plan import plan

    if list_gpus:
        if as_json:
            from kvlab.hardware import list_gpus as gpus

            echo(json.dumps([g.to_dict() for g in gpus()]))
        else:
            _print_gpus(_console())
        return
    from kvlab.hardware import MAX_CUSTOM_MEMORY_GB

    _check_option("--offload-gb", offload_gb, 0.0, MAX_CUSTOM_MEMORY_GB)
    gpu_spec = _resolve_gpu(gpu, gpu_memory_gb, gpu_bw_gbps, gpu_tflops)
    result = plan(
        model,
        gpu_spec,
        kv_dtype=kv_dtype,
        tp=tp,
        context_tokens=context,
        concurrency=concurrency,
        block_size=block_size,
        weight_dtype=weight_dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        kv_cache_memory_bytes=kv_cache_memory_bytes,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        offload_gb=offload_gb,
        async_scheduling=async_scheduling,
        enable_prefix_caching=prefix_caching,
        num_gpu_blocks_override=num_gpu_blocks_override,
    )
    if as_json:
        out: dict[str, Any] = result.to_dict()
        echo(json.dumps(out))
    else:
        _render(result, _console())


def _console() -> Console:
    from rich.console import Console

    return Console()
