"""``kvlab monitor`` end to end against local stubs: --once --json, --record, alerts
and --exit-on-alert, bad input as one line."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.stubs import MetricsStub, bump, fixture, set_value

Cli = Callable[..., Any]


def test_once_json_two_servers_side_by_side(cli: Cli) -> None:
    a = MetricsStub(fixture("vllm_metrics.txt"))
    b = MetricsStub(fixture("sglang_metrics.txt"))
    try:
        r = cli(["monitor", a.url, b.url, "--once", "--json", "--interval", "0.2"], 20)
        assert r.code == 0, r.err
        got = json.loads(r.out)
        assert [s["server"] for s in got["samples"]] == ["vllm", "sglang"]
        assert got["samples"][0]["interval_s"] > 0.15
        assert got["samples"][0]["cache_config"]["block_size"] == "128"
    finally:
        a.stop()
        b.stop()


def test_once_plain_text(cli: Cli) -> None:
    a = MetricsStub(fixture("vllm_metrics.txt"))
    try:
        r = cli(["monitor", a.url, "--once", "--interval", "0.1"], 20)
        assert r.code == 0, r.err
        assert "KV usage" in r.out and "up, vllm" in r.out and "128-token blocks" in r.out
    finally:
        a.stop()


def test_record_and_exit_on_alert(cli: Cli, tmp_path: Path) -> None:
    base = fixture("vllm_metrics.txt")
    stub = MetricsStub(base)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: Preempting\n    metric: preemptions_per_s\n"
        "    op: '>'\n    threshold: 0\n"
    )
    rec = tmp_path / "watch.jsonl"

    def preempt_later() -> None:
        time.sleep(0.5)
        stub.body = set_value(
            bump(base, "vllm:num_preemptions_total", 4), "vllm:num_requests_waiting", 2
        )

    threading.Thread(target=preempt_later, daemon=True).start()
    try:
        r = cli(
            [
                "monitor",
                stub.url,
                "--json",
                "--interval",
                "0.2",
                "--rules",
                str(rules),
                "--record",
                str(rec),
                "--exit-on-alert",
                "--duration",
                "10",
            ],
            20,
        )
    finally:
        stub.stop()
    assert r.code == 3, r.err
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    alerts = [x for x in lines if x["type"] == "alert"]
    assert [(a["event"], a["rule"]) for a in alerts] == [("firing", "Preempting")]
    assert alerts[0]["value"] > 0
    samples = [x for x in lines if x["type"] == "sample"]
    assert samples[-1]["preemptions"] == 4 and samples[-1]["num_requests_waiting"] == 2
    printed = [json.loads(x) for x in r.out.splitlines()]
    assert printed == lines  # --json prints what --record keeps


def test_down_server_keeps_the_loop_going(cli: Cli) -> None:
    stub = MetricsStub(fixture("vllm_metrics.txt"))
    url = stub.url
    stub.stop()
    r = cli(["monitor", url, "--interval", "0.1", "--duration", "0.35"], 20)
    assert r.code == 0 and not r.traceback
    assert r.out.count("cannot reach") >= 3  # one line per interval when piped


def test_bad_input_one_line_each(cli: Cli, tmp_path: Path) -> None:
    html = MetricsStub("<html><body>welcome</body></html>", content_type="text/html")
    node = MetricsStub('node_cpu_seconds_total{cpu="0"} 1\ngo_goroutines 7\n')
    try:
        for stub, says in (
            (html, "is not a Prometheus metrics endpoint"),
            (node, "speaks another dialect (metrics node_*, go_*)"),
        ):
            r = cli(["monitor", stub.url, "--once", "--interval", "0.05"], 20)
            assert r.code == 1 and not r.traceback
            assert says in r.one_line_error()
    finally:
        html.stop()
        node.stop()
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "rules:\n  - name: A\n    metric: kv_cache_usage_perc\n    op: '>'\n"
        "    threshold: 90\n    for_s: 60\n"
    )
    r = cli(["monitor", "localhost:1", "--rules", str(bad)], 20)
    assert r.code == 2
    assert r.one_line_error() == (
        f"error: {bad}:5: kv_cache_usage_perc is a fraction 0-1 (vLLM exposes 0.9 for 90 %), got 90"
    )
    r = cli(["monitor"], 20)
    assert r.code == 2 and "give at least one server URL" in r.one_line_error()


def test_export_rules(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "kv.yml"
    r = cli(["monitor", "--export-rules", str(out)], 20)
    assert r.code == 0
    assert "or vllm_gpu_cache_usage_perc) > 0.9" in out.read_text()
