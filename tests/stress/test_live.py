"""``kvlab stress --endpoint`` without a real server: the scaling rule, the server's
limits, and the result assembly against the stub server (its /metrics a fixed text)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_run import run_cli
from kvlab.backends.stub import StubConfig
from kvlab.errors import ConfigError
from kvlab.stress.live import (
    MIN_PROMPT_TOKENS,
    LiveTarget,
    ServerLimits,
    check_scalable,
    limits_from,
    probe_limits,
    run_live,
    scale_scenario,
)
from kvlab.stress.matrix import Scenario, parse_matrix
from monitor.stubs import MetricsStub, bump, fixture, set_value
from stub_thread import serve_stub


def _limits(max_len: int = 500, block: int = 10, blocks: int = 51) -> ServerLimits:
    return ServerLimits("http://x", "tiny", max_len, block, blocks)


def _scale(s: Scenario, lim: ServerLimits | None = None) -> Any:
    return scale_scenario(
        s, lim or _limits(), context_tokens=1000, kv_blocks=100, block_size=10, max_num_seqs=8
    )


S = Scenario("s", "Qwen/Qwen2.5-0.5B", batch=4, concurrency=2, seq_len=400, gen_len=100)


def test_scaling_keeps_the_context_and_kv_fractions() -> None:
    # context 1000 -> 500: lengths halve. KV: 8 x 50 blocks of 100 = 4.0; there one
    # sequence of 250 tokens is 25 blocks of 10, 50 usable: 8 of them, in 4x2.
    sc = _scale(S)
    t = sc.scenario
    assert (t.seq_len, t.gen_len, t.batch, t.concurrency) == (200, 50, 4, 2)
    assert sc.context_fraction == 0.4 and sc.kv_fraction == 4.0 and sc.kv_fraction_scaled == 4.0
    assert t.max_model_len == 500 and t.max_num_seqs == 8 and t.rounds == S.rounds
    assert "4x2 x (400+100)" in sc.line and "-> 4x2 x (200+50)" in sc.line
    assert "KV demand 400.0% of the cache (now 400.0%)" in sc.line


def test_scaling_to_a_smaller_cache_sends_fewer_requests() -> None:
    sc = _scale(S, _limits(blocks=26))  # 25 usable: 4.0 x 25 / 25 = 4 sequences
    t = sc.scenario
    assert t.batch * t.concurrency == 4 and (t.batch, t.concurrency) == (4, 1)


def test_floors_caps_and_prompts_beyond_the_context() -> None:
    short = _scale(S.with_changes(seq_len=10, gen_len=10))
    assert short.scenario.seq_len == MIN_PROMPT_TOKENS and "floor" in short.line
    long_gen = _scale(S.with_changes(seq_len=10, gen_len=990))
    assert long_gen.scenario.seq_len + long_gen.scenario.gen_len == 500
    assert "generation capped" in long_gen.line
    beyond = _scale(S.with_changes(seq_len=1200, gen_len=10))
    assert beyond.scenario.seq_len >= 500 and "rejected here" in beyond.line


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(1, 5000),
    gen=st.integers(1, 5000),
    batch=st.integers(1, 300),
    conc=st.integers(1, 50),
    max_len=st.integers(MIN_PROMPT_TOKENS + 1, 4096),
    block=st.sampled_from([1, 16, 128]),
    blocks=st.integers(2, 5000),
)
def test_scaled_scenarios_are_valid(
    seq: int, gen: int, batch: int, conc: int, max_len: int, block: int, blocks: int
) -> None:
    s = S.with_changes(seq_len=seq, gen_len=gen, batch=batch, concurrency=conc)
    sc = _scale(s, _limits(max_len, block, blocks))
    t = sc.scenario
    assert t.seq_len >= MIN_PROMPT_TOKENS and t.gen_len >= 1
    assert t.batch >= 1 and t.concurrency >= 1
    if seq < 1000:
        assert t.seq_len + t.gen_len <= max_len  # fits, as it did on the original
    else:
        assert t.seq_len >= max_len  # rejected, as it was on the original


def test_a_context_shorter_than_the_shortest_prompt_cannot_be_scaled() -> None:
    with pytest.raises(ConfigError, match="cannot be scaled"):
        check_scalable(_limits(max_len=MIN_PROMPT_TOKENS))


METRICS = fixture("vllm_metrics.txt")
MODELS = b'{"data": [{"id": "tiny", "max_model_len": 256}]}'


def test_limits_from_the_servers_answers() -> None:
    lim = limits_from("http://h", 200, MODELS, (200, METRICS), None)
    assert (lim.model, lim.max_model_len, lim.block_size, lim.num_gpu_blocks) == (
        "tiny",
        256,
        128,
        8192,
    )
    assert lim.usable_blocks == 8191 and lim.enable_prefix_caching


@pytest.mark.parametrize(
    ("status", "body", "metrics", "model", "match"),
    [
        (404, b"", (200, METRICS), None, "not an OpenAI-compatible server"),
        (200, b"# HELP x\n", (200, METRICS), None, "not an OpenAI-compatible server"),
        (200, MODELS, None, None, "/metrics did not answer"),
        (200, MODELS, (404, ""), None, "/metrics answered HTTP 404"),
        (200, MODELS, (200, "up 1\n"), None, "no cache_config_info"),
        (200, b'{"data": [{"id": "tiny"}]}', (200, METRICS), None, "no max_model_len"),
        (200, b'{"data": [{"id": "a"}, {"id": "b"}]}', (200, METRICS), None, "--served-model"),
        (200, MODELS, (200, METRICS), "other", "does not serve 'other'"),
    ],
)
def test_limits_errors(
    status: int, body: bytes, metrics: Any, model: str | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        limits_from("http://h", status, body, metrics, model)


# ------------------------------------------------------------------ against the stub

MATRIX = """\
version: 1
slo: {ttft_p99_s: 5.0, tpot_p99_s: 1.0}
scenarios:
  - {name: fits, model: Qwen/Qwen2.5-0.5B, batch: 4, seq_len: 2048, gen_len: 256}
  - {name: over, model: Qwen/Qwen2.5-0.5B, batch: 64, concurrency: 4, seq_len: 8192,
     gen_len: 512}
  - {name: oom, model: Qwen/Qwen2.5-72B, batch: 2, seq_len: 1024, gen_len: 16}
