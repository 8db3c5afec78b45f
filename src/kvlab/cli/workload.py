"""``kvlab workload``: generate, inspect and summarise workload files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

workload_app = typer.Typer(
    name="workload",
    help=(
        "Workload files: generate a shape (chat, planner, subagents, sessions, agentic, mixed, "
        "rag), print its statistics and prefix-reuse upper bound, or show one session."
    ),
    no_args_is_help=True,
)


#: The most words ``workload show --words`` prints per segment.
MAX_SHOW_WORDS = 10_000


@workload_app.command("gen")
def gen(
    shape: str = typer.Argument(..., help="Workload shape; `kvlab workload shapes` lists them."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (.jsonl or .jsonl.gz)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same workload)."),
    sessions: int | None = typer.Option(
        None, "--sessions", help="Number of sessions (requests for mixed and rag)."
    ),
    arrival: str | None = typer.Option(
        None, "--arrival", help="Session start process: poisson, gamma or closed."
    ),
    rate: float | None = typer.Option(None, "--rate", help="Session start rate per second."),
    burstiness: float | None = typer.Option(
        None, "--burstiness", help="Gamma shape (1 = Poisson, < 1 burstier)."
    ),
    think_time: float | None = typer.Option(
        None, "--think-time", help="Mean think time in seconds between a session's turns."
    ),
    assignments: list[str] = typer.Option(
        [], "--set", help="Any shape parameter as KEY=VALUE (repeatable), e.g. --set turns=8."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate a seeded workload of SHAPE and write it as JSONL."""
    from kvlab.cli.options import output_file
    from kvlab.workload.generators import generate, parse_assignments
    from kvlab.workload.io import write_workload
    from kvlab.workload.stats import prefix_reuse_bound

    output_file(output, "--output", make_parent=True)  # before the work, not after
    params: dict[str, Any] = parse_assignments(shape, assignments)
    for key, value in (
        ("sessions", sessions),
        ("arrival", arrival),
        ("rate_per_s", rate),
        ("burstiness", burstiness),
        ("think_time_s", think_time),
    ):
        if value is not None:
            params[key] = value
    w = generate(shape, seed=seed, **params)
    write_workload(w, output)
    bound = prefix_reuse_bound(w)
    info = {
        "path": str(output),
        "shape": shape,
        "seed": seed,
        "num_requests": len(w),
        "prompt_tokens": bound.prompt_tokens,
        "prefix_reuse_bound_hit_rate": bound.hit_rate,
    }
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(
        f"wrote {output}: {len(w)} requests, {bound.prompt_tokens:,} prompt tokens, "
        f"prefix-reuse upper bound {bound.hit_rate:.1%} (block 16)"
    )


