"""``kvlab agents``: context growth of a tool-using LangGraph agent, compaction measured.

``run`` drives the pension workflow against an OpenAI-compatible server with one
strategy; ``compare`` puts runs side by side (the trade-off table); ``emit`` writes
the workflow as a kvlab workload and answers offline with the simulator per model
and GPU. Needs the agents extra (``pip install 'kvlab[agents]'``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from kvlab.cli.options import dpi_option

agents_app = typer.Typer(
    help="Tool-using LangGraph agents: context growth and compaction strategies, "
    "measured on a server (run, compare) or simulated offline (emit).",
    no_args_is_help=True,
)

_STRATEGY_HELP = (
    "naive (full history), clip, extract, window, summarize, lc_summarize "
    "(LangChain's SummarizationMiddleware), lc_context_edit (LangChain's ClearToolUsesEdit), "
    "cache_aware (folds finished blocks so the cached prefix stays byte-identical)."
)


def _need_agents_extra() -> None:
    from kvlab.errors import DependencyMissing

    for mod, pkg in (("langgraph", "langgraph"), ("langchain_openai", "langchain-openai")):
        try:
            __import__(mod)
        except ImportError:
            raise DependencyMissing(pkg, "agents") from None
    try:
        __import__("langchain.agents.middleware")
    except ImportError:
        raise DependencyMissing("langchain", "agents") from None


@agents_app.command("run")
def run_cmd(
    strategy: str = typer.Option(..., "--strategy", help=_STRATEGY_HELP),
    endpoint: str = typer.Option(
        ..., "--endpoint", help="Server base URL, e.g. http://127.0.0.1:8000"
    ),
    model: str = typer.Option(..., "--model", help="Served model name."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    companies: int = typer.Option(8, "--companies", help="Companies to analyse (1-12)."),
    pages: int = typer.Option(50, "--pages", help="Pages per annual report."),
    page_words: int = typer.Option(400, "--page-words", help="Words per report page."),
    num_agents: int = typer.Option(1, "--agents", help="Agents run at once (a fleet)."),
    budget: int = typer.Option(
        100_000, "--budget-tokens", help="Token budget of the compacting strategies."
    ),
    clip_chars: int = typer.Option(
        1200, "--clip-chars", help="Characters kept per tool output / key facts."
    ),
    window: int = typer.Option(2, "--window", help="Tool outputs kept raw by window strategies."),
    max_output: int = typer.Option(16, "--max-output-tokens", help="max_tokens of each call."),
    mc_runs: int = typer.Option(10_000, "--mc-runs", help="Monte Carlo runs (30 years each)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the companies' figures."),
    target: list[str] = typer.Option(
        [], "--target", help="Model for the KV bytes column (repeatable; default three)."
    ),
    target_gpu: str = typer.Option("h100", "--target-gpu", help="GPU for the KV bytes column."),
    decisions: str = typer.Option(
        "scripted",
        "--decisions",
        help="Who decides the tool calls: 'scripted' (default: the workflow's fixed tool "
        "sequence, because the tiny random model CI runs cannot call tools) or 'model' (the "
        "five tools are bound to the model and its own tool calls drive the graph; needs a "
        "capable model and a server that returns tool_calls, e.g. vLLM with "
        "--enable-auto-tool-choice --tool-call-parser NAME).",
    ),
    max_steps: int | None = typer.Option(
        None,
        "--max-steps",
        help="Model calls at most per agent (default: 4x the scripted run's calls); a run "
        "that reaches it ends 'step limit', not complete.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print agents.json instead of a summary."),
) -> None:
    """Run the pension workflow against a server with one strategy and measure every call.

    Decisions are scripted by default (the workflow's fixed tool sequence) so that tiny
    models can run it; every model call is really sent with the whole context the
    strategy keeps. With --decisions model a capable model's own tool calls drive the
    graph: calls that cannot run are answered with an error and counted. Writes
    steps.jsonl (one row per model call), agents.json and a kvlab run directory (kvlab
    compare reads it). Serve vLLM with --enable-prompt-tokens-details for cached
    tokens. Progress per company and step goes to stderr.
    """
    from kvlab.agents.graph import STRATEGY_NAMES, StrategyConfig
    from kvlab.agents.live import DEFAULT_TARGETS, RunConfig, run
    from kvlab.agents.workflow import WorkflowConfig
    from kvlab.errors import ConfigError

    if strategy not in STRATEGY_NAMES:
        raise ConfigError(f"--strategy: unknown {strategy!r}; choose {', '.join(STRATEGY_NAMES)}")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
    for name, v in (("--budget-tokens", budget), ("--clip-chars", clip_chars)):
        if v < 1:
            raise ConfigError(f"{name} must be >= 1, got {v}")
    if window < 0:
        raise ConfigError(f"--window must be >= 0, got {window}")
    if decisions not in ("scripted", "model"):
        raise ConfigError(f"--decisions must be 'scripted' or 'model', got {decisions!r}")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {max_steps}")
    _need_agents_extra()
    from kvlab.cli.options import output_dir

    output_dir(out, "--out")  # before any model call: a bad place is one line
    cfg = RunConfig(
        strategy=strategy,
        endpoint=endpoint,
        model=model,
        workflow=WorkflowConfig(
            num_companies=companies, pages=pages, page_words=page_words, mc_runs=mc_runs, seed=seed
        ),
        strategies=StrategyConfig(budget_tokens=budget, clip_chars=clip_chars, window=window),
        num_agents=num_agents,
        max_output_tokens=max_output,
        targets=tuple(target) or DEFAULT_TARGETS,
        target_gpu=target_gpu,
        decisions=decisions,
        max_steps=max_steps,
    )
    who = "decisions scripted" if decisions == "scripted" else "decisions by the model"
    typer.echo(
        f"{strategy}: {companies} companies x {pages} pages; {who}, "
        f"at most {cfg.step_limit} model calls per agent",
        err=True,
    )
    report = run(cfg, out, progress=sys.stderr)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    typer.echo(_run_line(report))
    for a in report["agents"]:
        if a["overflow"]:
            o = a["overflow"]
            typer.echo(
                f"  agent {a['agent']}: overflow ({o['kind']}) at model call {o['step'] + 1} "
                f"({o['company'] or 'masterplan'}): {o['error']}"
            )
        elif a.get("end") != "done" or report.get("decided_by") == "model":
            typer.echo(f"  agent {a['agent']}: {_agent_line(a)}")
    typer.echo(f"wrote {out}")


def _run_line(r: dict[str, Any]) -> str:
    hit = r.get("prefix_hit_share")
    return (
        f"{r['strategy']}: {r['completed']}/{r['num_agents']} completed, "
        f"{r['tokens_sent']:,} prompt tokens sent, "
        f"{'?' if r['tokens_recomputed'] is None else format(r['tokens_recomputed'], ',')} "
        f"recomputed, prefix hits {'?' if hit is None else f'{hit:.1%}'}, "
        f"facts kept {r['fact_retention_mean']:.0%} ({r['decisions']})"
    )


def _agent_line(a: dict[str, Any]) -> str:
    """One agent's end, steps and tool calls (model decisions)."""
    plan = a.get("masterplan_fact_retention")
    return (
        f"{a.get('end_detail') or a.get('end')}; {a['steps']} model calls, "
        f"{a.get('tool_calls', 0)} tool calls, {a.get('invalid_tool_calls', 0)} invalid, "
        f"{a.get('tool_errors', 0)} tool errors"
        + ("" if plan is None else f", masterplan facts {plan:.0%}")
    )


TABLE_COLUMNS = (
    ("strategy", "strategy"),
    ("completed", "completed"),
    ("tokens sent", "tokens_sent"),
    ("tokens recomputed", "tokens_recomputed"),
    ("prefix hits", "prefix_hit_share"),
    ("max prompt", "max_prompt_tokens"),
    ("facts kept", "fact_retention_mean"),
    ("overflow", "overflow"),
    ("end", "end"),
    ("steps", "steps"),
    ("tool calls", "tool_calls"),
    ("invalid calls", "invalid_tool_calls"),
)


def trade_off_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: the trade-off table's figures."""
    rows = []
    for r in reports:
        over = [a["overflow"] for a in r["agents"] if a.get("overflow")]
        o = over[0] if over else None
        rows.append(
            {
                "strategy": r["strategy"],
                "completed": f"{r['completed']}/{r['num_agents']}",
                "tokens_sent": r["tokens_sent"],
                "tokens_recomputed": r["tokens_recomputed"],
                "prefix_hit_share": r["prefix_hit_share"],
                "max_prompt_tokens": r["max_prompt_tokens"],
                "fact_retention_mean": r["fact_retention_mean"],
                "overflow": None
                if o is None
                else f"call {o['step'] + 1} ({o['company'] or 'masterplan'}, {o['kind']})",
                "end": _ends(r),
                "steps": r.get("steps"),
                "tool_calls": r.get("tool_calls"),
                "invalid_tool_calls": r.get("invalid_tool_calls"),
                "decided_by": r.get("decided_by", "scripted"),
            }
        )
    return rows


def _ends(r: dict[str, Any]) -> str | None:
    """The completion reasons of a run's agents: "done", "step_limit", "2 done, 1 overflow"."""
    ends = r.get("ends")
    if not ends:
        return None
    if len(ends) == 1:
        return str(next(iter(ends)))
    return ", ".join(f"{n} {e}" for e, n in sorted(ends.items()))


def _cell(v: Any, key: str) -> str:
    if v is None:
        return "-"
    if key in ("prefix_hit_share", "fact_retention_mean"):
        return f"{v:.0%}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(h for h, _ in TABLE_COLUMNS) + " |"
    sep = "|" + "---|" * len(TABLE_COLUMNS)
    body = ["| " + " | ".join(_cell(r[k], k) for _, k in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


@agents_app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Run directories of kvlab agents run."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write the Markdown."),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Also draw prompt and cached tokens per model call: PLOT.png and PLOT.svg "
        "(the plot extra).",
    ),
    dpi: float | None = dpi_option(),
) -> None:
    """The trade-off table of agents runs: tokens sent, tokens recomputed (prompt minus
    prefix hits), prefix-hit share, largest prompt, facts kept, completion, overflow."""
    from kvlab.agents.live import load_report
    from kvlab.cli.options import check_dpi, plot_dpi

    check_dpi(dpi)
    from kvlab.cli.options import output_file

    if output is not None:
        output_file(output, "--output")
    if plot is not None:  # PLOT.png and PLOT.svg
        output_file(plot.with_name(plot.name + ".png"), "--plot", make_parent=True)
    reports = [load_report(d) for d in runs]
    rows = trade_off_rows(reports)
    md = markdown_table(rows)
    if output is not None:
        from kvlab.results import atomic_write_text

        atomic_write_text(output, md)
    if plot is not None:
        from kvlab.agents.plot import plot_prompts

        with plot_dpi(dpi):
            written = plot_prompts(runs, [r["strategy"] for r in reports], plot)
        for p in written:
            typer.echo(f"wrote {p}", err=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(md, nl=False)
        decisions = {r.get("decisions") for r in reports}
        for d in sorted(x for x in decisions if x):
            typer.echo(f"({d})")


@agents_app.command("emit")
def emit_cmd(
    out: Path | None = typer.Option(
        None, "--out", help="Write the workload here (JSONL, kvlab's workload format)."
    ),
    strategy: list[str] = typer.Option(
        [], "--strategy", help="Strategy to emit (repeatable; default: six of them)."
    ),
    companies: int = typer.Option(8, "--companies", help="Companies to analyse (1-12)."),
    pages: int = typer.Option(50, "--pages", help="Pages per annual report."),
    page_words: int = typer.Option(400, "--page-words", help="Words per report page."),
    budget: int = typer.Option(100_000, "--budget-tokens", help="Budget of compacting strategies."),
    model: list[str] = typer.Option(
        [],
        "--model",
        help="Model to answer for (repeatable; default gpt-oss-120b, Nemotron-3-Nano).",
    ),
    gpu: list[str] = typer.Option(
        [], "--gpu", help="GPU to answer for (repeatable; default dgx-spark, h100)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """The workflow as a kvlab workload, and the simulator's answer offline: per strategy,
    model and GPU the model call where the context overflows, the agents that fit at once
    (plan), prefix hit rate and TTFT (simulated)."""
    from dataclasses import asdict

    from kvlab.agents.emit import (
        DEFAULT_EMIT_STRATEGIES,
        DEFAULT_GPUS,
        DEFAULT_MODELS,
        HYBRID_NOTE,
        TOKENS_NOTE,
        answer,
        check_strategies,
        offline_contexts,
        workload,
    )
    from kvlab.agents.graph import StrategyConfig
    from kvlab.agents.workflow import WorkflowConfig
    from kvlab.hardware import get_gpu
    from kvlab.models.catalog import get_model

    if out is not None:
        from kvlab.cli.options import output_file

        output_file(out, "--out")  # before the offline runs: a bad place is one line at once
    names = check_strategies(strategy) if strategy else DEFAULT_EMIT_STRATEGIES
    models = tuple(model) or DEFAULT_MODELS
    gpus = tuple(gpu) or DEFAULT_GPUS
    for m in models:
        get_model(m)
    for g in gpus:
        get_gpu(g)
    _need_agents_extra()
    wf = WorkflowConfig(num_companies=companies, pages=pages, page_words=page_words)
    st = StrategyConfig(budget_tokens=budget)
    calls = {}
    for s in names:
        typer.echo(f"running {s} offline ({wf.num_model_calls} model calls)", err=True)
        calls[s] = offline_contexts(s, wf, st)
    if out is not None:
        from kvlab.workload.io import write_workload

        write_workload(workload(calls), out)
        typer.echo(f"wrote {out}", err=True)
    rows = answer(calls, models, gpus, progress=lambda m: typer.echo(m, err=True))
    if as_json:
        typer.echo(
            json.dumps(
                {"rows": [asdict(r) for r in rows], "notes": [HYBRID_NOTE, TOKENS_NOTE]}, indent=2
            )
        )
        return
    typer.echo(_offline_table(rows), nl=False)
    typer.echo(f"note: {HYBRID_NOTE}")
    typer.echo(f"note: {TOKENS_NOTE}")


def _offline_table(rows: list[Any]) -> str:
    head = (
        "| model | GPU | strategy | overflow at call | agents that fit | prefix hit rate "
        "| TTFT mean | largest prompt needed | KV at peak |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        over = "-" if r.overflow_step is None else f"{r.overflow_step + 1} ({r.overflow_company})"
        hit = "-" if r.prefix_hit_rate is None else f"{r.prefix_hit_rate:.0%}"
        ttft = "-" if r.ttft_mean_s is None else f"{r.ttft_mean_s:.2f} s"
        lines.append(
            f"| {r.model.split('/')[-1]} | {r.gpu} | {r.strategy} | {over} | {r.agents_that_fit} "
            f"| {hit} | {ttft} | {r.max_prompt_tokens:,} | {r.kv_bytes_peak / 2**30:.2f} GiB |"
        )
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    app.add_typer(agents_app, name="agents")
