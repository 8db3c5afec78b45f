"""``kvlab stress`` on the command line: outputs, bad input, Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_run import run_cli

SMALL = """\
version: 1
search: {seq_lens: [1024], gen_len: 32, max_value: 16, concurrency_rounds: 2}
scenarios:
  - {name: one, model: qwen2.5-0.5b, batch: 4, seq_len: 1024, gen_len: 32}
  - {name: two, model: qwen2.5-0.5b, batch: 8, seq_len: 2048, gen_len: 32}
  - {name: three, model: qwen2.5-72b, batch: 1, seq_len: 1024, gen_len: 32}
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(SMALL)
    return p


def test_print_default_matrix_round_trips(tmp_path: Path) -> None:
    r = run_cli(["stress", "--print-default-matrix"])
    assert r.code == 0
    (tmp_path / "d.yaml").write_text(r.out)
    from kvlab.stress.matrix import load_matrix

    assert len(load_matrix(tmp_path / "d.yaml").scenarios) == 11


def test_small_matrix_writes_tables(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = run_cli(["stress", "-m", str(small), "--out", str(out), "--parts", "scenarios,ranges"])
    assert r.code == 0, r.err
    d = json.loads((out / "stress.json").read_text())
    assert [s["verdict"] for s in d["scenarios"]][2] == "fail"
    assert "would not start" in d["scenarios"][2]["reasons"][0]
    assert {x["kind"] for x in d["ranges"]} == {"batch", "concurrency"}
    assert (out / "scenarios" / "01-one" / "summary.json").exists()
    assert "Safe max batch by sequence length" in r.out
    assert "scenario 1/3 one" in r.err  # progress, also when piped


def test_bad_matrix_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(SMALL.replace("batch: 8", "batch: eight"))
    r = run_cli(["stress", "-m", str(p), "--out", str(tmp_path / "o")])
    assert r.code == 2
    assert f"{p}:5:" in r.one_line_error()


def test_bad_options_are_one_line(small: Path, tmp_path: Path) -> None:
    for extra in (["--gpu", "nope"], ["--parts", "scenarios,dance"], ["--slo-ttft-p99", "-1"]):
        r = run_cli(["stress", "-m", str(small), "--out", str(tmp_path / "o"), *extra])
        assert r.code == 2, (extra, r.err)
        r.one_line_error()


def test_live_matrix_refuses_options_it_cannot_honour(small: Path, tmp_path: Path) -> None:
    """Refused before any server is contacted (the address is never listened on)."""
    url = "http://127.0.0.1:9"
    for extra, named in (
        (["--parts", "scenarios"], "--parts"),
        (["--executor", "dask"], "--executor"),
        (["--scheduler", "tcp://h:8786"], "--scheduler"),
    ):
        r = run_cli(
            ["stress", "-m", str(small), "--endpoint", url, "--out", str(tmp_path / "o"), *extra]
        )
        assert r.code == 2, (extra, r.err)
        assert named in r.one_line_error() and "--endpoint" in r.one_line_error()


def test_ctrl_c_keeps_finished_scenarios(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kvlab.stress.evaluate as ev

    real = ev.evaluate
    calls = {"n": 0}

    def interrupted(*a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ev, "evaluate", interrupted)
    out = tmp_path / "o"
    r = run_cli(["stress", "-m", str(small), "--out", str(out)])
    assert r.code == 130
    d = json.loads((out / "stress.json").read_text())
    assert d["interrupted"] is True
    assert [s["scenario"]["name"] for s in d["scenarios"]] == ["one"]
    assert d["ranges"] == [] and d["presets"] == []
    assert "Interrupted" in (out / "stress.md").read_text()
    assert calls["n"] == 2  # nothing launched after the interrupt


ONE = """\
search: {seq_lens: [1024, 4096], gen_len: 32, max_value: 64, concurrency_rounds: 2}
scenarios:
  - {name: one, model: qwen2.5-0.5b, batch: 4, seq_len: 1024, gen_len: 32}
"""


def _ranges(tmp_path: Path, name: str, *extra: str) -> dict[tuple[str, int], int]:
    out = tmp_path / name
    m = tmp_path / "one.yaml"
    m.write_text(ONE)
    r = run_cli(["stress", "-m", str(m), "--out", str(out), "--parts", "ranges", *extra])
    assert r.code == 0, r.err
    d = json.loads((out / "stress.json").read_text())
    return {(x["kind"], x["seq_len"]): x["best"] for x in d["ranges"]}


def test_gpu_model_and_slo_options_change_the_safe_ranges(tmp_path: Path) -> None:
    base = _ranges(tmp_path, "base")
    assert all(v >= 1 for v in base.values())
    for name, extra, sign in (
        ("gpu", ("--gpu", "l4"), -1),  # less bandwidth and compute than an RTX 4090
        ("model", ("--model", "qwen2.5-7b"), -1),
        ("slo", ("--slo-ttft-p99", "0.5"), -1),
    ):
        other = _ranges(tmp_path, name, *extra)
        assert other.keys() == base.keys()
        assert all(sign * (other[k] - base[k]) >= 0 for k in base), (name, base, other)
        assert other != base, name
