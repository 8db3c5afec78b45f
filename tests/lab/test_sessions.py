"""Session continuity on tiny hand-built run directories whose answers are worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvlab.report.sessions import miss_threshold, session_continuity, to_markdown
from kvlab.results import RunResult


def rec(
    sid: str,
    k: int,
    arrival: float,
    finish: float,
    prompt: int,
    cached: int | None,
    output: int = 4,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "request_id": f"{sid}-t{k}",
        "arrival_s": arrival,
        "prompt_tokens": prompt,
        "output_tokens": output,
        "session_id": sid,
        "first_token_s": arrival + 0.1 * (k + 1),
        "finish_s": finish,
    }
    if cached is not None:
        d["cached_tokens"] = cached
    return d


def run_dir(tmp_path: Path, records: list[dict[str, Any]], name: str = "run") -> RunResult:
    d = tmp_path / name
    d.mkdir()
    (d / "summary.json").write_text("{}")
    (d / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return RunResult.load(d)


# Session a: think 1 s then 10 s; session b: think 2 s then 30 s. Block size 16.
# Turn 1 of each re-sends turn 0 (prompt 40 -> 2 full blocks = 32 tokens) and hits them;
# turn 2 after the long think misses (cached 0).
RECORDS = [
    rec("a", 0, 0.0, 1.0, 40, 0),
    rec("b", 0, 0.5, 1.5, 40, 0),
    rec("a", 1, 2.0, 3.0, 60, 32),
    rec("b", 1, 3.5, 4.5, 60, 48),
    rec("a", 2, 13.0, 14.0, 80, 0),
    rec("b", 2, 34.5, 35.5, 80, 16),
]


def test_by_turn_history_share_and_survival(tmp_path: Path) -> None:
    run = run_dir(tmp_path, RECORDS)
    s = session_continuity(run.records, block_size=16)
    assert s is not None
    assert s["num_sessions"] == 2 and s["num_follow_up_turns"] == 4
    t0, t1, t2 = s["by_turn"]
    assert (t0["turn"], t0["requests"], t0["prefix_cache_hit_rate"]) == (0, 2, 0.0)
    assert t1["prefix_cache_hit_rate"] == pytest.approx(80 / 120)
    assert t2["prefix_cache_hit_rate"] == pytest.approx(16 / 160)
    assert t0["ttft_mean_s"] == pytest.approx(0.1) and t2["ttft_mean_s"] == pytest.approx(0.3)
    # history: (40 + 4) / 60 and (60 + 4) / 80
    assert t0["history_share_mean"] is None
    assert t1["history_share_mean"] == pytest.approx(44 / 60)
    assert t2["history_share_mean"] == pytest.approx(64 / 80)
    surv = s["survival"]
    assert surv["source"] == "next_turn_hit"
    # think times: a1 1.0 kept, b1 2.0 kept, a2 10.0 lost (0 < 48), b2 30.0 lost (16 < 48)
    assert (surv["num_turns"], surv["num_survived"], surv["num_lost"]) == (4, 2, 2)
    assert surv["longest_survived_think_s"] == pytest.approx(2.0)
    assert surv["shortest_lost_think_s"] == pytest.approx(10.0)
    assert surv["miss_threshold_s"] == pytest.approx(6.0)
    assert surv["miss_threshold_errors"] == 0


def test_by_age_bins(tmp_path: Path) -> None:
    s = session_continuity(run_dir(tmp_path, RECORDS).records, block_size=16)
    assert s is not None
    # ages: a 0, 2, 13; b 0, 3, 34 -> bins [0,1) x2, [2,5) x2, [10,20) x1, [20,50) x1
    rows = [(r["age_lo_s"], r["age_hi_s"], r["requests"]) for r in s["by_age"]]
    assert rows == [(0.0, 1.0, 2), (2.0, 5.0, 2), (10.0, 20.0, 1), (20.0, 50.0, 1)]


def test_block_size_from_the_cached_counts_when_unknown(tmp_path: Path) -> None:
    s = session_continuity(run_dir(tmp_path, RECORDS).records)
    assert s is not None and s["block_size"] == 16  # gcd(32, 48, 16)
    assert s["survival"]["num_survived"] == 2


def test_live_records_without_cached_tokens_judge_nothing(tmp_path: Path) -> None:
    recs = [rec("a", 0, 0.0, 1.0, 40, None), rec("a", 1, 2.0, 3.0, 60, None)]
    s = session_continuity(run_dir(tmp_path, recs).records)
    assert s is not None
    assert s["by_turn"][1]["prefix_cache_hit_rate"] is None
    assert s["survival"]["num_turns"] == 0 and s["survival"]["miss_threshold_s"] is None


def test_no_multi_turn_session_no_figures(tmp_path: Path) -> None:
    recs = [rec("a", 0, 0.0, 1.0, 40, 0), rec("b", 0, 0.0, 1.0, 40, 0)]
    assert session_continuity(run_dir(tmp_path, recs).records) is None


def test_miss_threshold_counts_its_errors() -> None:
    # a noisy boundary: one survivor beyond the lost turn
    pairs = [(1.0, True), (2.0, True), (3.0, False), (4.0, True), (5.0, False), (6.0, False)]
    assert miss_threshold(pairs) == (2.5, 1)
    assert miss_threshold([(1.0, False), (2.0, False), (3.0, True)]) == (0.0, 1)


def test_markdown_puts_runs_side_by_side(tmp_path: Path) -> None:
    s = session_continuity(run_dir(tmp_path, RECORDS).records, block_size=16)
    md = to_markdown({"sim": s, "real": s, "none": None})
    assert "| turn | sim hit |" in md and "none" not in md
    assert "| 1 | 66.7% |" in md
    assert "| miss threshold (s) | 6 | 6 |" in md


def test_a_simulated_session_workload_has_the_sessions_key() -> None:
    from kvlab.backends.sim import SimBackend
    from kvlab.sim.config import SimConfig
    from kvlab.workload.generators import generate

    wl = generate("sessions", seed=0, sessions=3, turns=3)
    s = SimBackend(SimConfig(model="llama-3.1-8b", gpu="h100")).run(wl).summary
    assert list(s)[-1] == "sessions" and "wall_s" not in s  # the wall time is in run.json
    ses = s["sessions"]
    assert ses["num_sessions"] == 3 and [r["turn"] for r in ses["by_turn"]] == [0, 1, 2]
    # a roomy cache keeps every prefix
    assert ses["survival"]["num_lost"] == 0 and ses["survival"]["num_survived"] == 6


def test_simulate_and_compare_show_sessions(tmp_path: Path) -> None:
    from cli_run import run_cli

    wl = tmp_path / "s.jsonl"
    assert (
        run_cli(
            [
                "workload",
                "gen",
                "sessions",
                "--sessions",
                "4",
                "--set",
                "turns=3",
                "--seed",
                "0",
                "-o",
                str(wl),
            ]
        ).code
        == 0
    )
    small, big = tmp_path / "small", tmp_path / "big"
    assert run_cli(["simulate", str(wl), "--num-blocks", "200", "-o", str(small)]).code == 0
    assert run_cli(["simulate", str(wl), "-o", str(big)]).code == 0
    assert "## Sessions: by turn" in (small / "summary.md").read_text()
    r = run_cli(["compare", str(big), str(small), "--json"])
    assert r.code == 0, r.err
    cmp = json.loads(r.out)
    lost = {n: cmp["sessions"][n]["survival"]["num_lost"] for n in ("big", "small")}
    assert lost["big"] == 0 and lost["small"] > 0
