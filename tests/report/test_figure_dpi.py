"""``--dpi``: one option, validated before any work, for every command that writes PNGs."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvlab.cli.app import app
from kvlab.errors import ConfigError
from kvlab.report.figure_dpi import MAX_DPI, MIN_DPI, check_dpi, dpi_override, png_dpi

#: Every command that writes PNG figures (the command line to reach its --help).
PLOTTING_COMMANDS = (
    ["simulate"],
    ["replay"],
    ["compare"],
    ["sweep"],
    ["bench"],
    ["report"],
    ["cache-curve"],
    ["agents", "compare"],
)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def test_png_dpi_is_each_default_outside_an_override_and_the_innermost_inside() -> None:
    assert png_dpi(120) == 120 and png_dpi(110) == 110
    with dpi_override(300):
        assert png_dpi(120) == 300.0
        with dpi_override(72.5):
            assert png_dpi(110) == 72.5
        with dpi_override(None):
            assert png_dpi(110) == 300.0
        assert png_dpi(120) == 300.0
    assert png_dpi(120) == 120


def test_an_override_is_undone_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), dpi_override(50):
        raise RuntimeError("boom")
    assert png_dpi(120) == 120


@pytest.mark.parametrize("bad", [0, -1, 9.99, 1200.5, 1e400, float("nan"), float("inf"), True])
def test_check_dpi_rejects_what_is_not_a_bounded_positive_number(bad: float) -> None:
    with pytest.raises(ConfigError, match="--dpi must be"):
        check_dpi(bad)
    with pytest.raises(ConfigError), dpi_override(bad):
        pass


@pytest.mark.parametrize("good", [None, MIN_DPI, 72, 300.0, MAX_DPI])
def test_check_dpi_accepts_the_bounds(good: float | None) -> None:
    check_dpi(good)


@pytest.mark.parametrize("argv", PLOTTING_COMMANDS, ids=" ".join)
def test_every_plotting_command_documents_dpi(argv: list[str]) -> None:
    res = CliRunner().invoke(app, [*argv, "--help"])
    assert res.exit_code == 0, res.output
    text = " ".join(re.sub("[\u2500-\u257f]", " ", res.output).split())  # no box, one line
    assert "--dpi" in text and "dots per inch" in text


def _mooncake(tmp_path: Path) -> Path:
    p = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 1024, "output_length": 3, "hash_ids": [0, 1]},
        {"timestamp": 5, "input_length": 1100, "output_length": 3, "hash_ids": [0, 1, 2]},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_cache_curve_plot_has_the_pixels_of_its_dpi(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    trace = str(_mooncake(tmp_path))
    default, low = tmp_path / "default.png", tmp_path / "low.png"
    res = CliRunner().invoke(app, ["cache-curve", trace, "-b", "512", "--plot", str(default)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app, ["cache-curve", trace, "-b", "512", "--plot", str(low), "--dpi", "50"]
    )
    assert res.exit_code == 0, res.output
    assert png_size(default) == (768, 480)  # 6.4 x 4.0 inches at the default 120 dpi
    assert png_size(low) == (320, 200)  # the same figure at 50 dpi
    assert png_dpi(120) == 120  # nothing left behind for the next command


def test_simulate_plot_dpi_through_the_fast_parser(tmp_path: Path) -> None:
    """``kvlab simulate`` parses its usual lines without Typer: --dpi goes through it too."""
    pytest.importorskip("matplotlib")
    from cli_run import run_cli

    wl = _mooncake(tmp_path)
    runs = {}
    for name, extra in (("default", []), ("dpi60", ["--dpi", "60"])):
        out = tmp_path / name
        r = run_cli(["simulate", str(wl), "--out", str(out), "--plot", "--quiet", *extra])
        assert r.code == 0, r.err
        runs[name] = png_size(out / "kv_timeline.png")
    w, h = runs["default"]
    assert runs["dpi60"] == (round(w / 2), round(h / 2))


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "{wl}", "--plot", "--dpi", "0"],
        ["simulate", "{wl}", "--plot", "--dpi", "5000"],
        ["cache-curve", "{wl}", "--plot", "{out}/c.png", "--dpi", "nan"],
        ["compare", "{out}", "--dpi", "-3"],
        ["sweep", "{wl}", "--modes", "baseline", "--dpi", "0"],
        ["report", "{out}", "--dpi", "inf"],
        ["bench", "-e", "seqlen", "--dpi", "1e9"],
        ["replay", "{wl}", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--dpi", "0"],
        ["agents", "compare", "{out}", "--dpi", "0"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_bad_dpi_is_one_line_and_exit_2_before_any_work(tmp_path: Path, argv: list[str]) -> None:
    from cli_run import run_cli

    wl = _mooncake(tmp_path)
    out = tmp_path / "out"
    args = [a.format(wl=wl, out=out) for a in argv]
    r = run_cli(args)
    assert r.code == 2, (r.code, r.err)
    assert "--dpi must be" in r.one_line_error()
    assert not out.exists()  # nothing was written
    assert not r.traceback


def test_sessions_figure_keeps_its_own_dpi_argument(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from kvlab.report.sessions import sessions_figure

    row = {"turn": 1, "prefix_cache_hit_rate": 0.5, "ttft_mean_s": 0.1}
    s = {
        "by_turn": [row],
        "by_age": [{"age_lo_s": 0.0, "prefix_cache_hit_rate": 0.5}],
        "survival": {"by_think_time": [{"think_lo_s": 0.0, "survived_share": 1.0}]},
    }
    (p,) = [x for x in sessions_figure({"a": s}, "t", tmp_path / "s", dpi=40) if x.suffix == ".png"]
    assert png_size(p) == (400, 280)  # 10 x 7 inches at the caller's 40 dpi
    with dpi_override(20):
        (p,) = [x for x in sessions_figure({"a": s}, "t", tmp_path / "s2") if x.suffix == ".png"]
    assert png_size(p) == (200, 140)
