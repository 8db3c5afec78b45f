from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kvlab.cli.app import app


def test_help_lists_commands() -> None:
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    assert "kvlab" in res.output


def test_help_texts_wrap_at_any_width() -> None:
    """Prose paragraphs of every command's help are one line each (Rich keeps hard
    breaks, which would split sentences in the command list); examples keep theirs."""
    from kvlab.cli.app import reflow

    def commands(group):  # type: ignore[no-untyped-def]
        for cmd in group.registered_commands:
            yield cmd.name, cmd.help
        for sub in group.registered_groups:
            own = sub.help if isinstance(sub.help, str) else sub.typer_instance.info.help
            yield sub.name, own
            yield from commands(sub.typer_instance)

    seen = 0
    for name, text in commands(app):
        assert text, f"{name}: no help"
        for para in text.split("\n\n"):
            assert para.startswith("  ") or "\n" not in para, (name, para)
        seen += 1
    assert seen >= 15
    assert reflow("  a\n  b\n\n    x y\n    z\n\n  c") == "a b\n\n  x y\n  z\n\nc"
    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "SGLang, llama.cpp, Ollama)" in listing


def test_version() -> None:
    from kvlab import __version__

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == __version__


def test_core_imports_no_heavy_libraries() -> None:
    code = (
        "import sys, kvlab, kvlab.cli.app, kvlab.results, kvlab.workload;"
        "heavy = {'torch','transformers','aiohttp','httpx','matplotlib','langgraph','gymnasium',"
        "'pydantic','prometheus_client','uvloop','ray'};"
        "bad = sorted(heavy & set(m.split('.')[0] for m in sys.modules));"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"core imported heavy modules: {res.stdout} {res.stderr}"


def _kvlab(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    return subprocess.run(
        [sys.executable, "-m", "kvlab", *args], capture_output=True, text=True, env=env
    )


def test_usage_errors_are_short_and_exit_2() -> None:
    res = _kvlab("plan", "--no-such-option")
    assert res.returncode == 2
    assert "No such option" in res.stderr
    assert "Traceback" not in res.stderr


def test_caller_errors_are_one_line_with_exit_2() -> None:
    res = _kvlab("plan", "--model", "llama-3.1-8bb")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "llama-3.1-8b" in lines[0]  # the close match is suggested