"""


def _stub_metrics(usage: float = 0.5) -> str:
    text = METRICS.replace('block_size="128"', 'block_size="16"').replace(
        'num_gpu_blocks="8192"', 'num_gpu_blocks="65"'
    )
    return set_value(text, "vllm:kv_cache_usage_perc", usage)


@pytest.fixture
def stub() -> Iterator[Any]:
    yield from serve_stub(StubConfig(metrics_text=_stub_metrics(), max_model_len=512, model="t"))


def test_run_live_assembles_real_and_simulated_figures(stub: Any, tmp_path: Path) -> None:
    lim = probe_limits(stub.url)
    assert (lim.max_model_len, lim.block_size, lim.num_gpu_blocks) == (512, 16, 65)
    msgs: list[str] = []
    res = run_live(parse_matrix(MATRIX), LiveTarget(lim), out=tmp_path, progress=msgs.append)
    d = json.loads((tmp_path / "stress.json").read_text())
    assert d["kind"] == "stress" and d["mode"] == "live"
    fits, over, oom = d["live"]["scenarios"]
    for s in (fits, over):
        assert s["status"] == "ran"
        assert s["real"]["kv_peak_usage"] == 0.5  # the server's own gauge, sampled
        assert s["real"]["num_metrics_samples"] >= 1
        assert s["real"]["num_preemptions"] == 0  # the counter did not move
        assert s["real"]["num_completed"] == s["scaled"]["batch"] * s["scaled"]["concurrency"]
        assert s["sim"]["num_completed"] == s["real"]["num_completed"]
        assert s["sim_verdict"] in ("pass", "warn", "fail")
    # over: 128% of the cache on the original, 9 sequences of 9 blocks on 64 there
    assert over["scaled"]["batch"] * over["scaled"]["concurrency"] == 9
    assert over["sim"]["num_preemptions"] > 0 and over["sim_verdict"] == "fail"
    assert oom["status"] == "not_scaled" and "would not start" in oom["reasons"][0]
    assert d["verdicts"] == res.counts() and d["verdicts"]["fail"] == 1
    md = (tmp_path / "stress.md").read_text()
    assert "## Sim vs real" in md and "KV peak real / sim" in md and "latencies differ" in md
    assert "- over: 64x4 x (8,192+512)" in md
    assert (tmp_path / "scenarios" / "02-over" / "real" / "summary.json").exists()
    assert any(m.startswith("scaled fits:") for m in msgs)
    r = run_cli(["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert r.code == 0, r.err
    html = (tmp_path / "r.html").read_text()
    assert "Sim vs real" in html and "3 scenarios" in html


def test_ctrl_c_keeps_finished_scenarios(stub: Any, tmp_path: Path) -> None:
    def progress(msg: str) -> None:
        if msg.startswith("live 2/3") and msg.endswith("requests"):
            raise KeyboardInterrupt

    res = run_live(
        parse_matrix(MATRIX), LiveTarget(probe_limits(stub.url)), out=tmp_path, progress=progress
    )
    d = json.loads((tmp_path / "stress.json").read_text())
    assert res.interrupted and d["interrupted"]
    assert [s["name"] for s in d["live"]["scenarios"]] == ["fits"]
    assert d["live"]["not_run"] == ["over", "oom"]
    assert "Interrupted" in (tmp_path / "stress.md").read_text()


def test_a_server_going_down_fails_the_remaining_scenarios(tmp_path: Path) -> None:
    gen = serve_stub(StubConfig(metrics_text=_stub_metrics(), max_model_len=512, model="t"))
    srv = next(gen)

    def progress(msg: str) -> None:
        if msg.startswith("live 2/3") and msg.endswith("requests"):
            gen.close()  # the server stops before the second scenario

    res = run_live(
        parse_matrix(MATRIX), LiveTarget(probe_limits(srv.url)), out=tmp_path, progress=progress
    )
    d = json.loads((tmp_path / "stress.json").read_text())
    fits, over, oom = d["live"]["scenarios"]
    assert fits["status"] == "ran"
    for s in (over, oom):
        assert s["status"] == "failed" and s["verdict"] == "fail"
        assert "server unreachable from scenario 2 on: cannot reach" in s["reasons"][0]
    assert res.server_down is not None and "Server down" in (tmp_path / "stress.md").read_text()


def test_cli_live_run_and_bad_input(stub: Any, tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(MATRIX)
    out = tmp_path / "o"
    r = run_cli(["stress", "-m", str(m), "--endpoint", stub.url, "--out", str(out)])
    assert r.code == 0, r.err
    assert "## Sim vs real" in r.out and "live 3/3 oom" in r.err
    json_run = run_cli(
        ["stress", "-m", str(m), "--endpoint", stub.url, "--out", str(out), "--json"]
    )
    assert json.loads(json_run.out)["mode"] == "live"
    # a URL with no server, a server that is not OpenAI-compatible, no /metrics,
    # a context too small to scale to, a bad option: one line each
    dead = MetricsStub("x")
    dead.stop()
    page = MetricsStub("<html>hello</html>")
    try:
        cases = [
            (["--endpoint", f"http://{dead.url}"], "cannot reach"),
            (["--endpoint", f"http://{page.url}"], "not an OpenAI-compatible server"),
            (["--endpoint", "ftp://x"], "http(s) URL"),
            (["--endpoint", stub.url, "--served-model", "nope"], "does not serve"),
            (["--endpoint", stub.url, "--cache-mode", "hot"], "--cache-mode"),
        ]
        for extra, match in cases:
            r = run_cli(["stress", "-m", str(m), "--out", str(out), *extra], 30)
            assert r.code in (1, 2) and match in r.one_line_error(), (extra, r.err)
    finally:
        page.stop()
    for cfg, match in (
        (StubConfig(max_model_len=512), "/metrics answered HTTP 404"),
        (StubConfig(metrics_text=_stub_metrics(), max_model_len=12), "cannot be scaled"),
    ):
        for srv in serve_stub(cfg):
            r = run_cli(["stress", "-m", str(m), "--endpoint", srv.url, "--out", str(out)], 30)
            assert r.code == 2 and match in r.one_line_error()


def test_ctrl_c_on_the_command_line_keeps_finished_scenarios(tmp_path: Path) -> None:
    from sigint import interrupt, start

    m = tmp_path / "m.yaml"
    m.write_text(MATRIX)
    out = tmp_path / "o"
    cfg = StubConfig(metrics_text=_stub_metrics(), max_model_len=512, model="t", itl_s=0.2)
    gen = serve_stub(cfg)
    srv = next(gen)
    try:
        proc = start(["stress", "-m", str(m), "--endpoint", srv.url, "--out", str(out)])
        ended = interrupt(proc, lambda: srv.num_requests >= 2)  # the second scenario's
    finally:
        gen.close()
    assert ended.code == 130 and "Traceback" not in ended.err, ended.err
    assert "interrupted: finished scenarios kept" in ended.err
    d = json.loads((out / "stress.json").read_text())
    assert d["interrupted"] and [s["name"] for s in d["live"]["scenarios"]] == ["fits"]
    assert d["live"]["not_run"] == ["over", "oom"]


class _Moving(str):
    """A /metrics text whose counters move: read ``n`` shows the fixture's counters plus
    ``n`` preemptions, ``10 n`` prefix queries, ``4 n`` hits, and ``n`` waiting requests."""

    reads = 0

    def encode(self, *a: Any, **k: Any) -> bytes:  # type: ignore[override]
        _Moving.reads += 1
        n = _Moving.reads
        text = bump(str(self), "vllm:num_preemptions_total", n)
        text = bump(text, "vllm:prefix_cache_queries_total", 10 * n)
        text = bump(text, "vllm:prefix_cache_hits_total", 4 * n)
        return set_value(text, "vllm:num_requests_waiting", n).encode(*a, **k)


def test_server_counters_are_deltas_over_each_scenario(tmp_path: Path) -> None:
    cfg = StubConfig(
        metrics_text=_Moving(_stub_metrics()), max_model_len=512, model="t", itl_s=0.05
    )
    one = parse_matrix(MATRIX.split("  - {name: over")[0])
    for srv in serve_stub(cfg):
        res = run_live(one, LiveTarget(probe_limits(srv.url), metrics_interval_s=0.05))
    real = res.scenarios[0].real
    # before and after the scenario the counters were read: their increase, not totals
    assert 0 < real["num_preemptions"] < _Moving.reads
    assert real["prefix_cache_queries"] == 10 * real["num_preemptions"]
    assert real["prefix_cache_hits"] == 4 * real["num_preemptions"]
    assert real["prefix_cache_hit_rate"] == pytest.approx(0.4)
    assert real["num_waiting_max"] > real["num_waiting_mean"] > 0
    assert res.scenarios[0].verdict == "fail"  # preemptions over the budget of 0
    assert "preemption(s) > budget 0" in res.scenarios[0].reasons[0]


def test_calibration_replaces_the_simulated_clock(stub: Any, tmp_path: Path) -> None:
    # a fitted clock of 20 ms per step, whatever the batch: simulated TPOT is 20 ms
    cal = tmp_path / "cal.json"
    cal.write_text(
        json.dumps(
            {
                "format": "kvlab-calibration-1",
                "coefficients": {"overhead_s": 0.02, "per_token_s": 0.0, "per_kv_byte_s": 0.0},
                "kv_bytes_per_token": 12288,
            }
        )
    )
    m = tmp_path / "m.yaml"
    m.write_text(MATRIX)
    out = tmp_path / "o"
    r = run_cli(
        [
            "stress",
            "-m",
            str(m),
            "--endpoint",
            stub.url,
            "--out",
            str(out),
            "--calibration",
            str(cal),
        ]
    )
    assert r.code == 0, r.err
    d = json.loads((out / "stress.json").read_text())
    assert d["live"]["calibration"] == str(cal) and "cal.json" in d["live"]["latency_note"]
    assert d["live"]["scenarios"][0]["sim"]["tpot_p50_s"] == pytest.approx(0.02, rel=0.01)
