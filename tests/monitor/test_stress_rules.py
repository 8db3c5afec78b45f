"""Alert defaults from the stress SLO, and ``kvlab monitor --rules-from-stress`` on a
real stress run of a tiny matrix: rules with their sources, loaded by the monitor,
exported for Prometheus and checked by promtool."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvlab.monitor.alerts import DEFAULT_RULES, load_rules
from kvlab.stress.slo import DEFAULT_MAX_KV_USAGE, DEFAULT_TTFT_P99_S, Slo
from monitor.test_promtool import promtool

Cli = Callable[..., Any]

MATRIX = """\
version: 1
search: {seq_lens: [1024], gen_len: 32, max_value: 16, concurrency_rounds: 2}
scenarios:
  - {name: small, model: qwen2.5-0.5b, batch: 4, seq_len: 1024, gen_len: 32}
  - {name: crowd, model: qwen2.5-0.5b, batch: 16, concurrency: 4, seq_len: 2048, gen_len: 32}
"""


def test_default_rules_share_the_stress_slo_numbers() -> None:
    by = {r.name: r for r in DEFAULT_RULES}
    assert by["KvCacheNearlyFull"].threshold == DEFAULT_MAX_KV_USAGE == Slo().max_kv_usage
    assert by["TtftP99AboveSlo"].threshold == DEFAULT_TTFT_P99_S == Slo().ttft_p99_s
    # one number: a stress verdict fails exactly where the monitor's alert holds
    bad, _ = Slo().check({"kv_cache_usage_perc_max": DEFAULT_MAX_KV_USAGE + 0.001})
    assert bad and by["KvCacheNearlyFull"].holds(DEFAULT_MAX_KV_USAGE + 0.001)
    bad, _ = Slo().check({"kv_cache_usage_perc_max": DEFAULT_MAX_KV_USAGE})
    assert not bad and not by["KvCacheNearlyFull"].holds(DEFAULT_MAX_KV_USAGE)


@pytest.fixture(scope="module")
def stress_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cli_run import run_cli

    d = tmp_path_factory.mktemp("stress")
    (d / "m.yaml").write_text(MATRIX)
    out = d / "run"
    r = run_cli(["stress", "-m", str(d / "m.yaml"), "--out", str(out), "--parts",
                 "scenarios,curves"], 300)  # fmt: skip
    assert r.code == 0, r.err
    return out


def test_rules_from_a_stress_run(cli: Cli, stress_run: Path, tmp_path: Path) -> None:
    d = json.loads((stress_run / "stress.json").read_text())
    (curve,) = d["curves"]
    bands = curve["bands"]
    rules_file = tmp_path / "alerts.yaml"
    r = cli(["monitor", "--rules-from-stress", str(stress_run), "--save-rules",
             str(rules_file)], 60)  # fmt: skip
    assert r.code == 0, r.err
    text = rules_file.read_text()
    rules = {x.name: x for x in load_rules(rules_file)}  # the monitor reads what was written
    # each threshold is the stress figure its comment names
    assert rules["KvCacheHigh"].threshold == round(bands["warning_from_kv_usage"], 4)
    assert rules["KvCacheNearlyFull"].threshold == round(
        min(bands["danger_from_kv_usage"], d["slo"]["max_kv_usage"]), 4
    )
    assert rules["KvCacheHigh"].threshold <= rules["KvCacheNearlyFull"].threshold
    assert rules["TtftP99AboveSlo"].threshold == d["slo"]["ttft_p99_s"]
    knee = curve["knee_rate_per_s"]
    before = [p for p in curve["points"] if p["rate_per_s"] < knee][-1]
    assert rules["LoadAboveKnee"].threshold == round(before["output_throughput_tok_per_s"], 1)
    met = ("pass", "warn")  # a warning meets every SLO, close to a limit
    passing = [(i, s) for i, s in enumerate(d["scenarios"]) if s["verdict"] in met]
    assert passing
    import csv

    from kvlab.stress.run import slug

    peaks = []
    for i, s in passing:
        ts = stress_run / "scenarios" / slug(i, s["scenario"]["name"]) / "timeseries.csv"
        peaks.append(max(float(x["num_requests_waiting"]) for x in csv.DictReader(ts.open())))
    assert rules["RequestsQueued"].threshold == max(peaks)
    assert "# threshold from: warning band of the rate sweep qwen2.5-0.5b on rtx-4090" in text
    assert "# threshold from: the stress run's SLO: TTFT p99 <= 2 s" in text
    assert "# threshold from: peak waiting requests of a scenario that met every SLO" in text
    assert "# threshold from: not a stress figure" in text
    # the monitor runs with them (and writes the same rules again)
    r = cli(["monitor", "--rules", str(rules_file), "--save-rules", "-"], 60)
    assert r.code == 0 and "name: LoadAboveKnee" in r.out
    # and they export as Prometheus rules that promtool accepts
    prom = tmp_path / "kv_alerts.yml"
    r = cli(["monitor", "--rules-from-stress", str(stress_run), "--export-rules", str(prom)], 60)
    assert r.code == 0, r.err
    tool = promtool()  # skips here (fails in CI) when promtool is not installed
    check = subprocess.run(
        [tool, "check", "rules", str(prom)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout


def test_rules_from_stress_without_curves_fall_back_to_the_slo(
    cli: Cli, stress_run: Path, tmp_path: Path
) -> None:
    d = json.loads((stress_run / "stress.json").read_text())
    d["curves"] = []
    d["slo"]["max_kv_usage"] = 0.9
    other = tmp_path / "s"
    other.mkdir()
    (other / "stress.json").write_text(json.dumps(d))  # no scenario run directories
    r = cli(["monitor", "--rules-from-stress", str(other), "--save-rules", "-"], 60)
    assert r.code == 0, r.err
    assert "threshold: 0.72\n" in r.out  # warn_fraction 0.8 x ceiling 0.9
    assert "verdict's warning edge, warn_fraction 0.8 x max_kv_usage 0.9" in r.out
    assert "KV usage ceiling max_kv_usage 0.9 (a scenario above it fails)" in r.out
    assert "name: LoadAboveKnee" not in r.out
    assert "no saved run directory of a scenario that met every SLO" in r.out


def test_rules_from_stress_bad_input_is_one_line(
    cli: Cli, stress_run: Path, tmp_path: Path
) -> None:
    r = cli(["monitor", "--rules-from-stress", str(tmp_path), "--save-rules", "-"], 60)
    assert r.code == 2 and "not a kvlab stress run (no stress.json)" in r.one_line_error()
    (tmp_path / "stress.json").write_text("{\n  'x'\n")
    r = cli(["monitor", "--rules-from-stress", str(tmp_path), "--save-rules", "-"], 60)
    assert r.code == 2 and f"{tmp_path / 'stress.json'}:2: not JSON" in r.one_line_error()
    (tmp_path / "stress.json").write_text('{"kind": "stress", "slo": {"max_kv_usage": 90}}')
    r = cli(["monitor", "--rules-from-stress", str(tmp_path), "--save-rules", "-"], 60)
    assert r.code == 2 and "field 'slo'" in r.one_line_error()
    r = cli(["monitor", "--rules-from-stress", str(stress_run), "--rules", "x.yaml"], 60)
    assert r.code == 2 and "not both" in r.one_line_error()
