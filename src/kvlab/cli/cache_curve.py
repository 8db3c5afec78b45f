"""``kvlab cache-curve``: prefix-cache hit rate against cache capacity for a trace."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvlab.cli.options import (
    DPI_PARAM,
    REQUIRED,
    Param,
    check_dpi,
    echo,
    plot_dpi,
    typer_command,
)
from kvlab.errors import ConfigError

if TYPE_CHECKING:
    import typer

_HELP = """Prefix-cache hit rate against cache capacity, with infinitely fast compute.

For sizing a cache tier. Requests are replayed one at a time in arrival order;
only full blocks are cacheable, at most floor((L-1)/B) blocks of an L-token
prompt can hit (the last token is always recomputed), the hit is the longest
run of leading blocks present, then the request's blocks are touched tail
first (its first block ends most recently used) in an LRU cache of the given
capacity in blocks. One pass computes every capacity exactly.

TRACE is a file (kvlab workload JSONL, Mooncake JSONL, Azure or Vidur CSV;
the format is detected) or a built-in trace name: mooncake-conversation,
mooncake-synthetic, azure-conv, azure-code, vidur-arxiv.
"""


#: The parameters of ``kvlab cache-curve``, in help order (read by Typer and by the
#: plain parser of :mod:`kvlab.cli.entry`).
PARAMS: tuple[Param, ...] = (
    Param("trace", "str", REQUIRED, "Trace file or built-in trace name."),
    Param("block_size", "int", 16, "Tokens per KV block.", ("--block-size", "-b")),
    Param(
        "capacities",
        "str",
        None,
        "Comma-separated cache capacities in blocks (k/M suffixes allowed, e.g. 10k,1M; "
        "with --model also sizes such as 80GB or 64GiB). Default: 12 log-spaced points "
        "up to the trace's distinct blocks.",
        ("--capacities", "-c"),
    ),
    Param("policy", "str", "lru", "Eviction policy (only lru).", ("--policy",)),
    Param(
        "fmt",
        "str",
        None,
        "Trace format: kvlab, mooncake, azure, vidur (default: detect).",
        ("--format",),
    ),
    Param(
        "model",
        "str",
        None,
        "Model (catalog name or config.json) to show sizes in GB.",
        ("--model", "-m"),
    ),
    Param("kv_dtype", "str", None, "KV dtype for --model sizes.", ("--kv-dtype",)),
    Param("plot", "path", None, "Write a plot (PNG) to this file.", ("--plot",)),
    DPI_PARAM,
    Param("as_json", "flag", False, "Print JSON instead of a table.", ("--json",)),
)


def register(app: typer.Typer) -> None:
    app.command("cache-curve", help=_HELP)(typer_command(PARAMS, run_command))


def run_command(
    *,
    trace: str,
    block_size: int,
    capacities: str | None,
    policy: str,
    fmt: str | None,
    model: str | None,
    kv_dtype: str | None,
    plot: Path | None,
    as_json: bool,
    on_loaded: Callable[[], object] | None = None,
    dpi: float | None = None,
) -> None:
    """The body of ``kvlab cache-curve`` (options already parsed); ``on_loaded`` is
    called once the trace is loaded (see :mod:`kvlab.cli.entry`)."""
    check_dpi(dpi)
    from kvlab.sim.cache_curve import CURVE_POLICIES, cache_curve
    from kvlab.workload.detect import load_workload, resolve_trace

    if policy not in CURVE_POLICIES:  # fail before loading the trace
        cache_curve((), block_size, (), policy=policy)
    if plot is not None:
        from kvlab.cli.options import output_figure

        output_figure(plot, "--plot")
    block_bytes = _block_bytes(model, kv_dtype, block_size) if model else None
    caps = _parse_capacities(capacities, block_bytes) if capacities else None
    wl = load_workload(resolve_trace(trace), fmt)
    if on_loaded is not None:
        on_loaded()
    curve = cache_curve(wl.requests, block_size, caps, policy=policy)
    if plot is not None:
        from kvlab.report.cache_curve_plot import plot_cache_curve

        title = f"{wl.name}, block size {block_size}"
        with plot_dpi(dpi):
            plot_cache_curve(curve, plot, title=title, block_bytes=block_bytes)
    if as_json:
        echo(json.dumps(_json(curve, wl.name, model, block_bytes), indent=2))
        return
    _table(curve, wl.name, model, block_bytes)


def _json(curve: Any, name: str, model: str | None, block_bytes: float | None) -> dict[str, Any]:
    d: dict[str, Any] = {"trace": name, **curve.to_dict()}
    if block_bytes is not None:
        d["model"] = model
        d["block_bytes"] = block_bytes
        for p in [*d["points"], d["infinite"]]:
            p["capacity_bytes"] = p["capacity_blocks"] * block_bytes
    return d


def _table(curve: Any, name: str, model: str | None, block_bytes: float | None) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{name}: LRU prefix cache, block size {curve.block_size}"
    if model:
        title += f", {model}"
    t = Table(title=title)
    t.add_column("capacity (blocks)", justify="right")
    if block_bytes is not None:
        t.add_column("capacity (GB)", justify="right")
    t.add_column("block hit rate", justify="right")
    t.add_column("token hit rate", justify="right")
    rows = [(p, f"{p.capacity_blocks:,}") for p in curve.points]
    rows.append((curve.infinite, f"inf ({curve.infinite.capacity_blocks:,})"))
    for p, label in rows:
        row = [label]
        if block_bytes is not None:
            row.append(f"{p.capacity_blocks * block_bytes / 1e9:,.2f}")
        row += [f"{p.block_hit_rate:.4f}", f"{p.token_hit_rate:.4f}"]
        t.add_row(*row)
    console = Console()
    console.print(t)
    console.print(
        f"{curve.num_requests:,} requests, {curve.num_prompt_tokens:,} prompt tokens, "
        f"{curve.num_hittable_blocks:,} hittable blocks; 'inf' = every distinct block cached"
    )


_SUFFIX = {"k": 10**3, "m": 10**6, "g": 10**9}
_BYTES = {"gb": 1e9, "gib": 2**30, "tb": 1e12, "tib": 2**40, "mb": 1e6, "mib": 2**20}


def _parse_capacities(text: str, block_bytes: float | None) -> list[int]:
    """``"1000,10k,2M"`` (blocks) or ``"80GB"`` (bytes, needs a model) -> blocks."""
    out: list[int] = []
    for raw in text.split(","):
        item = raw.strip().lower().replace("_", "")
        if not item:
            continue
        unit = next((u for u in sorted(_BYTES, key=len, reverse=True) if item.endswith(u)), None)
        try:
            if unit is not None:
                if block_bytes is None:
                    raise ConfigError(f"capacity {raw.strip()!r} is a size: give --model too")
                out.append(int(float(item[: -len(unit)]) * _BYTES[unit] // block_bytes))
            elif item[-1] in _SUFFIX:
                out.append(int(float(item[:-1]) * _SUFFIX[item[-1]]))
            else:
                out.append(int(item))
        except ValueError:
            raise ConfigError(
                f"bad capacity {raw.strip()!r}: use block counts like 1000,10k,1M "
                "(or sizes like 80GB with --model)"
            ) from None
        if out[-1] < 0 or not math.isfinite(out[-1]):
            raise ConfigError(f"capacities must be >= 0, got {raw.strip()!r}")
    if not out:
        raise ConfigError("--capacities is empty; give e.g. 1000,10000,100000")
    return out


def _block_bytes(model: str, kv_dtype: str | None, block_size: int) -> float:
    """Bytes of one cached block of the model's growing KV (full attention and MLA layers)."""
    from kvlab.models.catalog import get_model
    from kvlab.models.spec import kv_bytes_per_token

    spec = get_model(model)
    return float(kv_bytes_per_token(spec, kv_dtype) * block_size)


__all__ = ["PARAMS", "register", "run_command"]
