"""A corrupt or partial run directory is one error line naming the file, never a traceback."""

from __future__ import annotations

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
