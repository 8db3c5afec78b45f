"""The learning path's commands, run as a reader would, and the Chinese pages kept in step.

Every ```bash block of docs/lab/*.md is run, in order, one working directory per page, with
``kvlab`` as this interpreter's ``python -m kvlab``. A block after ``<!-- docs-test: server -->``
starts a server that the page's later blocks use (it is started in the background and
stopped with Ctrl-C at the end); a block after ``<!-- docs-test: live -->`` needs it. Both
run in the live tier only; the everyday tier runs every other block.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "docs" / "lab"
ZH = REPO / "docs" / "zh-CN"
#: English page -> its Simplified Chinese translation.
TRANSLATED = {
    REPO / "docs" / "lab" / "reading-guide.md": ZH / "reading-guide.md",
    REPO / "docs" / "glossary.md": ZH / "glossary.md",
    REPO / "docs" / "lab" / "lab1-prefix-reuse.md": ZH / "lab1-prefix-reuse.md",
}
#: The port the docs' server commands use.
DOCS_PORT = "8000"
_BLOCK = re.compile(r"(?:<!-- docs-test: (\w+) -->\n)?```bash\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    kind: str  # "plain", "server" or "live"
    commands: tuple[str, ...]


def blocks(page: Path) -> list[Block]:
    """The page's ```bash blocks, each its commands (continuation lines joined)."""
    out = []
    for m in _BLOCK.finditer(page.read_text(encoding="utf-8")):
        text = m.group(2).replace("\\\n", " ")
        cmds = tuple(
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        )
        out.append(Block(m.group(1) or "plain", cmds))
    return out


def headings(page: Path) -> list[str]:
    return [
        line.split(" ", 1)[0]
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    ]


def _argv(cmd: str, vllm_python: str | None) -> list[str]:
    args = shlex.split(cmd)
    assert args[0] == "kvlab", f"a docs command must be a kvlab command: {cmd}"
    if vllm_python is not None and "--python" in args:
        args[args.index("--python") + 1] = vllm_python
    return [sys.executable, "-m", "kvlab", *args[1:]]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "120"}


def run_page(page: Path, cwd: Path, *, live: bool, vllm_python: str | None = None) -> int:
    """Run the page's blocks in ``cwd``; returns the number of commands run. In the live
    tier the docs' port 8000 becomes a free port (CI may have 8000 taken)."""
    from kvlab.backends.vllm_server import free_port

    port = str(free_port()) if live else DOCS_PORT
    server: subprocess.Popen[str] | None = None
    ran = 0
    try:
        for block in blocks(page):
            if block.kind != "plain" and not live:
                continue
            for doc_cmd in block.commands:
                cmd = doc_cmd.replace(f"--port {DOCS_PORT}", f"--port {port}").replace(
                    f"127.0.0.1:{DOCS_PORT}", f"127.0.0.1:{port}"
                )
                if block.kind == "server":
                    server = _start_server(_argv(cmd, vllm_python), cwd)
                else:
                    command, _, target = cmd.partition(" > ")  # `kvlab ... > FILE`
                    r = subprocess.run(
                        _argv(command, vllm_python),
                        cwd=cwd,
                        env=_env(),
                        capture_output=True,
                        text=True,
                        timeout=600,
                        check=False,
                    )
                    assert r.returncode == 0, f"{page.name}: {cmd}\n{r.stdout}\n{r.stderr}"
                    if target:
                        (cwd / target.strip()).write_text(r.stdout, encoding="utf-8")
                ran += 1
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    return ran


def _start_server(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, cwd=cwd, env=_env(), stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("ready"):
            return proc
        if not line:
            break
    proc.kill()
    raise AssertionError(f"the lab's server did not become ready: {' '.join(argv)}")


def test_every_lab_page_has_commands() -> None:
    pages = sorted(LAB.glob("*.md"))
    assert LAB / "lab1-prefix-reuse.md" in pages
    lab1 = blocks(LAB / "lab1-prefix-reuse.md")
    assert [b.kind for b in lab1].count("server") == 1
    assert sum(len(b.commands) for b in lab1) >= 8


@pytest.mark.parametrize("page", sorted(LAB.glob("*.md")), ids=lambda p: p.name)
def test_page_commands_run(page: Path, tmp_path: Path) -> None:
    ran = run_page(page, tmp_path, live=False)
    if page.name == "lab1-prefix-reuse.md":
        assert ran >= 6
        assert (tmp_path / "runs" / "sim-sessions.png").is_file()


@pytest.mark.live
def test_lab1_runs_end_to_end_on_the_vllm_cpu_server(tmp_path: Path, vllm_python: str) -> None:
    page = LAB / "lab1-prefix-reuse.md"
    ran = run_page(page, tmp_path, live=True, vllm_python=vllm_python)
    assert ran == sum(len(b.commands) for b in blocks(page))
    assert (tmp_path / "runs" / "real" / "summary.json").is_file()
    assert (tmp_path / "runs" / "sim-vs-real-sessions.png").is_file()


@pytest.mark.parametrize("en", sorted(TRANSLATED), ids=lambda p: p.name)
def test_chinese_pages_have_the_same_sections_and_commands(en: Path) -> None:
    zh = TRANSLATED[en]
    assert zh.is_file(), f"{zh.relative_to(REPO)} is missing"
    assert headings(zh) == headings(en), "the same sections, at the same levels, in order"
    assert blocks(zh) == blocks(en), "the same commands in the same blocks"
    en_terms = re.findall(r"^\*\*(.+?)\*\*", en.read_text(encoding="utf-8"), re.M)
    if en_terms:  # the glossary: every English term is defined in the translation
        zh_text = zh.read_text(encoding="utf-8")
        missing = [t for t in en_terms if t.split(" (")[0] not in zh_text]
        assert not missing, missing
