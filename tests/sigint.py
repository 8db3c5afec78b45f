"""Ctrl-C as a terminal sends it: SIGINT to the whole process group of a kvlab command.

:func:`start` runs ``python -m kvlab ARGV`` in a new session (its own process group,
as a shell's foreground job); :func:`interrupt` waits until a condition holds (the
command reached the phase to test), sends SIGINT to the group (or to the kvlab
process alone) and returns how the command ended. :func:`open_paths` tells which
files a process has open (the workload while it is being loaded), and
:class:`SilentServer` accepts connections and never answers (a server being probed
forever). Used by the Ctrl-C tests of every long-running command.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: A line of :class:`kvlab.report.progress.LineProgress`.
PROGRESS_LINE = re.compile(r"^[\w .-]+: .*\d+/\d+ \(\d+%\)")

#: How long a command may take to stop after SIGINT.
STOP_LIMIT_S = 60.0


@dataclass(frozen=True)
class Ended:
    """How an interrupted command ended."""

    code: int
    out: str
    err: str
    #: seconds from the signal to the end of the process
    stop_s: float

    def lines(self) -> list[str]:
        """The lines printed on stdout and stderr together, blank ones included,
        progress lines aside (``NAME: DONE/TOTAL (P%)``, printed before the signal
        when the output is not a terminal)."""
        return [
            x for x in self.out.splitlines() + self.err.splitlines() if not PROGRESS_LINE.match(x)
        ]

    def check_one_line(self) -> str:
        """Assert the interrupted command's contract (exit 130, exactly one line on
        stdout and stderr together: no blank line left by a progress bar, no
        traceback); returns that line."""
        assert "Traceback" not in self.err + self.out, self.err[-2000:]
        assert self.code == 130, (self.code, self.err[-2000:])
        lines = self.lines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("interrupted"), lines
        return lines[0]


def start(argv: list[str], *, cwd: Path | None = None) -> subprocess.Popen[str]:
    """``python -m kvlab ARGV`` in a new session (its own process group), this
    checkout's sources first on the path."""
    src = str(REPO / "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("COLUMNS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "kvlab", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
        # as a shell's foreground job has it, even when this test runs in the background
        # (a background job inherits SIGINT ignored, and Python then keeps it ignored)
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(
    proc: subprocess.Popen[str],
    when: Callable[[], bool] = lambda: True,
    *,
    group: bool = True,
    wait_limit_s: float = 60.0,
) -> Ended:
    """Once ``when()`` is true, send SIGINT to ``proc``'s process group (``group``) or
    to ``proc`` alone, and wait for it to end. Fails when the process ends before
    ``when()`` holds or does not stop within :data:`STOP_LIMIT_S`."""
    deadline = time.monotonic() + wait_limit_s
    while not when():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"ended (exit {proc.returncode}) before the signal:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the condition did not hold within {wait_limit_s} s")
        time.sleep(0.01)
    t0 = time.monotonic()
    if group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=STOP_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"still running {STOP_LIMIT_S} s after SIGINT") from None
    return Ended(proc.returncode, out, err, time.monotonic() - t0)


def open_paths(pid: int) -> set[str]:
    """The paths of the files process ``pid`` has open (Linux /proc; empty elsewhere)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    out = set()
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return out
    for fd in fds:
        try:
            out.add(os.readlink(fd))
        except OSError:
            continue
    return out


def has_open(proc: subprocess.Popen[str], path: Path) -> Callable[[], bool]:
    """A condition: ``proc`` has ``path`` open."""
    target = str(path.resolve())
    return lambda: target in open_paths(proc.pid)


def exists(path: Path) -> Callable[[], bool]:
    """A condition: ``path`` exists."""
    return path.exists


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers, until
    closed; ``accepted`` counts the connections. A client probing it waits for its
    own timeout."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self._sock.close()
        for c in self._conns:
            c.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "STOP_LIMIT_S",
    "Ended",
    "SilentServer",
    "exists",
    "has_open",
    "interrupt",
    "open_paths",
    "start",
]
