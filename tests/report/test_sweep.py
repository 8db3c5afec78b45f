from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kvlab.errors import ConfigError
from kvlab.report.compare import Metric
from kvlab.report.sweep import SweepPoint, grid, parse_axis, run_sweep, write_plots, write_tables
from kvlab.results import RequestRecord, RunResult, summarize


def fake_runner(workload: Path, point: SweepPoint, run_dir: Path) -> None:
    s = dict(point.settings)
    if s.get("blocks") == "0":
        raise RuntimeError("error: no KV blocks")
    cached = {"baseline": 0, "prefix": 50}[s["mode"]]
    ttft = 1.0 / int(s.get("blocks", "1"))
    recs = [
        RequestRecord(
            "r",
            0.0,
            100,
            2,
            admitted_s=0.0,
            first_token_s=ttft,
            finish_s=ttft + 1,
            cached_tokens=cached,
        )
    ]
    RunResult(records=recs, summary=summarize(recs)).save(run_dir)


def test_parse_axis_and_grid() -> None:
    assert parse_axis("num-gpu-blocks=1, 2") == ("num_gpu_blocks", ["1", "2"])
    for bad in ("mode", "mode=", "=a", "1x=a"):
        with pytest.raises(ConfigError):
            parse_axis(bad)
    pts = grid({"mode": ["a", "b"], "blocks": ["1", "2"]})
    assert [p.name for p in pts] == [
        "mode=a,blocks=1",
        "mode=a,blocks=2",
        "mode=b,blocks=1",
        "mode=b,blocks=2",
    ]
    assert pts[0].option_args() == ["--mode", "a", "--blocks", "1"]
    with pytest.raises(ConfigError):
        grid({})
    name, vals = parse_axis("set.max_num_seqs=8,16")
    assert SweepPoint(((name, vals[0]), ("mode", "x"))).option_args() == [
        "--set",
        "max_num_seqs=8",
        "--mode",
        "x",
    ]


def test_sweep_tables_and_plots(tmp_path: Path) -> None:
    axes = {"mode": ["baseline", "prefix"], "blocks": ["0", "1", "2"]}
    res = run_sweep(tmp_path / "w.jsonl", axes, tmp_path / "out", runner=fake_runner, jobs=2)
    assert len(res.outcomes) == 6
    assert [o.point.name for o in res.failed] == ["mode=baseline,blocks=0", "mode=prefix,blocks=0"]
    metrics = [Metric("prefix_cache_hit_rate", True), Metric("ttft_s.mean")]
    write_tables(res, tmp_path / "out", metrics)
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").open()))
    got = [(r["mode"], r["blocks"], r["prefix_cache_hit_rate"], r["ttft_s.mean"]) for r in rows]
    assert got == [
        ("baseline", "0", "", ""),
        ("baseline", "1", "0.0", "1.0"),
        ("baseline", "2", "0.0", "0.5"),
        ("prefix", "0", "", ""),
        ("prefix", "1", "0.5", "1.0"),
        ("prefix", "2", "0.5", "0.5"),
    ]
    assert (
        "failed: RuntimeError: error: no KV blocks" in (tmp_path / "out" / "sweep.md").read_text()
    )
    pytest.importorskip("matplotlib")
    files = write_plots(res, tmp_path / "out", metrics)
    names = sorted(p.name for p in files)
    assert names == [
        "prefix_cache_hit_rate.png",
        "prefix_cache_hit_rate.svg",
        "ttft_s.mean.png",
        "ttft_s.mean.svg",
    ]
    assert all(p.stat().st_size > 1000 for p in files)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--axis", "block-size=16,abc"], "point block_size=abc: Invalid value for '--block-size'"),
        (["--axis", "nope=1,2"], "point nope=1: No such option: --nope"),
        (
            ["--axis", "mode=baseline,prefix", "--sim-args", "--num-blocks x"],
            "point mode=baseline: Invalid value for '--num-blocks'",
        ),
    ],
)
def test_a_bad_point_is_refused_before_any_point_runs(
    tmp_path: Path, args: list[str], named: str
) -> None:
    """Every point's simulate command line is parsed first: one line, exit 2, nothing run."""
    from cli_run import run_cli

    out = tmp_path / "sw"
    r = run_cli(["sweep", "chat", *args, "-o", str(out)], limit_s=60)
    assert r.code == 2, r.err
    assert named in r.one_line_error()
    assert not (out / "runs").exists()
