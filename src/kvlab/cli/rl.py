"""``kvlab rl``: train and evaluate eviction policies on ``kvlab/PrefixEviction-v0``
(``--env prefix``, the default) and KV-pressure policies on ``kvlab/KVPressure-v0``
(``--env kvpressure``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer

rl_app = typer.Typer(
    name="rl",
    help=(
        "Reinforcement learning (the rl extra). --env prefix (default): train a "
        "MaskablePPO eviction policy for kvlab/PrefixEviction-v0 on a workload, evaluate "
        "it against LRU, LFU, FIFO, S3-FIFO, retention classes and Belady's offline bound "
        "on held-out traces. --env kvpressure: train MaskablePPO on a difficulty tier of "
        "kvlab/KVPressure-v0 (keep / evict / compress / swap under KV pressure), evaluate "
        "it next to the random and heuristic agents on held-out seeds, per reward term."
    ),
    no_args_is_help=True,
)

_TRACE_HELP = (
    "Workload file or built-in trace (mooncake-conversation, mooncake-synthetic, azure-conv, "
    "azure-code), or shape:NAME[:SEED] for a generated workload (e.g. shape:agentic:7). "
    "For --env prefix only."
)
_ENV_HELP = "prefix (kvlab/PrefixEviction-v0, needs TRACE) or kvpressure (kvlab/KVPressure-v0)."
_DIFFICULTY_HELP = "KVPressure tier: easy, medium or hard (eval also takes all)."
ENVS = ("prefix", "kvpressure")


def _env_choice(env: str, trace: str | None) -> str:
    """The checked --env; TRACE goes with prefix only."""
    from kvlab.errors import ConfigError

    if env not in ENVS:
        raise ConfigError(f"--env must be one of {', '.join(ENVS)}, got {env!r}")
    if env == "prefix" and trace is None:
        raise ConfigError("TRACE is required with --env prefix (kvlab rl train TRACE -o FILE)")
    if env == "kvpressure" and trace is not None:
        raise ConfigError(f"--env kvpressure takes no TRACE (got {trace!r}); use --difficulty")
    return env


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
    trace: str | None = typer.Argument(None, help=_TRACE_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Where to save the policy (.zip)."),
    steps: int = typer.Option(20_000, "--steps", help="Training decisions (env steps)."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
    block_size: int = typer.Option(64, "--block-size", "-b", help="Tokens per KV block."),
    requests: int = typer.Option(400, "--requests", help="Requests per episode."),
    capacity_fraction: float = typer.Option(
        0.1, "--capacity-fraction", help="Cache capacity as a fraction of distinct blocks."
    ),
    k: int = typer.Option(8, "--k", help="Candidates per eviction (the LRU-most k)."),
    env: str = typer.Option("prefix", "--env", help=_ENV_HELP),
    difficulty: str = typer.Option("medium", "--difficulty", help=_DIFFICULTY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Train MaskablePPO and save the policy: on PrefixEviction-v0 over TRACE, or with
    --env kvpressure on a KVPressure-v0 tier (its log and train.json in FILE-log/)."""
    import time

    from kvlab.errors import ConfigError

    _env_choice(env, trace)
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if env == "kvpressure":
        _train_pressure(out, difficulty, steps, seed, as_json)
        return
    assert trace is not None
    from kvlab.rl.evaluate import train

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


def _train_pressure(out: Path, difficulty: str, steps: int, seed: int, as_json: bool) -> None:
    import time

    from kvlab.rl.pressure_ppo import check_difficulty, train_pressure

    check_difficulty(difficulty)
    t0 = time.perf_counter()
    typer.echo(
        f"training MaskablePPO on KVPressure-v0 {difficulty} for {steps} steps (seed {seed}) ...",
        err=True,
    )

    def progress(i: int, n: int) -> None:
        typer.echo(f"step {i}/{n}", err=True)

    path = train_pressure(difficulty, out, steps=steps, seed=seed, progress=progress)
    wall = time.perf_counter() - t0
    log = path.with_name(path.stem + "-log")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "policy": str(path),
                    "env": "kvlab/KVPressure-v0",
                    "difficulty": difficulty,
                    "steps": steps,
                    "seed": seed,
                    "wall_s": wall,
                    "log": str(log / "progress.csv"),
                }
            )
        )
    else:
        typer.echo(f"saved {path} ({difficulty}, {steps} steps, seed {seed}, {wall:.1f} s)")
        typer.echo(f"log: {log}")


@rl_app.command("eval")
def eval_cmd(
    trace: str | None = typer.Argument(None, help=_TRACE_HELP),
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
    env: str = typer.Option("prefix", "--env", help=_ENV_HELP),
    difficulty: str = typer.Option("all", "--difficulty", help=_DIFFICULTY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Block hit rate of every policy on seeded episodes of TRACE (mean and 95% CI); with
    --env kvpressure, the episode reward and each reward term of the random, heuristic
    and (with --policy) PPO agents on held-out seeds of each tier."""
    _env_choice(env, trace)

    def progress(i: int, n: int) -> None:
        typer.echo(f"episode {i}/{n}", err=True)

    if env == "kvpressure":
        _eval_pressure(difficulty, policy, episodes, seed, as_json, progress)
        return
    assert trace is not None
    from kvlab.rl.evaluate import evaluate

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


def _eval_pressure(
    difficulty: str,
    policy: Path | None,
    episodes: int,
    seed: int,
    as_json: bool,
    progress: Callable[[int, int], None],
) -> None:
    from kvlab.errors import ConfigError
    from kvlab.rl.pressure_ppo import check_difficulty, evaluate_pressure, load_policy
    from kvlab.rl.pressure_rewards import TERMS
    from kvlab.rl.pressure_tools import DIFFICULTIES

    tiers = DIFFICULTIES if difficulty == "all" else (difficulty,)
    for t in tiers:
        check_difficulty(t)
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if policy is not None:
        load_policy(policy)  # a bad file is one line before any episode runs
    scores = []
    for t in tiers:
        typer.echo(f"{t}:", err=True)
        scores += evaluate_pressure(
                t, episodes=episodes, seed=seed, learned=policy, progress=progress
        )
    if as_json:
        out = {"env": "kvlab/KVPressure-v0", "seed": seed, "scores": [s.to_dict() for s in scores]}
        typer.echo(json.dumps(out))
        return
    short = {t: t.split("_")[0] for t in TERMS}
    head = "  ".join(f"{short[t]:>8}" for t in TERMS)
    typer.echo(
        f"episode reward (mean +- 95% CI over {episodes} held-out seeds from {seed}) "
        "and each term's mean score (unweighted)"
    )
    typer.echo(f"{'tier':>6} {'agent':>9}  {'reward':>16}  {head}")
    for s in scores:
        cells = "  ".join(f"{s.terms[t]:>8.3f}" for t in TERMS)
        typer.echo(f"{s.difficulty:>6} {s.agent:>9}  {s.mean:>7.4f} +- {s.ci95:.4f}  {cells}")


def register(app: typer.Typer) -> None:
    app.add_typer(rl_app, name="rl")
