"""RunResult: summaries, per-class breakdowns, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvlab.results import (
    STATUS_OK,
    STATUS_REJECTED,
    RecordWriter,
    RequestRecord,
    RunResult,
    dist,
    group_summaries,
    summarize,
    summary_with_groups,
)


def rec(rid: str, **kw: object) -> RequestRecord:
    base: dict[str, object] = dict(arrival_s=0.0, prompt_tokens=100, output_tokens=11)
    base.update(kw)
    return RequestRecord(rid, **base)  # type: ignore[arg-type]


def test_latency_definitions() -> None:
    r = rec("a", arrival_s=1.0, admitted_s=1.5, first_token_s=2.0, finish_s=3.0)
    assert r.ttft_s == 1.0
    assert r.e2e_s == 2.0
    assert r.tpot_s == pytest.approx(0.1)  # (3 - 2) / (11 - 1)
    assert rec("b", output_tokens=1, first_token_s=1.0, finish_s=1.0).tpot_s is None


def test_summary_splits_gpu_and_lower_tier_hits_like_vllm() -> None:
    records = [
        rec("a", admitted_s=0.0, first_token_s=0.1, finish_s=1.0, cached_tokens=64),
        rec(
            "b",
            admitted_s=0.0,
            first_token_s=0.1,
            finish_s=2.0,
            cached_tokens=80,
            offload_hit_tokens=48,
            cls="x",
        ),
        rec("c", status=STATUS_REJECTED),
    ]
    s = summarize(records)
    assert s["num_requests"] == 3
    assert s["num_completed"] == 2
    assert s["num_rejected"] == 1
    assert s["prefix_cache_queries"] == 200  # admitted requests' prompt tokens
    assert s["prefix_cache_hits"] == 64 + 32  # GPU tier only
    assert s["external_prefix_cache_hits"] == 48
    assert s["prefix_cache_hit_rate"] == pytest.approx(96 / 200)
    assert s["simulated_duration_s"] == 2.0
    assert s["request_throughput_per_s"] == 1.0
    assert s["output_throughput_tok_per_s"] == 11.0
    by = group_summaries(records)
    assert set(by) == {"None", "x"}
    assert by["x"]["prefix_cache_hits"] == 32


def test_counters_from_a_backend_take_precedence() -> None:
    s = summarize(
        [rec("a", admitted_s=0.0, cached_tokens=50)],
        counters={"prefix_cache_queries": 1000, "prefix_cache_hits": 250},
    )
    assert s["prefix_cache_hit_rate"] == 0.25


@pytest.mark.parametrize("classes", [(None, None, None), ("x", "x", "x"), (None, "x", "y")])
def test_summary_with_groups_is_summarize_plus_group_summaries(classes: tuple) -> None:
    records = [
        rec(
            str(i),
            cls=c,
            arrival_s=float(i),
            admitted_s=i + 0.1,
            first_token_s=i + 0.5,
            finish_s=i + 1.5 + i * 0.25,
            cached_tokens=16 * i,
            status="ok",
        )
        for i, c in enumerate(classes)
    ]
    counters = {"prefix_cache_queries": 900, "prefix_cache_hits": 300, "num_steps": 7}
    expected = summarize(records, duration_s=4.0, counters=counters)
    expected["by_class"] = group_summaries(records, duration_s=4.0)
    got = summary_with_groups(records, duration_s=4.0, counters=counters)
    assert got == expected
    assert list(got) == list(expected)


def test_dist_of_nothing_is_none_and_percentiles_are_exact() -> None:
    assert dist([])["p50"] is None
    d = dist([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (d["mean"], d["p50"], d["max"]) == (3.0, 3.0, 5.0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    records = [
        rec(
            "a",
            status=STATUS_OK,
            admitted_s=0.0,
            first_token_s=0.5,
            finish_s=1.0,
            chunk_times_s=[0.5, 0.75, 1.0],
            hit_tokens_by_retention={"system": 16},
        )
    ]
    run = RunResult(
        records=records,
        summary=summarize(records),
        config={"backend": "test"},
        timeseries={"t_s": [0.0, 0.5], "kv_cache_usage_perc": [0.0, 0.25]},
        histograms={"block_lifetime_s": {"edges": [0, 1], "counts": [3]}},
    )
    d = run.save(tmp_path / "run")
    back = RunResult.load(d)
    assert back.records == records
    assert back.summary == run.summary
    assert back.timeseries == run.timeseries
    assert back.config == {"backend": "test"}
    assert back.histograms == run.histograms
    assert not list(d.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_record_writer_keeps_finished_records(tmp_path: Path) -> None:
    p = tmp_path / "requests.jsonl"
    with RecordWriter(p) as w:
        w.write(rec("a"))
        assert p.read_text().count("\n") == 1  # flushed per record
    assert RequestRecord.from_dict(__import__("json").loads(p.read_text())) == rec("a")


def test_requests_jsonl_in_chunks_has_the_bytes_of_one_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks that differ in which columns are constant or null give the same bytes."""
    from kvlab.results import records_to_jsonl, run_dir

    records = [
        rec(f"r{i}", status=STATUS_OK, first_token_s=0.5 * i if i % 3 else None) for i in range(10)
    ]
    run = RunResult(records=records, summary=summarize(records))
    monkeypatch.setattr(run_dir, "RECORDS_PER_CHUNK", 3)
    d = run.save(tmp_path / "run")
    assert (d / "requests.jsonl").read_text() == records_to_jsonl(records)


def test_run_files_follow_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        d = RunResult(records=[], summary={}).save(tmp_path / "run")
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in d.iterdir()} == {"0o644"}
