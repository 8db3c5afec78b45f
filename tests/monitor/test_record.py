"""Monitor record files read back: a small hand-built recording's figures, a recording
made by ``kvlab monitor --record`` against a stub, ``kvlab report`` and ``kvlab compare``
on them, and bad files as one line each."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvlab.errors import RunDirError
from kvlab.monitor.record import read_record, summarize
from kvlab.report.recordings import compare_recordings, to_markdown
from monitor.stubs import MetricsStub, bump, fixture, set_value

Cli = Callable[..., Any]
T0 = 1_700_000_000.0
A = "http://a:8000/metrics"
B = "http://b:8080/metrics"


def sample(url: str, dt: float, **kw: Any) -> dict[str, Any]:
    return {"type": "sample", "url": url, "t_unix": T0 + dt, "up": True, **kw}


def hand_record() -> list[dict[str, Any]]:
    """Server A over 9 s of monitoring and a 100 s gap (the monitor was stopped):
    usage above 0.95 for two steps, 3 preemptions, two unreachable steps, a restart."""
    rows = [
        sample(A, 0, dialect="vllm", kv_cache_usage_perc=0.5),
        sample(
            A,
            1,
            interval_s=1,
            kv_cache_usage_perc=0.96,
            prefix_queries_tokens=1000,
            prefix_hit_rate=0.5,
            preemptions=0,
            num_requests_waiting=2,
            num_requests_running=4,
            ttft_p99_s=0.8,
        ),
        sample(
            A,
            2,
            interval_s=1,
            kv_cache_usage_perc=0.97,
            prefix_queries_tokens=1000,
            prefix_hit_rate=0.9,
            preemptions=2,
            preemptions_per_s=2.0,
        ),
        sample(
            A,
            3,
            interval_s=1,
            kv_cache_usage_perc=0.6,
            prefix_queries_tokens=0,
            prefix_hit_rate=None,
            preemptions=0,
        ),
        {**sample(A, 4), "up": False, "problem": "unreachable", "error": "refused"},
        {**sample(A, 5), "up": False, "problem": "unreachable", "error": "refused"},
        sample(
            A,
            6,
            interval_s=3,
            counter_reset=True,
            kv_cache_usage_perc=0.4,
            prefix_queries_tokens=2000,
            prefix_hit_rate=0.25,
            preemptions=1,
        ),
        sample(A, 7, interval_s=1, kv_cache_usage_perc=0.4),
        sample(A, 107, kv_cache_usage_perc=0.5),
        sample(A, 108, interval_s=1, kv_cache_usage_perc=0.5),
        # a llama.cpp-like server that has no usage gauge and no preemption counter
        sample(B, 0, dialect="llamacpp", num_requests_running=1),
        sample(B, 1, interval_s=1, dialect="llamacpp", num_requests_running=2),
    ]
    alert = {
        "type": "alert",
        "rule": "KvCacheNearlyFull",
        "url": A,
        "threshold": 0.95,
        "metric": "kv_cache_usage_perc",
        "severity": "warning",
    }
    rows.insert(3, {**alert, "event": "firing", "t_unix": T0 + 2, "value": 0.97})
    rows.insert(5, {**alert, "event": "resolved", "t_unix": T0 + 3, "value": 0.6})
    return rows


def write(path: Path, rows: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def test_hand_built_record_figures(tmp_path: Path) -> None:
    p = write(tmp_path / "watch.jsonl", hand_record(), tail='{"type": "sample", "url": "ht')
    rec = read_record(p)
    assert rec.truncated_line == 15 and "watch.jsonl:15: last line cut short" in (rec.note or "")
    assert list(rec.servers) == [A, B]
    a = summarize(rec.servers[A])
    assert a["samples"] == 10 and a["samples_up"] == 8
    assert a["duration_s"] == 8.0 and a["gaps_s"] == 100.0  # the stopped monitor is a gap
    assert a["usage_max"] == 0.97
    assert a["usage_mean"] == pytest.approx(4.83 / 8)
    assert a["usage_above"] == 0.95 and a["time_above_s"] == 2.0
    assert a["preemptions"] == 3 and a["preemptions_per_s_max"] == 2.0
    assert a["prefix_hit_rate"] == pytest.approx(1900 / 4000)  # tokens, not a mean of rates
    assert a["unreachable_s"] == 2.0 and a["restarts"] == 1
    assert (a["alerts_fired"], a["alerts_resolved"]) == (1, 1)
    assert (a["waiting_max"], a["running_max"], a["ttft_p99_s_max"]) == (2, 4, 0.8)
    b = summarize(rec.servers[B])
    # unknown is None, never 0
    assert b["usage_max"] is None and b["time_above_s"] is None and b["preemptions"] is None
    assert b["prefix_hit_rate"] is None and b["server"] == "llamacpp"
    md = to_markdown(compare_recordings([rec]))
    assert "| figure | watch.jsonl a:8000 | watch.jsonl b:8080 |" in md
    assert "| preemptions total | 3 | - |" in md
    assert "| time above usage threshold s | 2.0 | - |" in md
    assert "| prefix hit rate, whole recording (0-1) | 0.475 | - |" in md
    assert "last line cut short" in md


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "watch.jsonl:1: empty record file"),
        (b"\n\n", "watch.jsonl:1: empty record file"),
        (b"\x00\x01\x02kvlab\n", "watch.jsonl: binary file"),
        (b'{"type": "sample"}\n\xff\xfe\n', "watch.jsonl:2: not UTF-8"),
        (b"[1, 2]\n", "watch.jsonl:1: expected a JSON object, got list"),
        (
            b'{"type": "sample", "url": "u", "t_unix": 1, "up": true}\n{oops\n{}\n',
            "watch.jsonl:2: not JSON",
        ),
        (b'{"url": "u", "t_unix": 1, "up": true}\n', "watch.jsonl:1: field 'type'"),
        (
            b'{"type": "sample", "url": "u", "t_unix": 1, "up": "yes"}\n',
            "watch.jsonl:1: field 'up': must be true or false",
        ),
        (
            b'{"type": "sample", "url": "u", "t_unix": 1, "up": true,'
            b' "kv_cache_usage_perc": "high"}\n',
            "watch.jsonl:1: field 'kv_cache_usage_perc'",
        ),
        (
            b'{"type": "sample", "url": "u", "t_unix": 1, "up": true, "kv_cache_usage_perc": 93}\n',
            "field 'kv_cache_usage_perc': is a fraction 0-1, got 93",
        ),
        (b'{"type": "sample", "url": "u", "up": true}\n', "watch.jsonl:1: field 't_unix'"),
        (
            b'{"type": "alert", "event": "firing", "rule": "R", "url": "u", "t_unix": 1,'
            b' "threshold": 0, "metric": "m", "severity": "s"}\n',
            "watch.jsonl:1: no sample lines",
        ),
        (
            b'{"type": "alert", "event": "fired", "rule": "R", "url": "u", "t_unix": 1}\n',
            "watch.jsonl:1: field 'event'",
        ),
        (
            b'{"type": "sample", "url": "u", "t_unix": 1' + b"0" * 5000 + b', "up": true}\n',
            "watch.jsonl:1: not JSON a monitor writes (ValueError)",
        ),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "watch.jsonl:1: not JSON a monitor writes"),
        (
            b'{"type": "sample", "url": "u", "t_unix": 1' + b"0" * 400 + b', "up": true}\n',
            "watch.jsonl:1: field 't_unix': must be a finite number, got a huge integer",
        ),
    ],
)
def test_bad_record_is_one_line_with_file_line_and_field(
    cli: Cli, tmp_path: Path, content: bytes, says: str
) -> None:
    p = tmp_path / "watch.jsonl"
    p.write_bytes(content)
    with pytest.raises(RunDirError) as e:
        read_record(p)
    assert says in str(e.value) and "\n" not in str(e.value)
    for argv in (["compare", str(p)], ["report", str(p), "--out", str(tmp_path / "r.html")]):
        r = cli(argv, 60)
        assert r.code == 2 and not r.traceback, r.err
        assert says in r.one_line_error()


def test_compare_records_json_and_mixing_is_refused(cli: Cli, tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", hand_record())
    q = write(tmp_path / "b.jsonl", hand_record()[:3])
    r = cli(["compare", str(p), str(q), "--json"], 60)
    assert r.code == 0, r.err
    got = json.loads(r.out)
    assert [s["label"] for s in got["servers"]] == ["a.jsonl a:8000", "a.jsonl b:8080", "b.jsonl"]
    pre = next(f for f in got["figures"] if f["key"] == "preemptions")
    assert pre["values"] == [3.0, None, 2.0]  # b.jsonl: the first 3 s of A; B knows none
    r = cli(["compare", str(p), str(tmp_path)], 60)
    assert r.code == 2 and "not both" in r.one_line_error()
    r = cli(["compare", str(p), "--fail-if", "x>1"], 60)
    assert r.code == 2 and "--fail-if is for run directories" in r.one_line_error()


def test_monitor_record_then_report_and_compare(cli: Cli, tmp_path: Path) -> None:
    """A recording made by really running kvlab monitor against a stub vLLM /metrics:
    preemptions and prefix traffic arrive while it watches; report and compare read it."""
    base = fixture("vllm_metrics.txt")
    stub = MetricsStub(base)
    rec = tmp_path / "watch.jsonl"
    stop = threading.Event()

    def drive() -> None:
        body = base
        for i in range(8):
            if stop.wait(0.25):
                return
            body = bump(body, "vllm:prefix_cache_queries_total", 1000)
            body = bump(body, "vllm:prefix_cache_hits_total", 250)
            body = set_value(body, "vllm:kv_cache_usage_perc", 0.97 if i >= 4 else 0.5)
            if i == 3:
                body = bump(body, "vllm:num_preemptions_total", 5)
            stub.body = body

    th = threading.Thread(target=drive, daemon=True)
    th.start()
    try:
        argv = ["monitor", stub.url, "--json", "--interval", "0.2", "--duration", "2.6"]
        r = cli([*argv, "--record", str(rec)], 30)
    finally:
        stop.set()
        th.join()
        stub.stop()
    assert r.code == 0, r.err
    got = read_record(rec)
    url = f"http://{stub.url}/metrics"
    fig = summarize(got.servers[url])
    assert fig["samples"] >= 10 and fig["unreachable_s"] == 0.0 and fig["restarts"] == 0
    assert fig["preemptions"] == 5 and fig["alerts_fired"] >= 1
    assert fig["prefix_hit_rate"] == pytest.approx(0.25)
    assert fig["usage_max"] == 0.97 and fig["time_above_s"] > 0
    out = tmp_path / "rep" / "r.html"
    r = cli(["report", str(rec), "--out", str(out)], 120)
    assert r.code == 0, r.err
    page = out.read_text()
    assert "Monitor recording: watch.jsonl" in page and "<svg" in page
    assert "Preempting" in page and "prefix hit rate, whole recording (0-1)" in page
    md = out.with_suffix(".md").read_text()
    assert "| preemptions total | 5 |" in md
    data = json.loads(out.with_suffix(".json").read_text())
    (src,) = data["sources"]
    assert src["kind"] == "monitor" and src["monitor"]["servers"][0]["url"] == url
    r = cli(["compare", str(rec)], 60)
    assert r.code == 0 and "| preemptions total | 5 |" in r.out
    # a monitor killed mid-write: the cut line is tolerated and said
    with rec.open("a") as f:
        f.write('{"type": "sample", "url": "http://x/metr')
    r = cli(["compare", str(rec)], 60)
    assert r.code == 0 and "last line cut short" in r.err


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
_fields = st.sampled_from(
    ["type", "url", "t_unix", "up", "counter_reset", "kv_cache_usage_perc", "preemptions",
     "prefix_hit_rate", "prefix_queries_tokens", "event", "rule", "threshold", "totals"]
)  # fmt: skip


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.one_of(
            st.dictionaries(_fields, _json_values, max_size=6).map(json.dumps),
            st.builds(
                lambda kv: json.dumps({**sample(A, 0), **kv}),
                st.dictionaries(_fields, _json_values, max_size=2),
            ),
            st.text(max_size=20),
        ),
        max_size=6,
    ),
    newline_at_end=st.booleans(),
)
def test_any_file_reads_or_is_one_located_error(
    tmp_path: Path, lines: list[str], newline_at_end: bool
) -> None:
    """Whatever the lines, reading gives a Recording or one RunDirError line naming the
    file (and a line), never another exception."""
    p = tmp_path / "fuzz.jsonl"
    body = "\n".join(x.replace("\n", " ") for x in lines)
    p.write_text(body + ("\n" if newline_at_end else ""), encoding="utf-8")
    try:
        rec = read_record(p)
    except RunDirError as e:
        msg = str(e)
        assert msg.startswith(str(p)) and "\n" not in msg
        return
    for srv in rec.servers.values():
        if srv.samples:
            fig = summarize(srv)
            assert fig["samples"] == len(srv.samples)
            assert fig["duration_s"] is None or fig["duration_s"] >= 0
