"""``kvlab report``: one self-contained HTML file for any run directories, opened in a
real headless Chromium (no console error, no network request)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_run import run_cli
from kvlab.errors import RunDirError

MATRIX = """\
version: 1
search: {seq_lens: [1024, 2048], gen_len: 32, max_value: 16, concurrency_rounds: 2}
scenarios:
  - {name: one, model: qwen2.5-0.5b, batch: 4, seq_len: 1024, gen_len: 32}
  - {name: two, model: qwen2.5-7b, batch: 16, seq_len: 4096, gen_len: 64}
"""


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import kvlab
    from kvlab.stress.matrix import parse_matrix
    from kvlab.stress.run import run_stress

    root = tmp_path_factory.mktemp("report")
    wl = kvlab.generate("chat", seed=1)
    cfg = kvlab.SimConfig(model="qwen2.5-0.5b", gpu="rtx-4090", num_blocks=400)
    kvlab.simulate(wl, cfg).save(root / "prefix")
    kvlab.simulate(wl, cfg.replace(enable_prefix_caching=False)).save(root / "baseline")
    run_stress(
        parse_matrix(MATRIX, "m.yaml"), out=root / "stress", parts=("scenarios", "ranges", "curves")
    )
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(
        json.dumps(
            {"axes": ["mode"], "rows": [{"mode": "prefix", "ttft_s.p99": 0.5, "error": None}]}
        )
    )
    bench = root / "bench"
    (bench / "runs").mkdir(parents=True)
    (bench / "experiment.json").write_text(json.dumps({"experiment": "concurrency", "seed": 1}))
    shutil.copytree(root / "prefix", bench / "runs" / "c1")
    return {
        "prefix": root / "prefix",
        "baseline": root / "baseline",
        "stress": root / "stress",
        "sweep": sweep,
        "bench": bench,
        "root": root,
    }


@pytest.fixture(scope="module")
def report(dirs: dict[str, Path]) -> Path:
    out = dirs["root"] / "r" / "report.html"
    r = run_cli(
        [
            "report",
            str(dirs["baseline"]),
            str(dirs["prefix"]),
            str(dirs["stress"]),
            str(dirs["sweep"]),
            str(dirs["bench"]),
            "--out",
            str(out),
        ]
    )
    assert r.code == 0, r.err
    assert "self-contained" in r.out
    return out


def test_report_files_and_content(report: Path) -> None:
    out = report
    text = out.read_text()
    for needle in (
        "Comparison (deltas against the first run)",
        "Safe max batch by sequence",
        "Concurrency limits",
        "Degradation",
        "<svg",
        "Run: prefix",
        "Sweep: sweep",
    ):
        assert needle in text, needle
    for banned in ("<script", "<link", "<img", "@import", "url(http", "url(//"):
        assert banned not in text, banned
    assert 'src="http' not in text and 'href="http' not in text
    md = out.with_suffix(".md").read_text()
    assert "| prefix hit rate |" in md and "report_figures/" in md
    doc = json.loads(out.with_suffix(".json").read_text())
    assert [s["kind"] for s in doc["sources"]] == ["run", "run", "stress", "sweep", "bench"]
    assert "Bench: bench" in text and "Run: bench/c1" in text
    assert doc["compare"][0]["figure"] == "requests"
    figs = list((out.parent / "report_figures").glob("*.png"))
    assert len(figs) >= 6 and all(f.with_suffix(".svg").exists() for f in figs)


def test_bad_directories_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for d in (tmp_path / "missing", tmp_path / "empty"):
        r = run_cli(["report", str(d), "--out", str(tmp_path / "r.html")])
        assert r.code == 2
        assert str(d) in r.one_line_error()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "stress.json").write_text("{\n  nope")
    r = run_cli(["report", str(bad), "--out", str(tmp_path / "r.html")])
    assert r.code == 2 and "stress.json:2" in r.one_line_error()
    from kvlab.report.html_report import build_report

    with pytest.raises(RunDirError):
        build_report([], tmp_path / "r.html")


# ------------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--enable-logging=stderr",
    "--v=0",
)


def browse(page: Path, work: Path) -> tuple[str, list[str], list[str]]:
    """Open ``page`` in headless Chromium: (DOM, console messages, page-initiated URLs).

    Console messages are Chromium's ``CONSOLE`` log lines; requests come from its net
    log: every URL whose request has an initiator origin (the page's; Chromium's own
    background fetches have none)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe is not None
    netlog = work / "net.json"
    proc = subprocess.run(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--log-net-log={netlog}",
            f"--user-data-dir={work / 'profile'}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    urls = set()
    for ev in json.loads(netlog.read_text()).get("events", []):
        p = ev.get("params") or {}
        if p.get("url") and p.get("initiator") not in (None, "not an origin"):
            urls.add(p["url"])
    return proc.stdout, console, sorted(urls)


@pytest.fixture
def chromium(require_live: Callable[[str], None]) -> None:
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        require_live("chromium is not installed (apt-get install chromium)")


def test_detector_sees_console_errors_and_requests(chromium: None, tmp_path: Path) -> None:
    page = tmp_path / "canary.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>canary</p><img src='http://127.0.0.1:9/a.png'>"
        "<script>console.error('canary-error')</script></body></html>"
    )
    dom, console, urls = browse(page, tmp_path)
    assert "canary" in dom
    assert any("canary-error" in c for c in console)
    assert "http://127.0.0.1:9/a.png" in urls


def test_report_opens_offline_in_chromium(chromium: None, report: Path, tmp_path: Path) -> None:
    dom, console, urls = browse(report, tmp_path)
    assert console == []
    assert urls == []
    assert "<h1>kvlab report</h1>" in dom
    assert dom.count("<svg") >= 6
