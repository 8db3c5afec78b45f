"""``kvlab models``: list the built-in catalog and show one model's memory shape."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer


def fmt_bytes(n: float) -> str:
    """Binary-prefixed bytes: 131072 -> '128 KiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value % 1 else f"{value:.0f} {unit}"
    return f"{n:g} B"


def fmt_params(n: int) -> str:
    """Decimal parameter count: 8030261248 -> '8.03B'."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    return f"{n / 1e6:.0f}M"


def _console(width: int = 160) -> Any:
    """A Rich console; ``width`` wide when stdout is not a terminal (pipes, files, tests)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=width)


def _kinds(counts: dict[str, int]) -> str:
    return " ".join(f"{n} {k}" for k, n in counts.items())


def list_command(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the built-in models: layers by kind, parameters, checkpoint weight bytes and
    format, growing KV bytes per token (bf16: full-attention and MLA layers) and the
    bytes sliding-window layers hold at most per sequence (their windows full)."""
    from kvlab.models import kv_bytes_per_token, layer_kinds_summary, list_models
    from kvlab.models.spec import sliding_cap_bytes, weights_bytes, weights_format

    rows: list[dict[str, Any]] = []
    for spec in list_models():
        rows.append(
            {
                "name": spec.name,
                "alias": spec.aliases[0] if spec.aliases else "",
                "architecture": spec.architecture,
                "layers_by_kind": layer_kinds_summary(spec.layers),
                "num_params": spec.num_params,
                "num_active_params": spec.num_active_params,
                "weights_bytes": weights_bytes(spec),
                "weights_format": weights_format(spec),
                "kv_bytes_per_token_bf16": kv_bytes_per_token(spec, "bf16"),
                "kv_sliding_cap_bytes_bf16": sliding_cap_bytes(spec, "bf16"),
                "max_context": spec.max_context,
            }
        )
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"kvlab models ({len(rows)})")
    for col, justify in (
        ("name", "left"),
        ("alias", "left"),
        ("arch", "left"),
        ("layers", "left"),
        ("params", "right"),
        ("active", "right"),
        ("weights", "right"),
        ("format", "left"),
        ("KV/token bf16 (growing)", "right"),
        ("sliding cap/seq", "right"),
        ("max ctx", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r["name"],
            r["alias"],
            r["architecture"],
            _kinds(r["layers_by_kind"]),
            fmt_params(r["num_params"]),
            fmt_params(r["num_active_params"]),
            fmt_bytes(r["weights_bytes"]),
            r["weights_format"],
            fmt_bytes(r["kv_bytes_per_token_bf16"]),
            fmt_bytes(r["kv_sliding_cap_bytes_bf16"]) if r["kv_sliding_cap_bytes_bf16"] else "-",
            f"{r['max_context']:,}",
        )
    _console(width=200).print(table)


def show_command(
    name: str = typer.Argument(..., help="Hugging Face id, alias, or path to a config.json."),
    kv_dtype: str | None = typer.Option(
        None, "--kv-dtype", help="KV cache dtype (bf16, fp16, fp8, int8, int4); default: model's."
    ),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel size (bytes are per GPU)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show a model's layers (per kind and shape) and its KV / state / weight memory."""
    from kvlab.models import get_model
    from kvlab.models.summary import model_summary

    summary = model_summary(get_model(name), kv_dtype, tp)
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.table import Table

    console = _console()
    head = f"[bold]{summary['name']}[/bold] ({summary['architecture']})"
    if summary["aliases"]:
        head += f"  aliases: {', '.join(summary['aliases'])}"
    console.print(head)
    if summary["description"]:
        console.print(summary["description"])
    table = Table(title=f"layers (per layer, per GPU, TP {tp}, KV {summary['kv_dtype']})")
    for col in (
        "kind",
        "layers",
        "KV heads/GPU",
        "head dim",
        "window",
        "latent",
        "B/token",
        "state/seq",
    ):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for g in summary["layer_groups"]:
        attn = g["kind"] in ("full", "sliding")
        head_dim = (
            g["head_dim"]
            if g["head_dim"] == g["head_dim_v"]
            else (f"{g['head_dim']}/{g['head_dim_v']}")
        )
        table.add_row(
            g["kind"],
            str(g["count"]),
            str(g["num_kv_heads_per_gpu"]) if attn else "-",
            str(head_dim) if attn else "-",
            str(g["window"]) if g["window"] else "-",
            str(g["latent_dim"]) if g["latent_dim"] else "-",
            f"{g['bytes_per_token']:,.0f}" if g["bytes_per_token"] else "-",
            fmt_bytes(g["state_bytes"]) if g["state_bytes"] else "-",
        )
    console.print(table)
    mem = Table(title="memory per sequence / per GPU", show_header=False)
    mem.add_column("what")
    mem.add_column("value", justify="right")
    mem.add_row("growing KV per token", f"{summary['kv_bytes_per_token']:,.0f} B")
    mem.add_row("sliding-window cap", fmt_bytes(summary["sliding_cap_bytes"]))
    mem.add_row(
        f"recurrent state ({summary['state_dtype']} SSM)",
        fmt_bytes(summary["state_bytes_per_sequence"]),
    )
    mem.add_row(
        f"one sequence at max context ({summary['max_context']:,})",
        fmt_bytes(summary["max_context_sequence_bytes"]),
    )
    mem.add_row(
        "parameters (active)",
        f"{fmt_params(summary['num_params'])} ({fmt_params(summary['num_active_params'])})",
    )
    mem.add_row(f"weights ({summary['weights_format']})", fmt_bytes(summary["weights_bytes"]))
    console.print(mem)
    _print_weights(summary, console)


def _print_weights(summary: dict[str, Any], console: Any) -> None:
    """Parameters and checkpoint bytes per category, with each category's format."""
    from rich.table import Table

    quant = summary["weight_quant"] or {}
    quantized = set(quant.get("categories", ()))
    table = Table(title=f"weights by category (per GPU, TP {summary['tp']}, as shipped)")
    for col in ("category", "params", "format", "bytes"):
        table.add_column(col, justify="left" if col in ("category", "format") else "right")
    by_bytes = summary["weights_bytes_by_category"]
    for cat, n in summary["params_by_category"].items():
        fmt = quant["method"] if cat in quantized else summary["dtype"]
        if cat in quantized and quant.get("block_size"):
            fmt += " ({}x{} blocks)".format(*quant["block_size"])
        table.add_row(cat, f"{n:,}", fmt, fmt_bytes(by_bytes[cat]))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to ``app``."""
    group = typer.Typer(
        name="models",
        help="The built-in model catalog: layers, parameters and KV memory per model.",
        no_args_is_help=True,
    )
    group.command("list")(list_command)
    group.command("show")(show_command)
    app.add_typer(group, name="models")


__all__ = ["fmt_bytes", "fmt_params", "register"]
