"""``kvlab replay`` end to end against a stub server running in a background thread."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvlab.backends.stub import StubConfig
from kvlab.cli.app import app
from kvlab.errors import ConfigError
from kvlab.results import RunResult
from stub_thread import serve_stub

pytest.importorskip("aiohttp")


@pytest.fixture
def stub_url() -> Iterator[str]:
    yield from _serve(StubConfig(ttft_s=0.005))


@pytest.fixture
def failing_url() -> Iterator[str]:
    yield from _serve(
        StubConfig(
            error_status=400,
            error_body=(
                '{"error":{"message":"This model\'s maximum context length is 512 tokens.",'
                '"type":"BadRequestError","param":"input_tokens","code":400}}'
            ),
        )
    )


def _serve(cfg: StubConfig) -> Iterator[str]:
    for server in serve_stub(cfg):
        yield server.url


def write_workload(path: Path, n: int = 6, *, big: int | None = None) -> Path:
    with path.open("w") as f:
        for i in range(n):
            segs = [
                {"kind": "system", "tokens": 32, "content": "sys"},
                {"kind": "user", "tokens": 8, "content": f"u{i}"},
            ]
            f.write(
                json.dumps(
                    {"id": f"r{i}", "arrival_s": 0.01 * i, "segments": segs, "output_tokens": 4}
                )
                + "\n"
            )
    return path


def test_replay_writes_a_run_directory(tmp_path: Path, stub_url: str) -> None:
    wl = write_workload(tmp_path / "wl.jsonl")
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        ["replay", str(wl), "--endpoint", stub_url, "--model", "stub", "--out", str(out), "--json"],
        env={"KVLAB_API_KEY": "k-SECRET"},
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["num_completed"] == 6 and s["num_failed"] == 0
    res = RunResult.load(out)
    assert [x.request_id for x in res.records] == [f"r{i}" for i in range(6)]
    assert res.config["mode"] == "trace" and res.config["api_key_set"] is True
    for f in out.iterdir():
        assert "k-SECRET" not in f.read_text()


def test_replay_plot_draws_the_server_timeline(tmp_path: Path, stub_url: str) -> None:
    pytest.importorskip("matplotlib")
    wl = write_workload(tmp_path / "wl.jsonl")
    out = tmp_path / "out"
    args = ["replay", str(wl), "--endpoint", stub_url, "--model", "stub", "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--json", "--plot"])
    assert r.exit_code == 0, r.output
    assert (out / "kv_timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "kv_timeline.svg").exists()
    assert not (out / "residency.png").exists()  # a live run has no residency histograms


def test_replay_closed_loop_and_table_output(tmp_path: Path, stub_url: str) -> None:
    wl = write_workload(tmp_path / "wl.jsonl", 10)
    r = CliRunner().invoke(
        app,
        [
            "replay",
            str(wl),
            "--endpoint",
            stub_url + "/v1",
            "--model",
            "stub",
            "-c",
            "3",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "kvlab replay" in r.output and "10 / 0 / 0" in r.output
    assert RunResult.load(tmp_path / "o").config["mode"] == "closed"


def test_replay_against_a_dead_server_says_what_to_do(tmp_path: Path) -> None:
    from kvlab.cli.app import main

    wl = write_workload(tmp_path / "wl.jsonl", 2)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "replay",
                str(wl),
                "--endpoint",
                "http://127.0.0.1:18199",
                "--model",
                "m",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    assert e.value.code == 1


def test_replay_bad_option_is_exit_2(tmp_path: Path) -> None:
    from kvlab.cli.app import main

    wl = write_workload(tmp_path / "wl.jsonl", 1)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "replay",
                str(wl),
                "--endpoint",
                "http://127.0.0.1:18199",
                "--model",
                "m",
                "--cache-mode",
                "hot",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    assert e.value.code == 2


def test_failed_requests_give_exit_1_with_results_written(tmp_path: Path, failing_url: str) -> None:
    from kvlab.cli.app import main

    wl = write_workload(tmp_path / "wl.jsonl", 5)
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "replay",
                str(wl),
                "--endpoint",
                failing_url,
                "--model",
                "m",
                "--out",
                str(out),
                "--max-errors",
                "2",
                "--json",
            ]
        )
    assert e.value.code == 1
    res = RunResult.load(out)
    assert len(res.records) == 5
    assert res.summary["errors_by_kind"]["context_overflow"] == res.summary["num_failed"]
    assert res.summary["num_failed"] >= 2 and "max-errors" in res.summary["stopped"]


def test_ctrl_c_writes_what_was_finished(tmp_path: Path) -> None:
    """SIGINT mid-run: finished records are kept, the rest are unfinished, exit 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=src)
    stub = subprocess.Popen(
        [sys.executable, "-m", "kvlab.backends.stub", "--port", "0", "--ttft", "0.05"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert stub.stdout is not None
        url = stub.stdout.readline().split()[1]
        wl = tmp_path / "wl.jsonl"
        with wl.open("w") as f:
            for i in range(200):
                segs = [{"kind": "user", "tokens": 8, "content": f"u{i}"}]
                f.write(
                    json.dumps(
                        {"id": f"r{i}", "arrival_s": 0.02 * i, "segments": segs, "output_tokens": 2}
                    )
                    + "\n"
                )
        out = tmp_path / "o"
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kvlab",
                "replay",
                str(wl),
                "--endpoint",
                url,
                "--model",
                "stub",
                "--out",
                str(out),
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.time() + 20
        req_file = out / "requests.jsonl"
        while time.time() < deadline:
            if req_file.exists() and len(req_file.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
        assert p.returncode == 130, err
        res = RunResult.load(out)
        assert len(res.records) == 200
        s = res.summary
        assert s["stopped"] == "interrupted"
        assert 5 <= s["num_completed"] < 200
        assert s["num_completed"] + s["num_unfinished"] + s["num_failed"] == 200
    finally:
        stub.kill()
        stub.wait()


def test_replay_writes_summary_md_and_the_vllm_bench_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = _serve(StubConfig(ttft_s=0.005, itl_s=0.02))
    url = next(gen)
    try:
        wl = write_workload(tmp_path / "wl.jsonl")
        monkeypatch.chdir(tmp_path)  # --out omitted: runs/replay-TIMESTAMP under here
        r = CliRunner().invoke(
            app,
            [
                "replay",
                str(wl),
                "--base-url",
                url,
                "--model",
                "stub",
                "--percentiles",
                "50,90",
                "--goodput",
                "ttft:10000,tpot:10000",
            ],
        )
    finally:
        next(gen, None)
    assert r.exit_code == 0, r.output
    (out,) = (tmp_path / "runs").iterdir()
    assert out.name.startswith("replay-") and f"writing to runs/{out.name}" in r.stderr
    md = (out / "summary.md").read_text()
    assert md.startswith("# kvlab replay: wl.jsonl") and "| itl_s |" in md
    s = json.loads((out / "summary.json").read_text())
    assert s["goodput"]["good_requests"] == 6
    # 4 chunks per request, 20 ms apart: 3 gaps each
    assert s["itl_s"]["mean"] == pytest.approx(0.02, abs=0.015)
    bench = json.loads((out / "vllm_bench.json").read_text())
    assert bench["completed"] == 6 and bench["request_goodput"] > 0
    assert bench["mean_itl_ms"] == pytest.approx(1e3 * s["itl_s"]["mean"])
    assert {"p50_itl_ms", "p90_itl_ms", "std_itl_ms", "median_e2el_ms"} <= set(bench)
    assert "p99_ttft_ms" not in bench


def test_warmup_requests_are_recorded_apart_and_not_measured(tmp_path: Path, stub_url: str) -> None:
    wl = write_workload(tmp_path / "wl.jsonl", 6)
    out = tmp_path / "out"
    args = ["replay", str(wl), "--endpoint", stub_url, "--model", "stub", "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--warmup", "2", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["num_requests"] == s["num_completed"] == 4  # the warm-up is not in the summary
    res = RunResult.load(out)
    assert [x.request_id for x in res.records] == ["r2", "r3", "r4", "r5"]
    assert res.records[0].arrival_s == 0.0  # the measured run starts at its first request
    assert res.config["warmup_requests"] == 2
    warm = RunResult.load(out / "warmup")
    assert [x.request_id for x in warm.records] == ["r0", "r1"]
    assert warm.config["warmup"] is True  # marked
    bad = CliRunner().invoke(app, [*args, "--warmup", "6"])
    assert bad.exit_code != 0 and "--warmup 6 leaves none" in str(bad.exception)


def test_duration_time_boxes_the_run(tmp_path: Path) -> None:
    """Requests due every 0.2 s for 6 s, 0.5 s per answer, --duration 1: the run stops
    after about a second; what was cut off or never sent is unfinished, the summary
    says why, and the exit code is 0 (as asked); bad values are one line, exit 2."""
    path = tmp_path / "wl.jsonl"
    with path.open("w") as f:
        for i in range(30):
            segs = [{"kind": "user", "tokens": 8, "content": f"u{i}"}]
            row = {"id": f"r{i}", "arrival_s": 0.2 * i, "segments": segs, "output_tokens": 2}
            f.write(json.dumps(row) + "\n")
    out = tmp_path / "run"
    gen = _serve(StubConfig(ttft_s=0.5))
    url = next(gen)
    try:
        args = ["replay", str(path), "--endpoint", url, "--model", "stub", "--out", str(out)]
        res = CliRunner().invoke(app, [*args, "--duration", "1"])
    finally:
        for _ in gen:
            pass
    assert res.exit_code == 0, res.output
    run = RunResult.load(out)
    assert str(run.summary["stopped"]).startswith("duration reached (1 s)")
    statuses = [r.status for r in run.records]
    assert "ok" in statuses and "unfinished" in statuses
    assert set(statuses) <= {"ok", "unfinished"}
    assert run.wall_s is not None and run.wall_s < 4
    for bad in ("0", "nan", "-1"):  # refused before anything is sent (kvlab's main: exit 2)
        res = CliRunner().invoke(app, [*args, "--duration", bad])
        assert isinstance(res.exception, ConfigError) and "--duration" in str(res.exception)
