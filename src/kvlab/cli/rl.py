"""``kvlab rl``: train and evaluate eviction policies on ``kvlab/PrefixEviction-v0``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

rl_app = typer.Typer(
    name="rl",
    help=(
        "Reinforcement learning on kvlab/PrefixEviction-v0 (the rl extra): train a "
        "MaskablePPO eviction policy on a workload, evaluate it against LRU, LFU, FIFO, "
        "S3-FIFO, retention classes and Belady's offline bound on held-out traces."
    ),
    no_args_is_help=True,
)

_TRACE_HELP = (
    "Workload file or built-in trace (mooncake-conversation, mooncake-synthetic, azure-conv, "
    "azure-code), or shape:NAME[:SEED] for a generated workload (e.g. shape:agentic:7)."
)


def _trace(spec: str, block_size: int) -> object:
    from kvlab.errors import ConfigError
    from kvlab.rl.prefix_trace import PrefixTrace

    if block_size < 1:
        raise ConfigError(f"--block-size must be >= 1, got {block_size}")
    if spec.startswith("shape:"):
        from kvlab.workload.generators import generate

        parts = spec.split(":")
        try:
            seed = int(parts[2]) if len(parts) > 2 else 0
        except ValueError:
            raise ConfigError(f"{spec}: the seed after the shape must be an integer") from None
        w = generate(parts[1], seed=seed, sessions=32)
    else:
        from kvlab.workload.detect import load_workload

        w = load_workload(spec)
    return PrefixTrace(w, block_size)


@rl_app.command("train")
def train_cmd(
    trace: str = typer.Argument(..., help=_TRACE_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Where to save the policy (.zip)."),
    steps: int = typer.Option(20_000, "--steps", help="Training decisions (env steps)."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
    block_size: int = typer.Option(64, "--block-size", "-b", help="Tokens per KV block."),
    requests: int = typer.Option(400, "--requests", help="Requests per episode."),
    capacity_fraction: float = typer.Option(
        0.1, "--capacity-fraction", help="Cache capacity as a fraction of distinct blocks."
    ),
    k: int = typer.Option(8, "--k", help="Candidates per eviction (the LRU-most k)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Train MaskablePPO on PrefixEviction-v0 over TRACE and save the policy."""
    import time

    from kvlab.errors import ConfigError
    from kvlab.rl.evaluate import train

    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    from kvlab.cli.options import output_file

    output_file(out, "--out", make_parent=True)  # before training: a bad place is one line
    if out.suffix != ".zip":  # the file the policy is saved to
        output_file(out.with_name(out.name + ".zip"), "--out", make_parent=True)
    t0 = time.perf_counter()
    prefix = _trace(trace, block_size)
    typer.echo(f"training MaskablePPO for {steps} steps (seed {seed}) ...", err=True)
    path = train(
        prefix,  # type: ignore[arg-type]
        out,
        steps=steps,
        requests=requests,
        capacity_fraction=capacity_fraction,
        k=k,
        seed=seed,
    )
    wall = time.perf_counter() - t0
    if as_json:
        typer.echo(json.dumps({"policy": str(path), "steps": steps, "seed": seed, "wall_s": wall}))
    else:
        typer.echo(f"saved {path} ({steps} steps, seed {seed}, {wall:.1f} s)")


@rl_app.command("eval")
def eval_cmd(
    trace: str = typer.Argument(..., help=_TRACE_HELP),
    policy: Path | None = typer.Option(
        None, "--policy", help="A policy saved by `kvlab rl train`, scored as `learned`."
    ),
    episodes: int = typer.Option(5, "--episodes", help="Seeded episodes."),
    seed: int = typer.Option(1000, "--seed", help="Evaluation seed (keep apart from training)."),
    block_size: int = typer.Option(64, "--block-size", "-b", help="Tokens per KV block."),
    requests: int = typer.Option(400, "--requests", help="Requests per episode."),
    capacity_fraction: float = typer.Option(
        0.1, "--capacity-fraction", help="Capacity as a fraction of an episode's distinct blocks."
    ),
    k: int = typer.Option(8, "--k", help="Candidates per eviction (the LRU-most k)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Block hit rate of every policy on seeded episodes of TRACE (mean and 95% CI)."""
    from kvlab.rl.evaluate import evaluate

    def progress(i: int, n: int) -> None:
        typer.echo(f"episode {i}/{n}", err=True)

    scores = evaluate(
        _trace(trace, block_size),  # type: ignore[arg-type]
        episodes=episodes,
        requests=requests,
        capacity_fraction=capacity_fraction,
        k=k,
        seed=seed,
        learned=policy,
        progress=progress,
    )
    if as_json:
        typer.echo(json.dumps({"trace": trace, "scores": [s.to_dict() for s in scores]}))
        return
    typer.echo(f"{'policy':>10}  block hit rate (mean +- 95% CI over {episodes} episodes)")
    for s in scores:
        typer.echo(f"{s.name:>10}  {s.mean:.4f} +- {s.ci95:.4f}")


def register(app: typer.Typer) -> None:
    app.add_typer(rl_app, name="rl")
