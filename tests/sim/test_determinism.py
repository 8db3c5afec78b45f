"""One seed, one run directory: simulate and sweep cells are byte-identical from run to
run; the wall time, the one figure that differs, is in run.json's provenance only."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from typer.testing import CliRunner

from kvlab.cli.app import build_app
from kvlab.workload.detect import builtin_trace


def _mooncake(tmp: Path, n: int = 120) -> Path:
    """The first ``n`` rows of the shipped Mooncake conversation trace (with hash_ids)."""
    with builtin_trace("mooncake-conversation").open() as f:
        rows = list(islice(f, n))
    assert all('"hash_ids"' in r for r in rows)
    path = tmp / "moon.jsonl"
    path.write_text("".join(rows))
    return path


def _vidur(tmp: Path) -> Path:
    """A Vidur lengths file (no timestamps)."""
    path = tmp / "lengths.csv"
    path.write_text(
        "num_prefill_tokens,num_decode_tokens\n"
        + "".join(f"{200 + 37 * i},{5 + i % 7}\n" for i in range(40))
    )
    return path


def _tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` by relative path; run.json with its wall time taken out
    (checked to be there, a positive number)."""
    out: dict[str, bytes] = {}
    for p in sorted(d.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name == "run.json":
            run = json.loads(data)
            assert run["provenance"].pop("wall_s") > 0
            data = json.dumps(run).encode()
        out[str(p.relative_to(d))] = data
    return out


def _simulate(workload: Path, out: Path, seed: int) -> None:
    res = CliRunner().invoke(
        build_app(),
        ["simulate", str(workload), "--out", str(out), "--seed", str(seed), "-q"],
    )
    assert res.exit_code == 0, res.output


def test_simulate_twice_gives_identical_files(tmp_path: Path) -> None:
    for make in (_mooncake, _vidur):
        wl = make(tmp_path)
        a, b = (tmp_path / f"{wl.stem}-{x}" for x in "ab")
        _simulate(wl, a, seed=7)
        _simulate(wl, b, seed=7)
        ta, tb = _tree(a), _tree(b)
        assert sorted(ta) == [
            "histograms.json",
            "requests.jsonl",
            "run.json",
            "summary.json",
            "summary.md",
            "timeseries.csv",
            "vllm_bench.json",
        ]
        for name in ta:
            assert ta[name] == tb[name], f"{wl.name}: {name} differs between two runs"
        assert b"wall_s" not in ta["summary.json"] and b"of wall time" not in ta["summary.md"]


def _sweep(workload: str, out: Path) -> None:
    res = CliRunner().invoke(
        build_app(),
        [
            "sweep",
            workload,
            "--axis",
            "mode=baseline,prefix",
            "-j",
            "2",
            "--no-plots",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output


def test_sweep_cells_are_identical_and_read_mooncake_files_with_hash_ids(tmp_path: Path) -> None:
    wl = _mooncake(tmp_path)
    _sweep(str(wl), tmp_path / "s1")
    _sweep(str(wl), tmp_path / "s2")
    t1, t2 = _tree(tmp_path / "s1"), _tree(tmp_path / "s2")
    assert "sweep.csv" in t1 and "runs/mode=prefix/summary.json" in t1, sorted(t1)
    assert t1 == t2
    prefix = json.loads(t1["runs/mode=prefix/summary.json"])
    base = json.loads(t1["runs/mode=baseline/summary.json"])
    assert prefix["prefix_cache_hits"] > 0 == base["prefix_cache_hits"]  # hash_ids were read


def test_sweep_takes_a_built_in_trace_name(tmp_path: Path) -> None:
    _sweep("azure-code", tmp_path / "s")
    direct = tmp_path / "direct"
    _simulate(Path("azure-code"), direct, seed=0)
    cell = tmp_path / "s" / "runs" / "mode=prefix"
    assert (cell / "summary.json").read_bytes() == (direct / "summary.json").read_bytes()
