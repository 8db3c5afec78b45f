"""Bench experiments on a scripted target: points, files and figures (no model needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvlab.bench.points import class_latency, run_point, wall_time_s
from kvlab.bench.workloads import mixed, shared_prefix, uniform
from kvlab.results import RequestRecord, RunResult, summarize
from kvlab.workload.records import Workload


@dataclass
class ScriptedTarget:
    """Every request of a run takes 0.1 s of prefill then 0.01 s per output token,
    ``concurrency`` at a time, in order; KV bytes are tokens in flight x 100."""

    backend: str = "scripted"
    model_label: str = "toy"
    max_model_len: int | None = 4096
    calls: list[int] = field(default_factory=list)

    def kv_bytes_per_token(self) -> float | None:
        return 100.0

    def run(self, workload: Workload, concurrency: int) -> RunResult:
        self.calls.append(concurrency)
        free_at = [0.0] * concurrency
        records = []
        for r in workload.requests:
            lane = min(range(concurrency), key=free_at.__getitem__)
            start = free_at[lane]
            first = start + 0.1
            finish = first + 0.01 * (r.output_tokens - 1)
            free_at[lane] = finish
            records.append(
                RequestRecord(
                    request_id=r.request_id,
                    arrival_s=0.0,
                    prompt_tokens=r.prompt_tokens,
                    output_tokens=r.output_tokens,
                    cls=r.cls,
                    admitted_s=start,
                    first_token_s=first,
                    finish_s=finish,
                )
            )
        peak = min(concurrency, len(records)) * max(
            r.prompt_tokens + r.output_tokens - 1 for r in records
        )
        summary = summarize(records)
        summary["wall_time_s"] = max(free_at)
        summary["kv_cache_bytes_peak"] = peak * 100
        summary["kv_token_bytes_peak"] = peak * 100
        ts = {"t_s": [0.0, max(free_at)], "kv_cache_bytes": [peak * 100.0, 0.0]}
        return RunResult(records=records, summary=summary, timeseries=ts)


def test_throughput_is_total_tokens_over_wall_time() -> None:
    target = ScriptedTarget()
    res = target.run(uniform("u", 4, 10, 11), 2)
    p = run_point(res, target, concurrency=2)
    # Two lanes, two requests each: 2 x (0.1 + 0.1) = 0.4 s.
    assert wall_time_s(res) == pytest.approx(0.4)
    assert p["total_tokens"] == 4 * 21
    assert p["total_throughput_tok_per_s"] == pytest.approx(84 / 0.4)
    assert p["output_throughput_tok_per_s"] == pytest.approx(44 / 0.4)
    assert p["ttft_s"]["max"] == pytest.approx(0.3)
    assert p["kv_bytes_measured_peak"] == 2 * 20 * 100


def test_wall_time_falls_back_to_records() -> None:
    recs = [
        RequestRecord("a", 0.5, 3, 2, first_token_s=1.0, finish_s=2.0),
        RequestRecord("b", 1.0, 3, 2, first_token_s=1.5, finish_s=3.5),
    ]
    assert wall_time_s(RunResult(records=recs, summary={})) == 3.0


def test_workload_builders() -> None:
    wl = uniform("x", 3, 5, 2, sequential=True)
    assert [r.session_id for r in wl.requests] == ["x", "x", "x"]
    assert [r.think_time_s for r in wl.requests] == [None, 0.0, 0.0]
    assert wl.requests[0].arrival_s == 0.0 and wl.requests[1].arrival_s is None
    m = mixed("m", 2, (4, 1), 1, (50, 5))
    assert [r.cls for r in m.requests] == ["long", "short", "short"]
    s = shared_prefix("p", 3, 8, 2, 1, shared=True)
    assert len({r.segments[0].content_id for r in s.requests}) == 1
    u = shared_prefix("p", 3, 8, 2, 1, shared=False)
    assert len({r.segments[0].content_id for r in u.requests}) == 3


def test_class_latency_counts_only_that_class() -> None:
    target = ScriptedTarget()
    res = target.run(mixed("m", 2, (4, 1), 1, (50, 5)), 3)
    assert class_latency(res, "short")["num"] == 2
    assert class_latency(res, "long")["num"] == 1


@pytest.mark.slow
def test_experiments_write_runs_json_and_figures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import json

    from kvlab.bench import concurrency, mixed, prefix, seqlen
    from kvlab.bench.concurrency import ConcurrencyParams

    target = ScriptedTarget()
    concurrency.run(target, tmp_path / "c", ConcurrencyParams(levels=(1, 2), num_requests=4))
    assert target.calls == [1, 2]
    doc = json.loads((tmp_path / "c" / "experiment.json").read_text())
    assert doc["runs"] == ["runs/c1", "runs/c2"]
    assert [p["concurrency"] for p in doc["points"]] == [1, 2]
    for f in doc["figures"]:
        assert (tmp_path / "c" / f).stat().st_size > 0
    assert {Path(f).suffix for f in doc["figures"]} == {".png", ".svg"}
    for mod in (seqlen, mixed, prefix):
        e = mod.run(target, tmp_path / mod.__name__.rsplit(".", 1)[1])
        assert e.figures and all(p.exists() for p in e.figures)
        assert all((d / "summary.json").exists() for d in e.run_dirs)


def test_seqlen_refuses_lengths_beyond_the_context() -> None:
    from kvlab.bench import seqlen
    from kvlab.errors import ConfigError

    target = ScriptedTarget(max_model_len=100)
    with pytest.raises(ConfigError, match="exceed"):
        seqlen.run(target, Path("/nonexistent"), seqlen.SeqlenParams(prompt_lengths=(90,)))


def test_percentiles_and_goodput_reach_every_point_and_run(tmp_path: Path) -> None:
    """--percentiles/--goodput in bench: per point in experiment.json and points.csv,
    and vllm_bench.json in every run directory (two requests one at a time: TTFT 0.1 s
    and 0.3 s, the run lasts 0.4 s)."""
    import csv
    import json

    from kvlab.bench import concurrency
    from kvlab.bench.concurrency import ConcurrencyParams
    from kvlab.cli.options import latency_options

    latency = latency_options("50,90", ["ttft:200"])
    params = ConcurrencyParams(levels=(1,), num_requests=2, prompt_tokens=5, output_tokens=11)
    concurrency.run(ScriptedTarget(), tmp_path, params, None, latency)
    doc = json.loads((tmp_path / "experiment.json").read_text())
    assert doc["percentiles"] == [50.0, 90.0]
    assert doc["goodput_slo_ms"] == {"ttft": 200.0}
    (point,) = doc["points"]
    ttft = point["latency_percentiles_s"]["ttft_s"]
    assert ttft == {"p50": pytest.approx(0.2), "p90": pytest.approx(0.28)}
    assert point["goodput"]["good_requests"] == 1
    assert point["goodput"]["request_goodput_per_s"] == pytest.approx(1 / 0.4)
    (row,) = csv.DictReader((tmp_path / "points.csv").open())
    assert float(row["latency_percentiles_s.ttft_s.p90"]) == pytest.approx(0.28)
    assert row["goodput.good_requests"] == "1"
    bench = json.loads((tmp_path / "runs" / "c1" / "vllm_bench.json").read_text())
    assert bench["p90_ttft_ms"] == pytest.approx(280.0)
    assert bench["median_ttft_ms"] == pytest.approx(200.0)
    assert bench["request_goodput"] == pytest.approx(2.5)
    assert "p99_ttft_ms" not in bench


def test_default_percentiles_without_goodput(tmp_path: Path) -> None:
    import json

    from kvlab.bench import concurrency
    from kvlab.bench.concurrency import ConcurrencyParams

    params = ConcurrencyParams(levels=(1,), num_requests=2, prompt_tokens=5, output_tokens=11)
    concurrency.run(ScriptedTarget(), tmp_path, params)
    doc = json.loads((tmp_path / "experiment.json").read_text())
    (point,) = doc["points"]
    assert doc["percentiles"] == [99.0] and doc["goodput_slo_ms"] is None
    assert set(point["latency_percentiles_s"]["ttft_s"]) == {"p99"}
    assert "goodput" not in point
    bench = json.loads((tmp_path / "runs" / "c1" / "vllm_bench.json").read_text())
    assert "request_goodput" not in bench and bench["completed"] == 2
