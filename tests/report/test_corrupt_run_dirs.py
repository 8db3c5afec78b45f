"""A corrupt or partial run directory is one error line naming the file, never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kvlab.cli.entry import main
from kvlab.errors import RunDirError
from kvlab.results import RunResult


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("runs") / "good"
    main(["simulate", "agentic", "--num-blocks", "6000", "--out", str(d), "-q"])
    return d


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        p = d / name
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)

    return damage


def _append(name: str, text: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        with (d / name).open("a") as f:
            f.write(text)

    return damage


def _make_dir(name: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        (d / name).unlink()
        (d / name).mkdir()

    return damage


def _edit_summary(**changes: object) -> Callable[[Path], None]:
    """Set summary keys (None: remove the key), keeping valid JSON."""

    def damage(d: Path) -> None:
        p = d / "summary.json"
        summary = json.loads(p.read_text())
        for k, v in changes.items():
            if v is None:
                summary.pop(k)
            else:
                summary[k] = v
        p.write_text(json.dumps(summary))

    return damage


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "summary not json": (_write("summary.json", "not json"), "summary.json:1: not JSON"),
    "summary a list": (_write("summary.json", "[1, 2]"), "summary.json: must be a JSON object"),
    "summary binary": (_write("summary.json", b"\x9d\xff\x00"), "summary.json: not UTF-8"),
    "records binary": (_write("requests.jsonl", b"\x9d\xff\x00"), "requests.jsonl: not UTF-8"),
    "record cut short": (_append("requests.jsonl", '{"x": 1'), "requests.jsonl:41: not JSON"),
    "record a list": (_append("requests.jsonl", "[1]\n"), "requests.jsonl:41: a record must"),
    "record of nothing": (_append("requests.jsonl", "{}\n"), "requests.jsonl:41: not a request"),
    "timeseries binary": (_write("timeseries.csv", b"\x9d\xff"), "timeseries.csv: not UTF-8"),
    "run.json a list": (_write("run.json", "[]"), "run.json: must be a JSON object"),
    "run.json config": (_write("run.json", '{"config": 3}'), "field 'config'"),
    "records a directory": (_make_dir("requests.jsonl"), "requests.jsonl: cannot be read"),
    "no summary": (lambda d: (d / "summary.json").unlink(), "not a run directory"),
    "summary a count as text": (
        _edit_summary(num_completed="40"),
        "summary.json: field 'num_completed': must be a whole number",
    ),
    "summary a number as text": (
        _edit_summary(prefix_cache_hit_rate="0.5"),
        "summary.json: field 'prefix_cache_hit_rate': a number written as text",
    ),
    "summary a percentile as text": (
        _edit_summary(ttft_s={"p50": "1e-3"}),
        "summary.json: field 'ttft_s.p50': a number written as text",
    ),
    "summary by_class a list": (_edit_summary(by_class=[1]), "field 'by_class': must be"),
    "summary stopped a number": (_edit_summary(stopped=3), "field 'stopped': must be text"),
    "summary NaN": (_edit_summary(wall_s=float("nan")), "field 'wall_s': not a finite number"),
    "run.json unknown status": (_write("run.json", '{"status": "half"}'), "field 'status'"),
}

#: Damage that RunResult.load accepts (an old or minimal summary) but compare does not.
COMPARE_ONLY: dict[str, tuple[Callable[[Path], None], str]] = {
    "summary without counts": (
        _edit_summary(num_requests=None),
        "summary.json: field 'num_requests': missing",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_corrupt_run_directory_is_one_line(
    case: str, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, expected = CASES[case]
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    damage(bad)
    with pytest.raises(RunDirError, match=expected.replace("(", r"\(")):
        RunResult.load(bad)
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(good), str(bad)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", sorted(COMPARE_ONLY))
def test_compare_needs_the_counts(
    case: str, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, expected = COMPARE_ONLY[case]
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    damage(bad)
    RunResult.load(bad)  # a minimal summary still loads
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(good), str(bad)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and expected in err and len(err.strip().splitlines()) == 1


def test_a_run_cut_short_while_saving_is_not_a_run(good: Path, tmp_path: Path) -> None:
    """summary.json is written last: without it the other files are an incomplete run."""
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "summary.json").unlink()
    with pytest.raises(RunDirError, match="incomplete run"):
        RunResult.load(bad)


def test_compare_takes_an_interrupted_run_only_with_partial(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut"
    run = RunResult.load(good)
    run.status = "interrupted"
    run.save(cut)
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(good), str(cut)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "an interrupted run" in err and "--partial" in err and len(err.splitlines()) == 1
    main(["compare", str(good), str(cut), "--partial", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert "cut (interrupted)" in json.dumps(out)