@workload_app.command("shapes")
def shapes(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the workload shapes and their parameters with defaults."""
    from kvlab.workload.generators import SHAPES, shape_params

    if as_json:
        typer.echo(json.dumps({n: shape_params(n) for n in SHAPES}, indent=2))
        return
    from rich.console import Console

    con = Console()
    for name, shape in SHAPES.items():
        con.print(f"[bold]{name}[/bold]: {shape.summary}")
        params = ", ".join(f"{k}={v}" for k, v in shape_params(name).items())
        con.print(f"  {params}", highlight=False)


@workload_app.command("stats")
def stats(
    path: Path = typer.Argument(
        ..., help="Workload file, trace file (Mooncake, Azure, Vidur) or built-in trace name."
    ),
    block_size: int = typer.Option(16, "--block-size", help="KV block size in tokens."),
    sort: bool = typer.Option(False, "--sort", help="Accept an unsorted file (sort it)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Requests, sessions, token distributions, reuse and the prefix-reuse upper bound."""
    from kvlab.errors import ConfigError
    from kvlab.workload.detect import load_workload
    from kvlab.workload.stats import workload_stats

    if block_size < 1:
        raise ConfigError(f"--block-size must be >= 1, got {block_size}")
    s = workload_stats(load_workload(path, sort=sort, allow_empty=True), block_size)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    _print_stats(s)


def _print_stats(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    gen = f" (generator {s['generator']}, seed {s['seed']})" if s["generator"] else ""
    con.print(f"[bold]{s['name']}[/bold]{gen}", highlight=False)
    if s["num_requests"] == 0:
        con.print("no requests")
        return
    con.print(
        f"{s['num_requests']} requests, {s['num_sessions']} sessions, "
        f"{s['num_closed_loop']} closed-loop; arrivals {s['first_arrival_s']:.2f}"
        f"-{s['last_arrival_s']:.2f} s; classes "
        + ", ".join(f"{k} {v}" for k, v in s["classes"].items()),
        highlight=False,
    )
    t = Table("tokens", "total", "mean", "p50", "p90", "p99", "max")
    for key in ("prompt_tokens", "output_tokens"):
        d = s[key]
        t.add_row(
            key.replace("_tokens", ""),
            f"{s[key + '_total']:,}",
            *(f"{d[q]:,.0f}" for q in ("mean", "p50", "p90", "p99", "max")),
        )
    con.print(t)
    total = s["prompt_tokens_total"] or 1
    con.print(
        "prompt tokens by retention: "
        + ", ".join(f"{k} {v:,} ({v / total:.0%})" for k, v in s["tokens_by_retention"].items()),
        highlight=False,
    )
    p = s["prefix_reuse"]
    con.print(
        f"prefix reuse (block {p['block_size']}): full-block tokens {p['full_block_tokens']:,}, "
        f"unique {p['unique_block_tokens']:,}; upper bound {p['hit_tokens']:,} hit tokens = "
        f"[bold]{p['hit_rate']:.1%}[/bold] of prompt tokens",
        highlight=False,
    )
    if s.get("prefix_information") is False:
        con.print(
            "  the trace has no prefix information (every prompt is unique content), "
            "so no prompt can hit",
            highlight=False,
        )
    if p["hit_tokens_by_retention"]:
        con.print(
            "  bound by retention: "
            + ", ".join(f"{k} {v:,}" for k, v in p["hit_tokens_by_retention"].items()),
            highlight=False,
        )
    if len(p["hit_rate_by_class"]) > 1:
        con.print(
            "  bound by class: "
            + ", ".join(f"{k} {v:.1%}" for k, v in p["hit_rate_by_class"].items()),
            highlight=False,
        )


@workload_app.command("show")
def show(
    path: Path = typer.Argument(
        ..., help="Workload file, trace file (Mooncake, Azure, Vidur) or built-in trace name."
    ),
    session: str | None = typer.Option(
        None, "--session", help="Session id, or its 0-based index in file order (default: 0)."
    ),
    request: str | None = typer.Option(None, "--request", help="Show one request by id."),
    words: int = typer.Option(
        0, "--words", help="Also print the first N words of each segment (at most 10,000)."
    ),
    sort: bool = typer.Option(False, "--sort", help="Accept an unsorted file (sort it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the requests as JSON lines."),
) -> None:
    """A readable view of one session's requests and their segments.

    A segment marked "=" is re-sent unchanged from the previous request of the
    session at the same position (a prefix hit candidate).
    """
    from kvlab.errors import ConfigError
    from kvlab.workload.detect import load_workload

    if not 0 <= words <= MAX_SHOW_WORDS:
        raise ConfigError(f"--words must be in [0, {MAX_SHOW_WORDS:,}], got {words}")
    w = load_workload(path, sort=sort)
    if request is not None:
        reqs = [r for r in w.requests if r.request_id == request]
        if not reqs:
            raise ConfigError(f"no request {request!r} in {path}")
    else:
        order = list(dict.fromkeys(r.session_id for r in w.requests if r.session_id is not None))
        if not order:
            raise ConfigError(f"{path} has no sessions; use --request ID")
        sid = order[0] if session is None else session
        if sid not in order and sid.isdigit() and int(sid) < len(order):
            sid = order[int(sid)]
        if sid not in order:
            raise ConfigError(
                f"no session {sid!r} in {path}; it has {len(order)} sessions, e.g. "
                + ", ".join(order[:5])
            )
        reqs = [r for r in w.requests if r.session_id == sid]
    if as_json:
        for r in reqs:
            typer.echo(json.dumps(r.to_dict()))
        return
    _print_requests(reqs, words)


def _print_requests(reqs: list[Any], words: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from kvlab.workload.content import text

    con = Console()
    prev: list[tuple[str, int]] = []
    for r in reqs:
        when = f"arrival {r.arrival_s:.2f} s" if r.arrival_s is not None else ""
        if r.think_time_s is not None:
            when = f"think {r.think_time_s:.2f} s after the previous response"
        con.print(
            f"[bold]{r.request_id}[/bold] turn {r.turn} class {r.cls} - {when} - prompt "
            f"{r.prompt_tokens:,} tokens, output {r.output_tokens:,}"
            + (f" (content {r.output_content_id})" if r.output_content_id else ""),
            highlight=False,
        )
        t = Table("", "kind", "tokens", "retention", "content", *(["text"] if words else []))
        for i, s in enumerate(r.segments):
            same = i < len(prev) and prev[i] == (s.content_id, s.tokens)
            row = ["=" if same else "+", s.kind, f"{s.tokens:,}", s.retention, s.content_id]
            if words:
                row.append(text(s.content_id, min(words, s.tokens)).strip() + " ...")
            t.add_row(*row)
        con.print(t)
        prev = [(s.content_id, s.tokens) for s in r.segments]


def register(app: typer.Typer) -> None:
    app.add_typer(workload_app, name="workload")
