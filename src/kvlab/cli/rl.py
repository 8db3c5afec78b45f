"""``kvlab rl``: train and evaluate eviction policies on ``kvlab/PrefixEviction-v0``;
train MaskablePPO on ``kvlab/KVPressure-v0`` (``train --env kvpressure``) and evaluate
it with the baselines per tier (``eval-pressure``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

rl_app = typer.Typer(
    name="rl",
    help=(
        "Reinforcement learning on kvlab/PrefixEviction-v0 (the rl extra): train a "
        "MaskablePPO eviction policy on a workload, evaluate it against LRU, LFU, FIFO, "
        "S3-FIFO, retention classes and Belady's offline bound on held-out traces. "
        "train --env kvpressure: MaskablePPO on a tier of kvlab/KVPressure-v0 (keep, "
        "evict, compress, swap under KV pressure). eval-pressure: the keep / random / "
        "heuristic agents (and a trained policy, --policy) on every tier."
    ),
    no_args_is_help=True,
)

_TRACE_HELP = (
    "Workload file or built-in trace (mooncake-conversation, mooncake-synthetic, azure-conv, "
    "azure-code), or shape:NAME[:SEED] for a generated workload (e.g. shape:agentic:7). "
    "For --env prefix only."
)
_ENV_HELP = "prefix (kvlab/PrefixEviction-v0, needs TRACE) or kvpressure (kvlab/KVPressure-v0)."
_DIFFICULTY_HELP = "KVPressure tier: easy, medium or hard."
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
    from kvlab.cli.options import output_file

    output_file(out, "--out", make_parent=True)  # before training: a bad place is one line
    if out.suffix != ".zip":  # the file the policy is saved to
        output_file(out.with_name(out.name + ".zip"), "--out", make_parent=True)
    if env == "kvpressure":
        _train_pressure(out, difficulty, steps, seed, as_json)
        return
    assert trace is not None
    from kvlab.rl.evaluate import check_args, train

    check_args(1, requests, capacity_fraction, k)  # before the trace loads
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
        progress=lambda i, n: typer.echo(f"step {i}/{n}", err=True),
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
    from kvlab.rl.evaluate import check_args, evaluate

    check_args(episodes, requests, capacity_fraction, k)  # before the trace loads

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


@rl_app.command("eval-pressure")
def eval_pressure_cmd(
    difficulty: str = typer.Option(
        "all", "--difficulty", "-d", help="Tier: easy, medium, hard, or all."
    ),
    agents: str = typer.Option(
        "keep,random,heuristic", "--agents", help="Comma-separated agents: keep, random, heuristic."
    ),
    episodes: int = typer.Option(10, "--episodes", help="Episodes per tier and agent."),
    seed: int = typer.Option(
        1000, "--seed", help="First reset seed (held out: keep apart from training seeds)."
    ),
    kind: str = typer.Option(
        "mixed",
        "--kind",
        help="Workloads: chat, agentic, mixed, or trace (slices of the Azure 2023 trace).",
    ),
    evict_mode: str = typer.Option(
        "recompute", "--evict-mode", help="evict = recompute (preempt) or drop (a failure)."
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="A policy saved by `kvlab rl train --env kvpressure`: agent ppo."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Reward (mean +- 95% CI) and every reward term of the KVPressure-v0 baselines
    (and of a trained policy, --policy), per tier, on held-out seeded episodes. Ctrl-C
    prints the episodes finished."""
    from kvlab.errors import ConfigError
    from kvlab.rl.pressure_baselines import EpisodeRow, summarize
    from kvlab.rl.pressure_ppo import evaluate_with_policy
    from kvlab.rl.pressure_scenario import DIFFICULTIES

    tiers = list(DIFFICULTIES) if difficulty == "all" else [difficulty]
    names = [a.strip() for a in agents.split(",") if a.strip()]
    if not names:
        raise ConfigError("--agents: name at least one agent (keep, random, heuristic)")
    rows: list[EpisodeRow] = []

    def progress(row: EpisodeRow, done: int, total: int) -> None:
        rows.append(row)
        typer.echo(
            f"episode {done}/{total}: {row.difficulty} {row.agent} seed {row.seed} "
            f"reward {row.reward:.4f}",
            err=True,
        )

    interrupted = False
    try:
        summaries = evaluate_with_policy(
            tiers,
            names,
            policy,
            episodes=episodes,
            seed=seed,
            kind=kind,
            evict_mode=evict_mode,
            on_episode=progress,
        )
    except KeyboardInterrupt:
        interrupted = True
        summaries = summarize(rows)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "env": "kvlab/KVPressure-v0",
                    "kind": kind,
                    "seed": seed,
                    "evict_mode": evict_mode,
                    "interrupted": interrupted,
                    "results": [s.to_dict() for s in summaries],
                }
            )
        )
    else:
        _print_pressure_table(summaries)
    if interrupted:
        typer.echo("interrupted: the table holds the episodes finished", err=True)
        raise typer.Exit(130)


def _print_pressure_table(summaries: list) -> None:
    from kvlab.rl.pressure_rewards import TERMS

    short = {
        "failure_penalty": "fail",
        "throughput_reward": "thru",
        "headroom_bonus": "head",
        "memory_efficiency": "mem",
        "eviction_quality": "evq",
        "latency_penalty": "lat",
        "risky_eviction_penalty": "risky",
    }
    head = " ".join(f"{short[t]:>6}" for t in TERMS)
    typer.echo(
        f"{'tier':>6} {'agent':>9} {'n':>3} {'reward':>16} {head} "
        f"{'tokens':>7} {'fails':>6} {'swap_s':>7} {'evict':>6} {'compr':>6} {'swap':>6}"
    )
    for s in summaries:
        m = s.term_means()
        a = s.action_means()
        terms = " ".join(f"{m[t]:>6.3f}" for t in TERMS)
        typer.echo(
            f"{s.difficulty:>6} {s.agent:>9} {len(s.rows):>3} "
            f"{s.mean:>8.4f} +- {s.ci95:.4f} {terms} {m['tokens']:>7.0f} "
            f"{m['failures']:>6.2f} {m['swap_latency_s']:>7.4f} {a.get('evict', 0):>6.2f} "
            f"{a.get('compress', 0):>6.2f} {a.get('swap_to_cpu', 0):>6.2f}"
        )
    typer.echo(
        "(terms: unweighted episode scores, means; reward = sum of weight x term; "
        "evict / compr / swap: actions applied per episode)"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(rl_app, name="rl")
